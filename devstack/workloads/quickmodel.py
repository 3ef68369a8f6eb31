"""A small model trained in seconds by model/training/train.py on generated images in the dogImages layout,
packed as the model.tar.gz SageMaker would make of it. The demo, `make stack` and the tests use it when no
real model is given.

Each model is trained once per content of the code that makes it (model/, the answer contract, this
torch), this CPU (its kernels decide the weights' last digits, and the test accuracy recorded with
them) and recipe, and kept under .cache/models/ beside the virtual environments: a later run with the
same code reuses it, and a change to the code trains anew. `make clean` removes the cache."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.aws.container import pack_model

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "models"
# What a trained model is made of besides its recipe: the training and serving code, the dataset generator
# and the answer contract the artifact's code/ carries.
MADE_BY = ("model/training", "model/serving", "model/tools/dataset_tool.py", "functions/answers.py")
CLASSES = 5
FLAGS = "--pretrained none --fine-tune all --batch-size 16 --lr 0.003 --workers 0"


@dataclass(frozen=True)
class QuickModel:
    data_dir: Path  # dogImages/{train,valid,test}/NNN.Breed_name/*.jpg
    model_dir: Path
    archive: Path
    test_accuracy: float


def code_digest() -> str:
    """A digest of the code a trained model depends on, and of the torch and the CPU that train it."""
    import networks
    import torch

    cpu = networks.read_cpu_flags()
    digest = hashlib.sha256(f"{torch.__version__} {cpu.model} {cpu.summary}".encode())
    for part in MADE_BY:
        root = REPO / part
        for path in sorted([root] if root.is_file() else root.rglob("*.py")):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cached(name: str, recipe: Sequence[str], build: Callable[[Path], None]) -> Path:
    """The folder `build` fills for this recipe and this code: built once, then reused. Processes that
    want the same folder at once (test workers) take turns on a lock, so it is built once; a folder is
    built aside and renamed into place when complete, so an interrupted build leaves nothing to reuse."""
    key = hashlib.sha256(json.dumps([code_digest(), name, *recipe]).encode()).hexdigest()[:16]
    final = CACHE / f"{name}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{name}-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process ends
        if final.is_dir():
            return final
        building = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE))
        try:
            build(building)
            os.rename(building, final)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return final


def train_small_model(image_size: int = 64, epochs: int = 6) -> QuickModel:
    """At 64 pixels the model learns the generated breeds in seconds; at 224 (ResNet-18's usual
    input) one epoch gives a model with production-sized compute per image, for benchmarks."""
    recipe = [*FLAGS.split(), f"--image-size={image_size}", f"--epochs={epochs}"]

    def build(workdir: Path) -> None:
        import dataset_tool  # the import roots are on the path (the Makefile's IMPORT_PATH)
        import train

        data = dataset_tool.synthesize(workdir / "dogImages", classes=CLASSES, per_split=(16, 4, 6), size=(320, 240))
        out = workdir / "training"
        args = [f"--data-dir={data}", f"--model-dir={out}/model", f"--output-dir={out}/output"]
        args += [f"--checkpoint-dir={out}/checkpoints", f"--tensorboard-dir={out}/tb", *recipe]
        with contextlib.redirect_stdout(io.StringIO()):  # the per-epoch metric lines
            result = train.main(train.get_args_parser().parse_args(args))
        pack_model(out / "model", workdir / "model.tar.gz")
        (workdir / "result.json").write_text(json.dumps({"test_accuracy": float(result["test_accuracy"])}))

    made = cached("quickmodel", recipe, build)
    accuracy = json.loads((made / "result.json").read_text())["test_accuracy"]
    return QuickModel(made / "dogImages", made / "training" / "model", made / "model.tar.gz", float(accuracy))
