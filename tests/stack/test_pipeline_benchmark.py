"""The pipeline benchmark command keeps working (figures are printed, never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IMPORT_PATH, REPO

pytestmark = pytest.mark.slow  # runs the pipeline benchmark


def test_the_pipeline_benchmark_reports_both_modes_beside_the_raw_figures(model_archive: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["PYTHONPATH"] = IMPORT_PATH
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        "-m",
        "devstack.workloads.pipeline_benchmark",
        "--images",
        "12",
        "--model",
        str(model_archive),
    ]
    result = subprocess.run(
        [*command, "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    raw, raw_grouped, transform, serverless, batch = json.loads(out.read_text())
    assert raw["mode"].startswith("raw endpoint") and raw["images"] == 12
    assert raw_grouped["mode"].endswith("16/call)") and raw_grouped["images"] == 12
    assert transform["mode"].startswith("raw transform job") and (transform["images"], transform["jobs"]) == (12, 1)
    assert (serverless["modes"], serverless["statuses"], serverless["jobs"]) == (["serverless"], ["CLASSIFIED"], 0)
    assert (batch["modes"], batch["statuses"]) == (["batch"], ["CLASSIFIED"])
    for row in (raw, raw_grouped, transform, serverless, batch):
        assert row["images_per_s"] > 0 and row["p50_ms"] <= row["p95_ms"]
    assert "vs raw" in result.stdout
    # where the time went: the functions that ran, the endpoint's requests, moto's answers by service
    stages = serverless["stages"]
    assert stages["functions"]["IngestFunction"]["invocations"] >= 1 and stages["endpoint"]["requests"] >= 1
    assert {"s3", "dynamodb"} <= set(stages["moto_s"]) and "polls" in stages["moto_s"]
    assert batch["stages"]["functions"]["BuildJobsFunction"]["invocations"] >= 1
    assert f"{serverless['mode']} of " in result.stdout
