"""The benchmarks' inputs: a model trained here by train.py on generated images (kept and reused), photo-like
JPEGs, and the CPU the figures were measured on. benchmark.py, serving_benchmark.py and photo_benchmark.py
import it."""

from __future__ import annotations

import io
import random
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".devstack" / "benchmark"
# The model trained here: ResNet-18 at its usual input size and the breeds of dogImages.
CLASSES, IMAGE_SIZE, EPOCHS, HELD_OUT_PER_BREED = 133, 224, 12, 6


def cpu_description() -> dict[str, str]:
    """The CPU's model name and the flags that choose the int8 network."""
    import networks

    cpu = networks.read_cpu_flags()
    return {"model_name": cpu.model, "flags": cpu.summary}


def train_model(
    cache: Path = CACHE,
    classes: int = CLASSES,
    image_size: int = IMAGE_SIZE,
    epochs: int = EPOCHS,
    held_out_per_breed: int = HELD_OUT_PER_BREED,
) -> tuple[Path, list[bytes]]:
    """train.py on generated dogImages-layout data: the model directory it leaves (model.pth,
    model_int8.pt, ...) and the JPEGs of the test split, which neither training nor int8
    calibration saw. Kept under `cache` and reused by later runs with the same settings."""
    import contextlib

    import dataset_tool
    import train

    suffix = f"-{held_out_per_breed}-held-out" if held_out_per_breed != 2 else ""
    workdir = cache / f"{classes}-breeds-{image_size}px-{epochs}-epochs{suffix}"
    data, out = workdir / "dogImages", workdir / "training"
    import networks

    made = [out / "model" / network.file for network in networks.INT8_NETWORKS]
    if (out / "output" / "metrics.json").exists() and all(path.exists() for path in made):  # written last
        print(f"reusing the model trained in {workdir}", flush=True)
        return out / "model", held_out_images(data / "test")
    shutil.rmtree(workdir, ignore_errors=True)
    per_split = (4, 2, held_out_per_breed)  # the test split is generated last: training sees the same images
    dataset_tool.synthesize(data, classes=classes, per_split=per_split, size=(320, 240), corrupt=0)
    flags = [f"--data-dir={data}", f"--model-dir={out}/model", f"--output-dir={out}/output"]
    flags += [f"--checkpoint-dir={out}/checkpoints", f"--tensorboard-dir={out}/tb", "--pretrained=none"]
    flags += ["--fine-tune=all", "--batch-size=32", "--lr=0.003", "--workers=0", f"--image-size={image_size}"]
    flags += [f"--epochs={epochs}"]
    with contextlib.redirect_stdout(sys.stderr):  # the per-epoch metric lines
        result = train.main(train.get_args_parser().parse_args(flags))
    print(
        f"trained: {classes} breeds at {image_size} px, {epochs} epochs, "
        f"test accuracy {result.get('test_accuracy', 0):.2f} (kept in {workdir})",
        flush=True,
    )
    return out / "model", held_out_images(data / "test")


def held_out_images(directory: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(directory.rglob("*.jpg"))]


def make_jpegs(count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs (textured, quality 90) of the given size."""
    from dataset_tool import synth_image
    from PIL import Image

    rng = random.Random(seed)
    images = []
    for i in range(count):
        picture = synth_image(i % 7, 7, rng, size)
        texture = Image.effect_noise(size, 60).convert("RGB")
        buffer = io.BytesIO()
        Image.blend(picture, texture, 0.2).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images
