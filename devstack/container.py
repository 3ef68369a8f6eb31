"""A model container: a model.tar.gz unpacked as SageMaker unpacks it, served by the SageMaker
PyTorch inference toolkit (devstack/toolkit.py) in a process of its own whose only model code is
the artifact's code/ directory and whose environment is the SageMaker model's."""

from __future__ import annotations

import base64
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

from devstack.process import LineWorker, WorkerDied, WorkerTimeout

TOOLKIT = Path(__file__).resolve().parent / "toolkit.py"


def pack_model(model_dir: Path, archive: Path) -> Path:
    """model.tar.gz as SageMaker builds it from a training job's SM_MODEL_DIR."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def unpack_model(archive: Path, model_dir: Path) -> Path:
    """What SageMaker does with ModelDataUrl before the container starts: /opt/ml/model."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    return model_dir


class ModelContainer:
    """One serving container; `invoke` is one /invocations request (the toolkit serves one at a time)."""

    def __init__(self, model_dir: Path, environment: Mapping[str, str], log_path: Path, timeout_s: float = 60) -> None:
        env = {**environment, "PYTHONPATH": str(model_dir / "code")}
        self.timeout_s = timeout_s
        self.worker = LineWorker([sys.executable, str(TOOLKIT), str(model_dir)], env, log_path, cwd=model_dir)

    def start(self) -> ModelContainer:
        self.worker.start()
        return self

    def stop(self) -> None:
        self.worker.stop()

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]:
        request = {
            "body_b64": base64.b64encode(body).decode(),
            "content_type": content_type,
            "accept": accept or "application/json",  # what the toolkit assumes when none is sent
        }
        try:
            answer = self.worker.call(request, self.timeout_s)
        except (WorkerDied, WorkerTimeout) as exc:
            return 500, "text/plain", f"the model container failed: {exc}".encode()
        return int(answer["status"]), str(answer["content_type"]), str(answer["body"]).encode()
