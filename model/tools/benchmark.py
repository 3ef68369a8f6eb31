"""CPU serving benchmark: our inference handler against a course-style baseline, in one run.

    make benchmark
    make benchmark BENCHMARK_ARGS="--images 300 --cold-starts 5 --sizes 500x375,1600x1200"

Both handlers serve the same 133-class ResNet-18 weights on the same JPEGs, one image per call
(as a serverless endpoint does). The baseline is written the way the course scripts serve: eager
FP32 model under no_grad, the full image decoded, transforms.Resize(256) + CenterCrop(224).
Measured: warm throughput (images/s) and cold start (process start to first prediction).
Serverless endpoints are CPU-only, so these are the numbers users pay for.

Then our handler as batch transform jobs call it: multi-record JSON Lines requests of 1, 8 and 32
images (--batch-sizes), each request decoded, preprocessed, classified in one forward pass and
answered a line per image; on CUDA when the machine has a GPU.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# What a serving container has on its import path: the artifact's code/, that is model/serving/.
SERVING_DIR = Path(__file__).resolve().parents[1] / "serving"


# -- the baseline handler, as the course scripts write it ---------------------------------------


def baseline_model_fn(model_dir: str) -> Any:
    import torch
    from torchvision import models

    classes = json.loads((Path(model_dir) / "class_index.json").read_text())
    model = models.resnet18(weights=None)
    model.fc = torch.nn.Linear(512, len(classes))
    model.load_state_dict(torch.load(Path(model_dir) / "model.pth", map_location="cpu", weights_only=True))
    model.eval()
    return model, classes


def baseline_input_fn(body: bytes, content_type: str) -> Any:
    from PIL import Image
    from torchvision import transforms

    image = Image.open(io.BytesIO(body)).convert("RGB")
    transform = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    return transform(image).unsqueeze(0)


def baseline_predict_fn(data: Any, loaded: Any) -> dict[str, Any]:
    import torch

    model, classes = loaded
    with torch.no_grad():
        probabilities = torch.softmax(model(data), dim=1)[0]
    index = int(probabilities.argmax())
    return {"predicted_label": classes[str(index)]["label"], "class_name": classes[str(index)]["name"]}


def baseline_output_fn(prediction: dict[str, Any], accept: str) -> str:
    return json.dumps(prediction)


# -- one handler behind one interface ------------------------------------------------------------

Handler = Callable[[bytes], str]


def load(kind: str, model_dir: Path) -> Handler:
    if kind == "ours":
        import inference

        model = inference.model_fn(str(model_dir))
        return lambda body: inference.output_fn(
            inference.predict_fn(inference.input_fn(body, "image/jpeg"), model), "application/json"
        )[0]
    loaded = baseline_model_fn(str(model_dir))
    return lambda body: baseline_output_fn(
        baseline_predict_fn(baseline_input_fn(body, "image/jpeg"), loaded), "application/json"
    )


def throughput(handler: Handler, requests: list[bytes], rounds: int, images: int | None = None) -> float:
    """Best images/s over `rounds` passes (after a warm-up); `images` when requests carry several."""
    for body in requests[:5]:
        handler(body)
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for body in requests:
            handler(body)
        best = max(best, (images or len(requests)) / (time.perf_counter() - started))
    return best


def batched_throughput(model_dir: Path, images: list[bytes], batch_sizes: list[int], rounds: int) -> dict[int, float]:
    """Best images/s of our handler on multi-record requests of each size: decode, preprocess,
    one forward pass per request, one answer line per image."""
    import answers
    import inference

    model = inference.model_fn(str(model_dir))
    rates: dict[int, float] = {}
    for size in batch_sizes:
        model.batch_size = size
        requests = [
            b"\n".join(
                answers.dumps_record(f"image-{start + n}", body) for n, body in enumerate(images[start : start + size])
            )
            for start in range(0, len(images), size)
        ]

        def handle(body: bytes) -> Any:
            answer = inference.predict_fn(inference.input_fn(body, answers.JSON_LINES), model)
            return inference.output_fn(answer, answers.JSON_LINES)

        rates[size] = throughput(handle, requests, rounds, images=len(images))
    return rates


def cold_start(kind: str, model_dir: Path, image: Path) -> float:
    """Seconds from starting a fresh Python process to its first prediction."""
    env = {**os.environ, "PYTHONPATH": str(SERVING_DIR)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--first-prediction", kind, str(model_dir), str(image)],
        check=True,
        capture_output=True,
        env=env,
    )
    return time.perf_counter() - started


# -- inputs ------------------------------------------------------------------------------------


def make_model_dir(directory: Path) -> Path:
    """A 133-class ResNet-18 saved as train.py saves it (random weights: speed does not depend on them)."""
    import torch
    from classifier import NUM_CLASSES, Breed, build_resnet18, save_class_index

    torch.manual_seed(0)
    torch.save(build_resnet18(NUM_CLASSES).state_dict(), directory / "model.pth")
    save_class_index([Breed(f"{i + 1:03d}", f"Breed_{i + 1:03d}") for i in range(NUM_CLASSES)], directory)
    (directory / "model_config.json").write_text(json.dumps({"arch": "resnet18", "image_size": 224}))
    return directory


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


def main(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model_dir(Path(tmp))
        handlers = {kind: load(kind, model_dir) for kind in ("baseline", "ours")}
        for text in args.sizes.split(","):
            width, height = (int(v) for v in text.split("x"))
            images = make_jpegs(args.images, (width, height))
            rates = {kind: throughput(handler, images, args.rounds) for kind, handler in handlers.items()}
            results["sizes"][text] = {
                "mean_jpeg_kb": round(statistics.mean(len(i) for i in images) / 1024, 1),
                "baseline_images_per_s": round(rates["baseline"], 1),
                "ours_images_per_s": round(rates["ours"], 1),
                "ratio": round(rates["ours"] / rates["baseline"], 2),
            }
        images = make_jpegs(args.images, (500, 375))
        sizes = [int(v) for v in args.batch_sizes.split(",")]
        batched = batched_throughput(model_dir, images, sizes, args.rounds)
        results["batched_500x375"] = {
            str(size): {"images_per_s": round(rate, 1), "vs_batch_1": round(rate / batched[sizes[0]], 2)}
            for size, rate in batched.items()
        }
        first = Path(tmp) / "first.jpg"
        first.write_bytes(make_jpegs(1, (500, 375))[0])
        cold: dict[str, list[float]] = {"baseline": [], "ours": []}
        for _ in range(args.cold_starts):  # alternate, so drift hits both alike
            for kind in cold:
                cold[kind].append(cold_start(kind, model_dir, first))
        medians = {kind: statistics.median(times) for kind, times in cold.items()}
        results["cold_start_s"] = {
            "baseline": round(medians["baseline"], 2),
            "ours": round(medians["ours"], 2),
            "ratio": round(medians["baseline"] / medians["ours"], 2),
        }
    report(results)
    return results


def report(results: dict[str, Any]) -> None:
    print(f"torch {results['torch']}, {results['threads']} threads, one image per call")
    print(f"{'image':>10} {'JPEG KB':>8} {'baseline img/s':>15} {'ours img/s':>11} {'ours/baseline':>14}")
    for size, row in results["sizes"].items():
        print(
            f"{size:>10} {row['mean_jpeg_kb']:>8} {row['baseline_images_per_s']:>15} "
            f"{row['ours_images_per_s']:>11} {row['ratio']:>13}x"
        )
    print(f"our handler, multi-record requests (batch transform) of 500x375 JPEGs on {results['device']}:")
    for size, row in results["batched_500x375"].items():
        print(f"{size:>6} images/request {row['images_per_s']:>8} img/s {row['vs_batch_1']:>6}x batch 1")
    cold = results["cold_start_s"]
    print(
        f"cold start (process start to first prediction, median): baseline {cold['baseline']} s, "
        f"ours {cold['ours']} s, baseline/ours {cold['ratio']}x"
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100, help="images per size")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per handler (best counts)")
    parser.add_argument("--sizes", default="500x375,1600x1200", help="image sizes, WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,8,32", help="images per multi-record request, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--first-prediction", nargs=3, metavar=("KIND", "MODEL_DIR", "IMAGE"), help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    if arguments.first_prediction:
        kind, model_dir, image = arguments.first_prediction
        load(kind, Path(model_dir))(Path(image).read_bytes())
    else:
        outcome = main(arguments)
        if arguments.json:
            arguments.json.write_text(json.dumps(outcome, indent=1))
