"""This machine as the local stack's containers and Lambda environments use it: free ports, process trees,
and the signals that stop a command built on them."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path


def free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def descendants(pid: int) -> Iterator[int]:
    """The processes below `pid`, depth first (the container's toolkit, Java, its workers); one that
    exits while they are read is left out with its children."""
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())  # a child belongs to the thread that started it
    except OSError:
        return
    for task in tasks:
        try:
            children += map(int, (task / "children").read_text().split())
        except OSError:
            continue
    for child in sorted(children):
        yield child
        yield from descendants(child)


STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(SystemExit):
    """A signal asked the program to stop (Ctrl-C, `kill`, a closed terminal); its exit status is 128 + the signal."""


def stop_on_signals() -> None:
    """Make SIGINT, SIGTERM and SIGHUP stop the program the way an error does: the exception unwinds
    every `with` and `finally`, so the local stack stops its Lambda environments and containers and
    temporary folders are removed (the default actions of SIGTERM and SIGHUP end Python at once and
    leave them running). A second signal while stopping is ignored. Main thread only."""

    def stop(signum: int, _frame: object) -> None:
        for each in STOPPING_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        print(f"\n{signal.Signals(signum).name}: stopping everything ...", file=sys.stderr, flush=True)
        raise Stopped(128 + signum)

    for each in STOPPING_SIGNALS:
        signal.signal(each, stop)


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a process's log, for an error message that outlives the log's folder."""
    try:
        text = path.read_bytes()[-4096:].decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(f"  | {line}" for line in text.strip().splitlines()[-lines:])
