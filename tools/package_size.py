"""Report the size of each Lambda function's deployment package, built as `sam build` builds it:
functions/ plus functions/requirements.txt installed for the function's runtime and architecture.

    make package-size
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from devstack.template import load_template

REPO = Path(__file__).resolve().parents[1]
LAMBDA_LIMIT_UNZIPPED = 250 * 1024 * 1024


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def build(code_uri: Path, runtime: str, architecture: str, target: Path) -> None:
    platform = "manylinux2014_aarch64" if architecture == "arm64" else "manylinux2014_x86_64"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    wheels = ["--platform", platform, "--python-version", runtime.removeprefix("python"), "--only-binary=:all:"]
    subprocess.run([*pip, "-r", str(code_uri / "requirements.txt"), "--target", str(target), *wheels], check=True)
    shutil.copytree(code_uri, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def main() -> None:
    template = load_template()
    defaults = template["Globals"]["Function"]
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = {**defaults, **resource["Properties"]}
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "package"
            build(REPO / props["CodeUri"], props["Runtime"], props["Architectures"][0], target)
            archive = Path(tmp) / "package.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
                for path in sorted(target.rglob("*")):
                    zipped.write(path, path.relative_to(target))
            unzipped = _tree_size(target)
            print(
                f"{name}: {archive.stat().st_size / 2**20:.1f} MiB zipped, {unzipped / 2**20:.1f} MiB unzipped "
                f"({unzipped / LAMBDA_LIMIT_UNZIPPED:.1%} of Lambda's 250 MB), "
                f"runtime {props['Runtime']} {props['Architectures'][0]}"
            )


if __name__ == "__main__":
    main()
