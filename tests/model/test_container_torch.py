"""The model artifact, int8 fast path included, served under the serving container's versions.

SageMaker serves the model in its PyTorch 2.6 inference image (torch 2.6.0, torchvision 0.21.0,
TorchServe 0.12, sagemaker-pytorch-inference 2.0.25), while train.py runs here on a newer torch.
`make install` builds .venv-serving with the image's versions (requirements/serving.txt); these
tests serve the artifact train.py wrote in a model container from there (devstack.aws.container) and
compare every answer with the handler's own functions run here, on this environment's torch."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import classifier
import inference
import networks
import pytest
from sagemaker_inference.errors import GenericInferenceToolkitError

from tests.conftest import REPO
from tests.model.conftest import Serve
from tests.training import CLASSES, IMAGE_SIZE, served_here

pytestmark = pytest.mark.slow  # serves a trained model in a second Python

SERVING_PYTHON = REPO / ".venv-serving" / "bin" / "python"
CONTAINER_VERSIONS = {"torch": "2.6.0", "torchvision": "0.21.0", "sagemaker-pytorch-inference": "2.0.25"}


def serving_python() -> Path:
    if not SERVING_PYTHON.exists():
        pytest.fail(f"{SERVING_PYTHON} is missing: `make install` builds it from requirements/serving.txt")
    return SERVING_PYTHON


def test_the_serving_environment_has_the_containers_versions() -> None:
    code = (
        "import json, importlib.metadata as m; "
        f"print(json.dumps({{name: m.version(name) for name in {sorted(CONTAINER_VERSIONS)!r}}}))"
    )
    result = subprocess.run([serving_python(), "-c", code], capture_output=True, text=True, timeout=120, check=True)
    versions = json.loads(result.stdout)
    assert {name: version.split("+")[0] for name, version in versions.items()} == CONTAINER_VERSIONS


def serve_here(model_dir: Path, bodies: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    """The handler's functions in this process, on this environment's torch: (status, answer) each."""
    loaded = inference.model_fn(str(model_dir))
    served: list[tuple[int, dict[str, Any]]] = []
    for body in bodies:
        try:
            answer, _ = inference.output_fn(inference.predict_fn(inference.input_fn(body, "image/jpeg"), loaded), "")
        except GenericInferenceToolkitError as exc:
            served.append((exc.status_code, {}))
            continue
        served.append((200, json.loads(answer)))
    return served


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_the_artifact_answers_alike_under_the_containers_torch(
    serve: Serve,
    trained: tuple[Path, dict[str, object]],
    dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
) -> None:
    # GIVEN held-out photos plus one bad image
    model_dir = trained[0]
    photos = sorted((dataset / "test").glob("*/*.jpg"))
    bodies = [path.read_bytes() for path in photos] + [b"not an image"]

    # WHEN the artifact is served in a model container (torch 2.6) and by the handler here
    container = serve(MODEL_PRECISION=precision)
    there = [container.invoke(body, "image/jpeg") for body in bodies]
    monkeypatch.setenv("MODEL_PRECISION", precision)
    monkeypatch.delenv("BAD_INPUT_POLICY", raising=False)
    here = serve_here(model_dir, bodies)

    # THEN torch 2.6 loaded, from the artifact's own code, the network this CPU gets for that precision
    expected = served_here(precision, files={path.name for path in model_dir.iterdir()}).precision
    assert f"model loaded: precision={expected} device=cpu" in container.log_path.read_text()
    # and every answer is the same breed, with the same confidence to within rounding, from that network
    assert len(there) == len(here) == len(photos) + 1
    for answer, (status, theirs) in zip(there[:-1], here[:-1], strict=True):
        assert answer.status == status == 200
        ours = json.loads(answer.body)
        assert ours["predicted_label"] == theirs["predicted_label"]
        assert ours["confidence"] == pytest.approx(theirs["confidence"], abs=0.02)
        assert ours["model_precision"] == theirs["model_precision"] == expected
        assert ours["model_version"] == theirs["model_version"] == classifier.model_version(model_dir)
    assert there[-1].status == here[-1][0] == 400


LOAD_EVERY_INT8_NETWORK = """
import json, sys, torch, networks, quantization
shapes = {}
for network in networks.INT8_NETWORKS:
    module = quantization.load(sys.argv[1] + "/" + network.file)
    with torch.inference_mode():
        shapes[network.file] = list(module(torch.zeros(2, 3, int(sys.argv[2]), int(sys.argv[2]))).shape)
print(json.dumps(shapes))
"""


def test_every_int8_network_loads_and_runs_under_the_containers_torch(
    trained: tuple[Path, dict[str, object]],
) -> None:
    """Whichever a host's CPU gets, the file train.py wrote on this torch is one torch 2.6 can run."""
    model_dir = trained[0]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(model_dir / "code")
    command = [serving_python(), "-c", LOAD_EVERY_INT8_NETWORK, str(model_dir), str(IMAGE_SIZE)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {network.file: [2, CLASSES] for network in networks.INT8_NETWORKS}
