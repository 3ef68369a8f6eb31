"""A model container: the serving stack of SageMaker's PyTorch 2.6 inference image, run without Docker.

The image's own entry point (`sagemaker_pytorch_serving_container.serving.main()`, the toolkit
pinned in requirements/serving.txt) starts TorchServe 0.12 with the toolkit's handler service, from
.venv-serving (torch 2.6, torchvision 0.21, as in the image) and Java. Each container has what a
container has: mount and PID namespaces (`unshare`) in which /etc and /opt are overlays of this
machine's (the toolkit writes /etc/sagemaker-ts.properties), the unpacked model.tar.gz is mounted
read-only at /opt/ml/model, /tmp is its own (the serving environment stays visible, also from a
checkout under /tmp), and it is the only TorchServe in its PID namespace (the
toolkit checks); ports of its own (SAGEMAKER_BIND_TO_PORT for inference and management, and
TorchServe's metrics and gRPC ports). devstack/aws/container_entry.sh is its PID 1.

It is served and supervised as SageMaker serves and supervises an instance:
- ready once every TorchServe worker of the model is READY (`GET /models/model`): /ping answers 200
  before the model is loaded, and while workers crash-loop;
- requests are served concurrently by TorchServe's workers; TorchServe answers a body over
  max_request_size (TS_MAX_REQUEST_SIZE) with 413 before the handler runs, and a worker that dies
  mid-request with 507 (and starts a new worker);
- a container that exited is replaced on the next request, which meets a cold start;
- one that does not answer within the invocation timeout is killed, that request fails with a 5xx,
  and the next one gets a new container."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import urllib3

from devstack.aws.host import descendants, free_ports, log_tail, started_again_on_lost_ports

log = logging.getLogger("devstack")

REPO = Path(__file__).resolve().parents[2]
SERVING_PYTHON = REPO / ".venv-serving" / "bin" / "python"
ENTRY = Path(__file__).resolve().parent / "container_entry.sh"
# From this machine's environment: its locale, its Java, and options for that Java (`make pytest` has the
# JVM compile with C1 only, which starts TorchServe's front end with about 1.2 CPU-seconds less).
_INHERITED = ("LANG", "LC_ALL", "JAVA_HOME", "JAVA_TOOL_OPTIONS")


class ContainerFailed(Exception):
    """The container could not start, or never became healthy."""


class ContainerCannotRun(ContainerFailed):
    """This machine cannot run a container at all (no serving environment or Java, or its entry could not
    run a program): a fault of the local stack, not of the model (on AWS, the image always starts)."""


# The shell's exit statuses for a command that could not be run: not executable, not found.
_CANNOT_RUN = (126, 127)


class Response(NamedTuple):
    """One /invocations answer, as the container sent it (TorchServe's error answers have no type)."""

    status: int
    content_type: str
    body: bytes


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


class _Instance:
    """One running container: `unshare` and, below it, the namespace's PID 1 and everything it starts."""

    def __init__(
        self, model_dir: Path, environment: Mapping[str, str], log_path: Path, python: Path, cpus: int | None
    ) -> None:
        if not python.exists():
            raise ContainerCannotRun(f"{python} is missing: `make install` builds it from requirements/serving.txt")
        if shutil.which("java") is None:
            raise ContainerCannotRun("TorchServe needs Java 17 or later on PATH")
        self.port, metrics, grpc_inference, grpc_management = free_ports(4)
        self.scratch = Path(tempfile.mkdtemp(prefix="container-"))
        env = {
            **{key: os.environ[key] for key in _INHERITED if key in os.environ},
            "PATH": f"{python.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.scratch),
            **environment,
            "SAGEMAKER_BIND_TO_PORT": str(self.port),
            "TS_METRICS_ADDRESS": f"http://127.0.0.1:{metrics}",
            "TS_GRPC_INFERENCE_PORT": str(grpc_inference),
            "TS_GRPC_MANAGEMENT_PORT": str(grpc_management),
        }
        # Without root, a user namespace in which this user is root allows the same mounts.
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        # An instance with fewer vCPUs than this machine: the container's processes on the first `cpus` cores.
        pinned = ["taskset", "--cpu-list", f"0-{cpus - 1}"] if cpus else []
        argv = [*pinned, "unshare", *user, "--mount", "--pid", "--fork", "--mount-proc", "--kill-child"]
        keep = Path(os.path.abspath(python)).parent.parent  # the serving environment, wherever it lies
        argv += ["/bin/sh", str(ENTRY), str(model_dir.resolve()), str(self.scratch), str(python)]
        argv += [str(keep), str(keep.resolve())]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        _RUNNING.add(self)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def pids(self) -> list[int]:
        """Every process of the container, as this machine numbers them."""
        return list(descendants(self.process.pid))

    def host_pid(self, pid: int) -> int | None:
        """This machine's number for the container's process `pid` (as TorchServe reports it)."""
        for host_pid in self.pids:
            try:
                numbers = Path(f"/proc/{host_pid}/status").read_text().split("NSpid:")[1].split("\n")[0].split()
            except (OSError, IndexError):
                continue
            if numbers[-1] == str(pid):
                return host_pid
        return None

    def workers(self, http: urllib3.PoolManager) -> list[dict[str, Any]]:
        """TorchServe's workers of the model (id, pid in the container, status), from its management API."""
        answer = http.request("GET", f"{self.url}/models/model", timeout=2.0, retries=False)
        if answer.status != 200:
            return []
        return list(answer.json()[0].get("workers", []))

    def wait_ready(self, http: urllib3.PoolManager, timeout_s: float, log_path: Path) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                code = self.process.returncode
                failed = ContainerCannotRun if code in _CANNOT_RUN else ContainerFailed
                raise failed(f"the model container exited with {code} (see {log_path}):\n{log_tail(log_path)}")
            try:
                workers = self.workers(http)
            except urllib3.exceptions.HTTPError:  # TorchServe is not listening yet
                workers = []
            if workers and all(worker["status"] == "READY" for worker in workers):
                return
            time.sleep(0.1)
        self.stop()
        raise ContainerFailed(f"the model's workers were not READY after {timeout_s:.0f} s (see {log_path})")

    def stop(self) -> None:
        """Terminated as an instance is: SIGKILL to the namespace's PID 1 ends every process in it."""
        if self.alive:
            for pid in self.pids[:1]:
                os.kill(pid, signal.SIGKILL)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)
        _RUNNING.discard(self)


_RUNNING: set[_Instance] = set()  # stopped at exit, so that a program that fails leaves no container behind


@atexit.register
def _stop_every_instance() -> None:
    for instance in list(_RUNNING):
        instance.stop()


class ModelContainer:
    """One serving container for a model directory, with the SageMaker model's environment;
    `invoke` is one /invocations request."""

    def __init__(
        self,
        model_dir: Path,
        environment: Mapping[str, str],
        log_path: Path,
        timeout_s: float = 60,
        startup_timeout_s: float = 180,
        python: Path = SERVING_PYTHON,
        cpus: int | None = None,
        on_fault: Callable[[Exception], None] | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.on_fault = on_fault  # told when this machine cannot run the container (ContainerCannotRun)
        self.cpus = cpus  # the vCPUs of the instance it stands for (default: every core of this machine)
        self.environment = dict(environment)
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.python = python
        self.replacements = 0  # containers started after the first, to replace a failed one
        self.busy_s = 0.0  # time spent serving requests: what a serverless endpoint bills
        self.startup_s: list[float] = []  # each container's start to every worker READY
        self.instance: _Instance | None = None
        self._http = urllib3.PoolManager(maxsize=32)
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> ModelContainer:
        self._running()
        return self

    @property
    def alive(self) -> bool:
        return not self._stopped and self.instance is not None and self.instance.alive

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self.instance is not None:
                self.instance.stop()

    def kill(self) -> int | None:
        """Kill the container's PID 1, as an instance failure would; its pid."""
        instance = self.instance
        pids = instance.pids if instance is not None and instance.alive else []
        if not pids:
            return None
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def workers(self) -> list[dict[str, Any]]:
        """TorchServe's workers, each with `host_pid`: the pid of its process on this machine."""
        instance = self._running()
        workers = instance.workers(self._http)
        return [{**worker, "host_pid": instance.host_pid(int(worker["pid"]))} for worker in workers]

    def invoke(self, body: bytes, content_type: str, accept: str = "") -> Response:
        headers = {"Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        instance = self._running()
        started = time.perf_counter()
        try:
            answer = self._http.request(
                "POST",
                f"{instance.url}/invocations",
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(connect=5.0, read=self.timeout_s),
                retries=False,
            )
        except urllib3.exceptions.ReadTimeoutError:
            log.warning("model container gave no answer in %.0f s; killing it (see %s)", self.timeout_s, self.log_path)
            instance.stop()
            message = f"the model container failed: no answer after {self.timeout_s:.0f} s"
            return Response(500, "text/plain", message.encode())
        except urllib3.exceptions.HTTPError as exc:  # the container went away mid-request
            return Response(500, "text/plain", f"the model container failed: {exc}".encode())
        finally:
            with self._lock:
                self.busy_s += time.perf_counter() - started
        return Response(answer.status, answer.headers.get("Content-Type", ""), answer.data)

    def _running(self) -> _Instance:
        """The running container, or a new one once its workers are READY."""
        with self._lock:
            if self._stopped:
                raise ContainerFailed("the model container was stopped")
            if self.instance is not None and self.instance.alive:
                return self.instance
            if self.instance is not None:
                self.replacements += 1
                log.warning("model container is gone (see %s); starting a new one", self.log_path)
                self.instance.stop()
            started = time.perf_counter()
            try:
                self.instance = started_again_on_lost_ports(self._start_instance, self.log_path, "a model container")
            except ContainerCannotRun as exc:
                if self.on_fault is not None:
                    self.on_fault(exc)
                raise
            self.startup_s.append(time.perf_counter() - started)
            return self.instance

    def _start_instance(self) -> _Instance:
        """A container whose workers are READY; one that exited instead is stopped (its scratch removed)."""
        instance = _Instance(self.model_dir, self.environment, self.log_path, self.python, self.cpus)
        self.instance = instance
        try:
            instance.wait_ready(self._http, self.startup_timeout_s, self.log_path)
        except ContainerFailed:
            instance.stop()
            raise
        return instance
