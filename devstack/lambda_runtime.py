"""Lambda on one machine: each concurrent invocation of a function runs in an execution environment
of its own (a process started on demand, kept warm and reused), with the environment template.yaml
gives the function; and the SQS event shape Lambda builds from received messages."""

from __future__ import annotations

import hashlib
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.account import arn
from devstack.lambda_worker import LambdaContext
from devstack.process import LineWorker, WorkerDied, WorkerTimeout

__all__ = ["Invocation", "LambdaContext", "LambdaFunction", "sqs_event"]

WORKER = Path(__file__).resolve().parent / "lambda_worker.py"


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


class LambdaFunction:
    """Invoke a function as Lambda does: at most `concurrency` environments, one invocation each."""

    def __init__(self, spec: FunctionSpec, concurrency: int, log_dir: Path) -> None:
        self.spec = spec
        self.log_dir = log_dir
        self._idle: list[LineWorker] = []
        self._all: list[LineWorker] = []
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self.invocations = 0
        self.billed_ms = 0  # invocation durations, each rounded up to the millisecond as Lambda bills

    def invoke(self, event: dict[str, Any]) -> Invocation:
        with self._slots:
            started = time.perf_counter()
            worker = self._acquire()
            try:
                answer = worker.call(event, self.spec.timeout_s)
            except WorkerTimeout:
                return Invocation(False, error=f"Task timed out after {self.spec.timeout_s:.2f} seconds")
            except WorkerDied as exc:
                return Invocation(False, error=f"Runtime exited: {exc}")
            finally:
                self._release(worker)
                with self._lock:
                    self.billed_ms += math.ceil((time.perf_counter() - started) * 1000)
        if answer["ok"]:
            return Invocation(True, result=answer["result"])
        return Invocation(False, error=f"{answer['errorType']}: {answer['errorMessage']}")

    def _acquire(self) -> LineWorker:
        with self._lock:
            self.invocations += 1
            if self._idle:
                return self._idle.pop()
        env = {
            **self.spec.environment,
            "AWS_LAMBDA_FUNCTION_NAME": self.spec.name,
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(self.spec.timeout_s),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.spec.memory_mb),
            "_HANDLER": self.spec.handler,
        }
        function_arn = arn("lambda", f"function:{self.spec.name}")
        argv = [sys.executable, str(WORKER), str(self.spec.code_dir), self.spec.handler, function_arn]
        worker = LineWorker(argv, env, self.log_dir / f"{self.spec.name}.log").start()
        with self._lock:
            self._all.append(worker)
        return worker

    def _release(self, worker: LineWorker) -> None:
        with self._lock:
            if worker.alive:  # a timed-out or crashed environment is gone; the next call starts cold
                self._idle.append(worker)

    def kill_environment(self) -> int | None:
        """Kill one execution environment, a busy one if any (a crash mid-invocation); its pid."""
        with self._lock:
            alive = [w for w in self._all if w.alive]
            busy = [w for w in alive if w not in self._idle]
        pids = [w.pid for w in busy or alive if w.pid is not None]
        if not pids:
            return None
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def stop(self) -> None:
        with self._lock:
            workers, self._all, self._idle = self._all, [], []
        for worker in workers:
            worker.stop()
