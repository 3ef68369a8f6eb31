"""A small model trained in seconds by model/training/train.py on generated images in the dogImages layout,
packed as the model.tar.gz SageMaker would make of it. The demo and `make stack` use it when no
real model is given."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from devstack.aws.container import pack_model

CLASSES = 5
FLAGS = "--pretrained none --fine-tune all --batch-size 16 --lr 0.003 --workers 0"


@dataclass(frozen=True)
class QuickModel:
    data_dir: Path  # dogImages/{train,valid,test}/NNN.Breed_name/*.jpg
    model_dir: Path
    archive: Path
    test_accuracy: float


def train_small_model(workdir: Path, image_size: int = 64, epochs: int = 6) -> QuickModel:
    """At 64 pixels the model learns the generated breeds in seconds; at 224 (ResNet-18's usual
    input) one epoch gives a model with production-sized compute per image, for benchmarks."""
    import dataset_tool  # the import roots are on the path (the Makefile's IMPORT_PATH)
    import train

    data = dataset_tool.synthesize(workdir / "dogImages", classes=CLASSES, per_split=(16, 4, 6), size=(320, 240))
    out = workdir / "training"
    args = [f"--data-dir={data}", f"--model-dir={out}/model", f"--output-dir={out}/output"]
    args += [f"--checkpoint-dir={out}/checkpoints", f"--tensorboard-dir={out}/tb", *FLAGS.split()]
    args += [f"--image-size={image_size}", f"--epochs={epochs}"]
    with contextlib.redirect_stdout(io.StringIO()):  # the per-epoch metric lines
        result = train.main(train.get_args_parser().parse_args(args))
    archive = pack_model(out / "model", workdir / "model.tar.gz")
    return QuickModel(data, out / "model", archive, float(result["test_accuracy"]))
