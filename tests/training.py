"""A small synthetic dogImages tree and a model trained on the same tree by model/training/train.py: once
per content of the code that makes it (devstack.workloads.quickmodel.cached, under .cache/models/), and
copied for each session; the fixtures are shared through tests/conftest.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Collection
from pathlib import Path

import networks
import pytest

CLASSES = 5
IMAGE_SIZE = 64  # small crops keep CPU training to seconds; serving uses the same preprocessing code


def served_here(asked: str = "int8", files: Collection[str] | None = None) -> networks.Choice:
    """What a CPU worker must serve for MODEL_PRECISION=`asked` on this machine's CPU, from a model
    directory holding `files` (default: both int8 networks). The rule itself is tested for every CPU
    class in tests/unit/test_networks.py; the tests that serve a real model check this machine's case."""
    files = {network.file for network in networks.INT8_NETWORKS} if files is None else files
    return networks.choose(asked, device="cpu", cpu=networks.read_cpu_flags(), files=files)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data-dir", str(data),
        "--model-dir", str(out / "model"),
        "--output-dir", str(out / "output"),
        "--checkpoint-dir", str(out / "checkpoints"),
        "--tensorboard-dir", str(out / "tensorboard"),
        "--pretrained", "none",
        "--fine-tune", "all",
        "--image-size", str(IMAGE_SIZE),
        "--batch-size", "16",
        "--lr", "0.003",
        "--workers", "0",
        *extra,
    ]  # fmt: skip


def synthesize(out: Path) -> Path:
    """Photo-sized JPEGs (as dogImages), 5 classes, one truncated file in train/ (deterministic)."""
    import dataset_tool

    return dataset_tool.synthesize(out, classes=CLASSES, per_split=(16, 4, 4), size=(160, 120))


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("data") / "dogImages")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """The model directory train.py leaves after 5 epochs on the dataset's tree, and its result."""
    from devstack.workloads.quickmodel import cached

    extra = ("--epochs", "5")

    def build(workdir: Path) -> None:
        import train  # torch: imported only by the tests that train

        data = synthesize(workdir / "dogImages")
        result = train.main(train.get_args_parser().parse_args(train_args(data, workdir, *extra)))
        (workdir / "result.json").write_text(json.dumps(result))

    made = cached("tests-trained", [*train_args(Path("data"), Path("out"), *extra)], build)
    model_dir = tmp_path_factory.mktemp("trained") / "model"
    shutil.copytree(made / "model", model_dir)  # a test may not change what later runs reuse
    return model_dir, json.loads((made / "result.json").read_text())
