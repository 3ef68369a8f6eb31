"""A child process spoken to in JSON lines: one request line in, one answer line out.

Lambda execution environments and model containers are both run this way: each in a process of its
own with exactly the environment it would have on AWS, its logs in a file of its own."""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# What every child needs from the parent's environment to start Python at all.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


class WorkerTimeout(Exception):
    """The worker did not answer in time; it has been killed."""


class WorkerDied(Exception):
    """The worker exited (or could not start) before answering."""


class LineWorker:
    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.env = {**{k: os.environ[k] for k in _INHERITED if k in os.environ}, **env}
        self.log_path = log_path
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> LineWorker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=self.env, cwd=self.cwd
            )
        return self

    def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and wait for its answer; one call at a time per worker."""
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None:
                raise WorkerDied(f"{self.argv[-1]} is not running (see {self.log_path})")
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
            except BrokenPipeError:
                raise WorkerDied(f"{self.argv[-1]} exited (see {self.log_path})") from None
            deadline = time.monotonic() + timeout_s
            ready: list[Any] = []
            while not ready:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.stop()
                    raise WorkerTimeout(f"no answer after {timeout_s:.0f} s")
                ready, _, _ = select.select([process.stdout], [], [], remaining)
            line = process.stdout.readline()
            if not line:
                raise WorkerDied(f"{self.argv[-1]} exited with {process.wait()} (see {self.log_path})")
            answer: dict[str, Any] = json.loads(line)
            return answer

    def stop(self, grace_s: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin:
            process.stdin.close()  # the worker's read loop ends
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
