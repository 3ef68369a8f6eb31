"""This machine as the local stack's containers and Lambda environments use it: free ports, process trees,
and the signals that stop a command built on them."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("devstack")
T = TypeVar("T")

# Tries to start a server whose port another program took after free_ports() chose it.
PORT_TRIES = 3


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that nothing listens on, chosen below the kernel's ephemeral range.

    The ports are free when chosen and taken seconds later, when the container or emulator given
    them binds. A port from the ephemeral range (what bind(0) hands out) could be taken in between
    as the source port of any outgoing connection, and the local stack opens thousands; a port below
    that range can only be taken by a program that chooses ports as this does. The rare loser of that
    race starts again (`started_again_on_lost_ports`)."""
    start, stop = _outside_ephemeral_range()
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(start, stop)
        if port not in chosen and _bindable(port):
            chosen.append(port)
    return chosen


def started_again_on_lost_ports(start: Callable[[], T], log_path: Path, what: str) -> T:
    """`start()`, called again (up to PORT_TRIES times in all) while what it started exited because a
    port free_ports() gave it was taken: "address already in use", in Java's and Go's words alike, in
    what it wrote to `log_path` (the log it appends to). `start` cleans up after a failed start."""
    tries = 1
    while True:
        offset = log_size(log_path)
        try:
            return start()
        except Exception:
            if tries == PORT_TRIES or not _lost_port_race(log_path, offset):
                raise
        log.warning("a port given to %s was taken; starting it on others (see %s)", what, log_path)
        tries += 1


def _lost_port_race(log_path: Path, offset: int) -> bool:
    try:
        with log_path.open("rb") as log_file:
            log_file.seek(offset)
            text = log_file.read().decode(errors="replace")
    except OSError:
        return False
    return "address already in use" in text.lower()


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself listens on `port`: a connection that succeeds may reach another
    program that took the port (the kernel's TCP tables, matched with the process's sockets)."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl, local address:port (hex), remote, state (0A: LISTEN), ..., inode
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                sockets.add(f"socket:[{fields[9]}]")
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{descriptor}") in sockets:
                return True
        except OSError:
            continue
    return False


def log_size(path: Path) -> int:
    """Where the next process appending to `path` starts writing."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _outside_ephemeral_range() -> tuple[int, int]:
    """The ports to choose from (start, stop): below the ephemeral range, or above it where a machine
    set it low."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32_768, 60_999  # Linux's default
    return (10_000, low) if low >= 11_000 else (high + 1, 65_536)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            # TorchServe binds every address: a port taken on any of them is taken (bound, never listened on)
            sock.bind(("0.0.0.0", port))  # noqa: S104
        except OSError:
            return False
    return True


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
