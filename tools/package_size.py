"""Report each Lambda function's deployment package size and its init time.

    make package-size

Size: the package functions/Makefile builds (as `sam build` runs it) for the function's runtime and
architecture, zipped. Init time: the cold import of the handler module
(what Lambda's init phase runs before the first invocation), in fresh processes that see only the
package and boto3 (which the Lambda runtime provides, compiled), with the function's environment
from template.yaml and the variables Lambda sets; the median of several. As on Lambda, whose
/var/task is read-only, the package's modules are compiled on every cold start (no bytecode is
written). It is measured on this machine with a package built for its own architecture and Python:
compare the figures with each other, not with Lambda's INIT_DURATION.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.metadata
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from infra.template import declared_environment, load_template, parameter_defaults, resolve

REPO = Path(__file__).resolve().parents[1]
LAMBDA_LIMIT_UNZIPPED = 250 * 1024 * 1024
REGION = "us-east-1"  # where the measured function pretends to run (AWS_REGION)
HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

# One cold start: import the handler's module in a process with no site-packages.
_IMPORT = """
import sys, time
sys.path[:0] = [{package!r}, {runtime!r}]
started = time.perf_counter()
import {module}
print(time.perf_counter() - started)
"""


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _pip(requirements: list[str], target: Path, platform_tag: str, python_version: str) -> None:
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    wheels = ["--platform", platform_tag, "--python-version", python_version, "--only-binary=:all:"]
    subprocess.run([*pip, *requirements, "--target", str(target), *wheels], check=True)


def build(code_uri: Path, logical_id: str, python_version: str, architecture: str, target: Path) -> None:
    """The package as `sam build` builds it: make's target build-<LogicalId> in code_uri's Makefile."""
    arch = "aarch64" if architecture == "arm64" else "x86_64"
    variables = [
        f"PYTHON={sys.executable}",
        f"RUNTIME_PYTHON={python_version}",
        f"ARCH={arch}",
        f"ARTIFACTS_DIR={target}",
    ]
    subprocess.run(["make", "--silent", "-C", str(code_uri), f"build-{logical_id}", *variables], check=True)


def zipped_size(package: Path, archive: Path) -> int:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(package.rglob("*")):
            zipped.write(path, path.relative_to(package))
    return archive.stat().st_size


def init_seconds(package: Path, runtime: Path, handler: str, environment: dict[str, str], runs: int) -> list[float]:
    module = handler.rpartition(".")[0]
    code = _IMPORT.format(package=str(package), runtime=str(runtime), module=module)
    times = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-S", "-c", code],
            env={**environment, "PYTHONDONTWRITEBYTECODE": "1"},
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(result.stdout.strip().splitlines()[-1]))
    return times


class _Deployed(dict[str, Any]):
    """A deployed stack's references, for a cold import that needs its variables present, not right:
    parameters at their defaults and the template's mappings; any other name or ARN a placeholder."""

    def __missing__(self, key: str) -> str:
        return f"placeholder-{key}"


def function_environment(logical_id: str) -> dict[str, str]:
    """The variables template.yaml gives the function, resolved as a deployed stack would give them."""
    template = load_template()
    refs = _Deployed({**parameter_defaults(template), "AWS::Region": REGION})
    refs.update({f"Mapping::{name}": mapping for name, mapping in template.get("Mappings", {}).items()})
    resolved = {key: str(resolve(value, refs)) for key, value in declared_environment(logical_id, template).items()}
    return {key: value for key, value in resolved.items() if value}


def lambda_environment(logical_id: str, package: Path, runtime: str, memory_mb: int, timeout_s: int) -> dict[str, str]:
    """The function's variables from template.yaml and what Lambda itself sets."""
    return {
        **function_environment(logical_id),
        "LAMBDA_TASK_ROOT": str(package),
        "AWS_LAMBDA_FUNCTION_NAME": logical_id,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout_s),
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
    }


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    template = load_template()
    defaults = template["Globals"]["Function"]
    host_tag = "manylinux2014_aarch64" if platform.machine() == "aarch64" else "manylinux2014_x86_64"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Path(tmp) / "runtime"  # boto3, as the Lambda runtime provides it
        _pip([f"boto3=={importlib.metadata.version('boto3')}"], runtime, host_tag, HOST_PYTHON)
        compileall.compile_dir(runtime, quiet=1)
        for name, resource in template["Resources"].items():
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            props = {**defaults, **resource["Properties"]}
            code_uri, architecture = REPO / props["CodeUri"], props["Architectures"][0]
            package = Path(tmp) / name
            build(code_uri, name, props["Runtime"].removeprefix("python"), architecture, package)
            size = zipped_size(package, Path(tmp) / f"{name}.zip")
            unzipped = _tree_size(package)
            local = Path(tmp) / f"{name}-host"  # the same package for this machine, to import it
            build(code_uri, name, HOST_PYTHON, "arm64" if host_tag.endswith("aarch64") else "x86_64", local)
            environment = lambda_environment(name, local, props["Runtime"], props["MemorySize"], props["Timeout"])
            times = init_seconds(local, runtime, props["Handler"], environment, args.runs)
            row = {
                "function": name,
                "zipped_mib": round(size / 2**20, 1),
                "unzipped_mib": round(unzipped / 2**20, 1),
                "init_ms_median": round(statistics.median(times) * 1000),
                "init_ms_min": round(min(times) * 1000),
            }
            results.append(row)
            print(
                f"{name}: {row['zipped_mib']} MiB zipped, {row['unzipped_mib']} MiB unzipped "
                f"({unzipped / LAMBDA_LIMIT_UNZIPPED:.1%} of Lambda's 250 MB), "
                f"runtime {props['Runtime']} {architecture}; "
                f"init (cold import of {props['Handler'].rpartition('.')[0]}, median of {args.runs}, "
                f"python {HOST_PYTHON} here) {row['init_ms_median']} ms"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="cold imports per function (the median counts)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
