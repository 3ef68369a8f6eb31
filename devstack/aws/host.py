"""This machine as the local stack's containers and Lambda environments use it: free ports, process trees."""

from __future__ import annotations

import socket
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
    """The processes below `pid`, depth first (the container's toolkit, Java, its workers)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # a child belongs to the thread that started it
        try:
            children += map(int, (task / "children").read_text().split())
        except OSError:
            continue
    for child in sorted(children):
        yield child
        yield from descendants(child)
