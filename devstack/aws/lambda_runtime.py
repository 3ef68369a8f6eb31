"""Lambda on one machine: each concurrent invocation of a function runs in an execution environment
of its own, started on demand, kept warm and reused, with the environment template.yaml gives the
function. An environment is what Lambda runs: the Lambda Runtime Interface Emulator (the static
binary the SAM CLI ships, samcli/local/rapid/aws-lambda-rie-x86_64) in front of `awslambdaric`, the
runtime interface client of AWS's Python base images, which imports the unchanged handler from the
function's code directory. The emulator enforces the function's timeout ("Task timed out after
N seconds", the runtime killed and initialised again for the next invoke) and writes a REPORT line
with the billed duration of every invoke. Also: the SQS event shape Lambda builds from received
messages, and the context object for tests that call a handler in-process."""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from devstack.aws.cpu_share import CpuShare, why_unavailable
from devstack.aws.host import descendants, free_ports, listens, log_tail, started_again_on_lost_ports

log = logging.getLogger("devstack")

__all__ = ["EnvironmentFailed", "Invocation", "LambdaContext", "LambdaFunction", "sqs_event"]

SAM_PACKAGE = Path(__file__).resolve().parents[2] / ".venv-sam" / "lib"
BILLED = re.compile(rb"Billed Duration: (\d+) ms")
DURATION = re.compile(rb"\tDuration: ([\d.]+) ms")
# What an environment's processes get from this machine's environment: enough to start Python.
_INHERITED = ("PATH", "LANG", "LC_ALL", "TMPDIR")


class EnvironmentFailed(Exception):
    """An execution environment could not start on this machine: a fault of the local stack, not of the
    function (on AWS, Lambda always has one to give)."""


def emulator() -> Path:
    """The Runtime Interface Emulator inside the installed SAM CLI (.venv-sam, which the Makefile's
    targets that run the local stack install), for this machine's architecture."""
    binary = "aws-lambda-rie-arm64" if platform.machine() in ("aarch64", "arm64") else "aws-lambda-rie-x86_64"
    found = sorted(SAM_PACKAGE.glob(f"python3*/site-packages/samcli/local/rapid/{binary}"))
    if not found:
        raise EnvironmentFailed(f"no {binary} under {SAM_PACKAGE}: `make install` builds .venv-sam")
    return found[-1]


@dataclass
class LambdaContext:
    """Lambda's context object for tests that call a handler in-process (tests/pipeline): the
    attributes Powertools and our handlers read. It enforces no timeout, isolates nothing and bills
    nothing; the local stack runs handlers under the real runtime client (LambdaFunction)."""

    function_name: str = "local-function"
    invoked_function_arn: str = ""
    timeout_s: float = 120.0
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _started: float = field(default_factory=time.monotonic)

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self._started)) * 1000))


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """Turn SQS ReceiveMessage results (with AttributeNames=["All"]) into a Lambda SQS event."""
    region = queue_arn.split(":")[3]
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {k: str(v) for k, v in m.get("Attributes", {}).items()},
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),  # noqa: S324
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


@dataclass(frozen=True)
class Invocation:
    ok: bool
    result: Any = None
    error: str = ""


@dataclass(frozen=True)
class FunctionSpec:
    """A function as the template declares it."""

    name: str
    handler: str
    code_dir: Path
    environment: dict[str, str]
    timeout_s: float
    memory_mb: int


class ExecutionEnvironment:
    """One execution environment: the emulator and, below it, the runtime client with the handler."""

    def __init__(self, spec: FunctionSpec, log_path: Path, cpu_share: bool = False) -> None:
        """With `cpu_share`, the environment gets the share of a CPU Lambda gives its memory size
        (devstack.aws.cpu_share) where this machine allows it."""
        runtime_api, invocations = free_ports(2)
        env = {
            **{key: os.environ[key] for key in _INHERITED if key in os.environ},
            **spec.environment,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(spec.timeout_s)),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "PYTHONPATH": str(spec.code_dir),  # the task root
        }
        argv = [
            str(emulator()),
            "--runtime-api-address", f"127.0.0.1:{runtime_api}",
            "--runtime-interface-emulator-address", f"127.0.0.1:{invocations}",
            sys.executable, "-m", "awslambdaric", spec.handler,
        ]  # fmt: skip
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=spec.code_dir
            )
        self.url = f"http://127.0.0.1:{invocations}/2015-03-31/functions/function/invocations"
        _RUNNING.add(self)
        self.cpu: CpuShare | None = None
        if cpu_share:
            self.cpu = CpuShare(spec.name, spec.memory_mb)
            self.cpu.add(self.process.pid)  # the runtime it starts on the first invoke is its child
        self._wait_listening(invocations, log_path)

    def _wait_listening(self, port: int, log_path: Path, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                code = self.process.returncode
                self.stop()
                raise EnvironmentFailed(f"the emulator exited with {code} (see {log_path}):\n{log_tail(log_path)}")
            if listens(self.process.pid, port):
                return
            time.sleep(0.02)
        self.stop()
        raise EnvironmentFailed(f"the emulator did not listen within {timeout_s:.0f} s (see {log_path})")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def runtime_pid(self) -> int | None:
        """The runtime client's process (the handler's), while one runs."""
        return next(descendants(self.process.pid), None)

    def stop(self) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.cpu is not None:
            self.cpu.remove()
            self.cpu = None
        _RUNNING.discard(self)


_RUNNING: set[ExecutionEnvironment] = set()  # stopped at exit, so that a program that fails leaves none behind


@atexit.register
def _stop_every_environment() -> None:
    for environment in list(_RUNNING):
        environment.stop()


class LambdaFunction:
    """Invoke a function as Lambda does: at most `concurrency` environments, one invocation each. An
    environment that cannot start raises EnvironmentFailed from `invoke`, after telling `on_fault`."""

    def __init__(
        self,
        spec: FunctionSpec,
        concurrency: int,
        log_dir: Path,
        on_fault: Callable[[Exception], None] | None = None,
        cpu_share: bool = False,
    ) -> None:
        self.spec = spec
        self.on_fault = on_fault
        self.cpu_share = cpu_share and cpu_share_available(spec.name)
        self.log_path = log_dir / f"{spec.name}.log"
        self._idle: list[ExecutionEnvironment] = []
        self._all: list[ExecutionEnvironment] = []
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._http = urllib3.PoolManager(maxsize=max(1, concurrency))
        self.invocations = 0

    @property
    def billed_ms(self) -> int:
        """The billed durations of the REPORT lines the emulator wrote for this function's invokes."""
        if not self.log_path.exists():
            return 0
        return sum(int(ms) for ms in BILLED.findall(self.log_path.read_bytes()))

    @property
    def longest_ms(self) -> float:
        """The longest invoke of this function, from the emulator's REPORT lines."""
        if not self.log_path.exists():
            return 0.0
        return max((float(ms) for ms in DURATION.findall(self.log_path.read_bytes())), default=0.0)

    def invoke(self, event: dict[str, Any]) -> Invocation:
        with self._slots:
            environment = self._acquire()
            try:
                answer = self._http.request(
                    "POST",
                    environment.url,
                    body=json.dumps(event).encode(),
                    timeout=urllib3.Timeout(connect=5.0, read=self.spec.timeout_s + 30),
                    retries=False,
                )
            except urllib3.exceptions.HTTPError as exc:
                return Invocation(False, error=f"Runtime exited: {exc}")
            finally:
                self._release(environment)
        return read_invocation(answer.data)

    def _acquire(self) -> ExecutionEnvironment:
        with self._lock:
            self.invocations += 1
            if self._idle:
                return self._idle.pop()
        try:
            environment = started_again_on_lost_ports(
                lambda: ExecutionEnvironment(self.spec, self.log_path, self.cpu_share), self.log_path, self.spec.name
            )
        except (OSError, EnvironmentFailed) as exc:
            failure = EnvironmentFailed(f"{self.spec.name}: no execution environment could start: {exc}")
            if self.on_fault is not None:
                self.on_fault(failure)
            raise failure from exc
        with self._lock:
            self._all.append(environment)
        return environment

    def _release(self, environment: ExecutionEnvironment) -> None:
        with self._lock:
            if environment.alive:
                self._idle.append(environment)

    def kill_environment(self) -> int | None:
        """Kill the runtime of one execution environment, a busy one if any (a crash mid-invocation); its pid."""
        with self._lock:
            alive = [e for e in self._all if e.alive]
            busy = [e for e in alive if e not in self._idle]
        for environment in busy or alive:
            pid = environment.runtime_pid
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                return pid
        return None

    def stop(self) -> None:
        with self._lock:
            environments, self._all, self._idle = self._all, [], []
        for environment in environments:
            environment.stop()


def read_invocation(body: bytes) -> Invocation:
    """The emulator's answer: the handler's result, its error ({"errorType", "errorMessage", ...}),
    or the emulator's own words (a timeout, a runtime that exited)."""
    try:
        result = json.loads(body)
    except ValueError:
        return Invocation(False, error=body.decode(errors="replace").strip() or "Runtime exited without an answer")
    if isinstance(result, dict) and {"errorType", "errorMessage"} <= result.keys():
        return Invocation(False, error=f"{result['errorType']}: {result['errorMessage']}")
    return Invocation(True, result=result)


def cpu_share_available(name: str) -> bool:
    """Whether CPU shares apply here; if not, a warning names the function and says why."""
    why = why_unavailable()
    if why is not None:
        log.warning("%s runs with the machine's CPUs, not its memory's share: %s", name, why)
    return why is None
