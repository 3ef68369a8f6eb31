"""A process tree held to a share of one CPU, as Lambda gives a function CPU in proportion to its
memory: one full vCPU at 1,769 MB (Lambda developer guide, "Configure Lambda function memory"), so a
512 MB function gets about 0.29 of one. The local stack uses it where a time budget matters (`make
soak --as-aws`), so the functions' deadlines are exercised, not only computed (infra/limits.py).

It takes the Linux cgroup cpu controller: version 1's cpu.cfs_quota_us, or version 2's cpu.max, in a
group of its own under a folder this machine lets it write. Where there is none (no root, no
delegated cgroup), `why_unavailable()` says why and the processes run unlimited."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from infra.limits import vcpus

log = logging.getLogger("devstack")

PERIOD_US = 100_000
V1_ROOT = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")
GROUP = "dogbreed-local"


def _parent() -> tuple[Path, int] | None:
    """Where this machine lets us make cpu-limited groups, and the cgroup version."""
    if (V1_ROOT / "cpu.cfs_quota_us").exists() and os.access(V1_ROOT, os.W_OK):
        return V1_ROOT, 1
    if "cpu" in _read(V2_ROOT / "cgroup.subtree_control").split() and os.access(V2_ROOT, os.W_OK):
        return V2_ROOT, 2
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def why_unavailable() -> str | None:
    """None if CPU shares can be applied here, else why not."""
    return None if _parent() is not None else "no writable cgroup cpu controller (cgroup v1 cpu, or v2 with cpu)"


class CpuShare:
    """A cgroup holding its processes to `share` of one CPU."""

    def __init__(self, name: str, memory_mb: int) -> None:
        found = _parent()
        if found is None:
            raise OSError(why_unavailable())
        root, self.version = found
        self.share = vcpus(memory_mb)
        self.path = root / GROUP / f"{name}-{os.getpid()}-{id(self):x}"
        self.path.mkdir(parents=True, exist_ok=True)
        quota = max(1000, round(self.share * PERIOD_US))
        if self.version == 1:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")

    def add(self, pid: int) -> None:
        """Move a process (and the children it starts from now on) into the group."""
        with contextlib.suppress(ProcessLookupError):  # it has ended
            (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        return [int(pid) for pid in _read(self.path / "cgroup.procs").split()]

    def quota(self) -> float:
        """The share of a CPU the group is held to, as the kernel has it."""
        if self.version == 1:
            return int(_read(self.path / "cpu.cfs_quota_us")) / int(_read(self.path / "cpu.cfs_period_us"))
        quota, period = _read(self.path / "cpu.max").split()
        return int(quota) / int(period)

    def remove(self) -> None:
        """Remove the group once its processes have ended (the kernel refuses it before)."""
        try:
            self.path.rmdir()
        except OSError as exc:
            log.warning("cannot remove the cgroup %s: %s", self.path, exc)
        with contextlib.suppress(OSError):  # the last group takes the shared folder with it
            self.path.parent.rmdir()
