"""`make demo` says what this machine lacks, and how to install it, before anything slow: run with the
machine's Python and a PATH that lacks Java and util-linux, it names both with their packages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import prerequisites

SCRIPT = Path(prerequisites.__file__)


@pytest.mark.parametrize(
    ("printed", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("no version here", None),
    ],
)
def test_javas_version_is_read_from_what_it_prints(printed: str, major: int | None) -> None:
    assert prerequisites.java_major(printed) == major


def test_an_old_python_is_named() -> None:
    (missing,) = prerequisites.python_version((3, 10))
    assert "Python 3.11+" in missing.what and "3.10" in missing.what
    assert prerequisites.python_version((3, 11)) == []


def run_with_path(tmp_path: Path, *programs: str) -> subprocess.CompletedProcess[str]:
    """The script under a PATH holding only the named programs of this machine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in programs:
        found = next(Path(d) / name for d in os.environ["PATH"].split(os.pathsep) if (Path(d) / name).exists())
        (bin_dir / name).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, check=False)


def test_a_machine_without_java_or_util_linux_is_told_what_to_install(tmp_path: Path) -> None:
    result = run_with_path(tmp_path)
    assert result.returncode == 1
    assert "Java 17+" in result.stderr and "apt-get install openjdk-17-jre-headless" in result.stderr
    assert "unshare, mount, taskset from util-linux" in result.stderr and "apt-get install util-linux" in result.stderr


def test_this_machine_has_what_the_local_stack_needs(tmp_path: Path) -> None:
    """The machines the suite runs on are set up as the README says (Java 17, util-linux, root)."""
    result = run_with_path(tmp_path, "java", "unshare", "mount", "taskset")
    assert (result.returncode, result.stderr) == (0, "")
