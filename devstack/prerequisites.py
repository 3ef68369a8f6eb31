"""What the local stack needs of this machine, checked before anything slow is installed.

    python3 devstack/prerequisites.py

Standard library only: the Makefile runs it with the machine's Python, before any virtual
environment exists. Each missing part is named with the Debian/Ubuntu package that brings it;
the exit status is 1 if anything is missing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

MIN_PYTHON = (3, 11)
MIN_JAVA = 17
APT = "sudo apt-get install"


@dataclass(frozen=True)
class Missing:
    what: str  # what is missing, and what needs it
    remedy: str  # how to get it


def python_version(version: tuple[int, int] = (sys.version_info.major, sys.version_info.minor)) -> list[Missing]:
    if version >= MIN_PYTHON:
        return []
    wanted = ".".join(map(str, MIN_PYTHON))
    return [Missing(f"Python {wanted}+ (this is {version[0]}.{version[1]})", f"run make with PYTHON=python{wanted}")]


def python_venv() -> list[Missing]:
    """Debian's python3 comes without venv's pip bootstrap (the python3-venv package)."""
    try:
        import ensurepip  # noqa: F401
        import venv  # noqa: F401
    except ImportError:
        minor = f"{sys.version_info.major}.{sys.version_info.minor}"
        return [Missing("Python's venv module with ensurepip (make builds virtual environments)",
                        f"{APT} python{minor}-venv")]  # fmt: skip
    return []


def java_major(version_output: str) -> int | None:
    """The major version in `java -version`'s output: 'openjdk version "17.0.15"' -> 17, '"1.8.0_392"' -> 8."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def java() -> list[Missing]:
    remedy = f"{APT} openjdk-{MIN_JAVA}-jre-headless"
    path = shutil.which("java")
    if path is None:
        return [Missing(f"Java {MIN_JAVA}+ on PATH (TorchServe, the model server, runs on it)", remedy)]
    answer = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=60, check=False)
    major = java_major(answer.stderr + answer.stdout)
    if major is None or major < MIN_JAVA:
        return [Missing(f"Java {MIN_JAVA}+ for TorchServe ({path} is {major or 'unknown'})", remedy)]
    return []


def util_linux() -> list[Missing]:
    """Model containers run in namespaces of their own (unshare, mount) pinned to cores (taskset)."""
    absent = [tool for tool in ("unshare", "mount", "taskset") if shutil.which(tool) is None]
    if absent:
        return [Missing(f"{', '.join(absent)} from util-linux (model containers)", f"{APT} util-linux")]
    return []


def namespaces() -> list[Missing]:
    """A model container needs mount and PID namespaces: root, or a user namespace in which this user is root."""
    if shutil.which("unshare") is None:
        return []  # util_linux() names it
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    argv = ["unshare", *user, "--mount", "--pid", "--fork", "--mount-proc", "/bin/sh", "-c", "exit 0"]
    answer = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if answer.returncode == 0:
        return []
    what = f"mount and PID namespaces for model containers (`{' '.join(argv)}`: {answer.stderr.strip()})"
    remedy = "run as root, or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
    return [Missing(what, remedy)]


CHECKS: tuple[Callable[[], list[Missing]], ...] = (python_version, python_venv, java, util_linux, namespaces)


def missing() -> list[Missing]:
    return [gap for check in CHECKS for gap in check()]


def main() -> int:
    gaps = missing()
    if not gaps:
        return 0
    print("This machine lacks what the local stack needs:", file=sys.stderr)
    for gap in gaps:
        print(f"  - {gap.what}\n      {gap.remedy}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
