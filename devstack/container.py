"""A model container: a model.tar.gz unpacked as SageMaker unpacks it, served by the SageMaker
PyTorch inference toolkit (devstack/toolkit.py) in a process of its own whose only model code is
the artifact's code/ directory and whose environment is the SageMaker model's; supervised as
SageMaker supervises the instances behind an endpoint or a job."""

from __future__ import annotations

import base64
import logging
import os
import signal
import sys
import tarfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from devstack.process import LineWorker, WorkerDied, WorkerTimeout

log = logging.getLogger("devstack")

TOOLKIT = Path(__file__).resolve().parent / "toolkit.py"
PING = {"ping": True}  # the container's GET /ping


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
    """One serving container; `invoke` is one /invocations request (the toolkit serves one at a time).

    Supervised as SageMaker does: the container takes requests once /ping answers (the model is
    loaded); one that crashed is replaced on the next request, which meets a cold start instead
    of an error; one that does not answer within the invocation timeout is killed, that request
    fails with a 5xx, and the next one gets a new container."""

    def __init__(
        self,
        model_dir: Path,
        environment: Mapping[str, str],
        log_path: Path,
        timeout_s: float = 60,
        startup_timeout_s: float = 120,
        program: Sequence[str] = (sys.executable, str(TOOLKIT)),
    ) -> None:
        self.argv = [*program, str(model_dir)]
        self.env = {**environment, "PYTHONPATH": str(model_dir / "code")}
        self.cwd = model_dir
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.replacements = 0  # containers started after the first, to replace a failed one
        self.busy_s = 0.0  # time spent serving requests: what a serverless endpoint bills
        self.worker: LineWorker | None = None
        self._lock = threading.Lock()

    def start(self) -> ModelContainer:
        with self._lock:
            self._healthy_worker()
        return self

    def stop(self) -> None:
        with self._lock:
            if self.worker is not None:
                self.worker.stop()

    def kill(self) -> int | None:
        """Kill the container's process, as an instance failure would; its pid."""
        worker = self.worker
        if worker is None or worker.pid is None or not worker.alive:
            return None
        os.kill(worker.pid, signal.SIGKILL)
        return worker.pid

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]:
        request = {
            "body_b64": base64.b64encode(body).decode(),
            "content_type": content_type,
            "accept": accept or "application/json",  # what the toolkit assumes when none is sent
        }
        with self._lock:
            started = time.perf_counter()
            try:
                answer = self._healthy_worker().call(request, self.timeout_s)
            except (WorkerDied, WorkerTimeout) as exc:
                return 500, "text/plain", f"the model container failed: {exc}".encode()
            finally:
                self.busy_s += time.perf_counter() - started
        return int(answer["status"]), str(answer["content_type"]), str(answer["body"]).encode()

    def _healthy_worker(self) -> LineWorker:
        """The running container, or a new one once its /ping answers."""
        if self.worker is not None and self.worker.alive:
            return self.worker
        if self.worker is not None:
            self.replacements += 1
            log.warning("model container %s is gone (see %s); starting a new one", self.worker.pid, self.log_path)
        self.worker = LineWorker(self.argv, self.env, self.log_path, cwd=self.cwd).start()
        try:
            healthy = self.worker.call(PING, self.startup_timeout_s).get("status") == 200
        except WorkerTimeout:  # the worker was killed: as unhealthy as one that exited
            healthy = False
        if not healthy:
            self.worker.stop()
            raise WorkerDied(f"the model container did not become healthy (see {self.log_path})")
        return self.worker
