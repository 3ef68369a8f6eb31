"""`make demo` keeps working: both modes, every upload with an outcome, unsure answers in the review
queue, exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import IMPORT_PATH, REPO
from tests.training import served_here

pytestmark = pytest.mark.slow  # runs make demo


def test_demo_gives_every_upload_an_outcome_in_both_modes() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["PYTHONPATH"] = IMPORT_PATH
    result = subprocess.run(
        [sys.executable, "-m", "devstack.workloads.demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = re.search(r"(\d+)/(\d+) uploads have an outcome: (.*)", result.stdout)
    assert summary and summary.group(1) == summary.group(2) == "77", result.stdout[-3000:]
    counts = {status: int(n) for n, status in re.findall(r"(\d+) (\w+ \(\w+\))", summary.group(3))}
    assert counts["CLASSIFIED (serverless)"] == 13 and counts["REJECTED (serverless)"] == 3
    assert counts["CLASSIFIED (batch)"] >= 58 and counts["REJECTED (batch)"] >= 1  # readme.jpg is not a photo
    assert re.search(r"transform job dogbreed-\S+: Completed", result.stdout)
    # the model trained in the demo names each trickle photo's breed (file names carry the breed)
    rows = [line for line in result.stdout.splitlines() if "  CLASSIFIED  serverless" in line]
    unsure = [row for row in rows if "many breeds in one" in row[:36]]
    for row in rows:
        name, breed = row[:36].strip(), row[38:64].strip()
        if not name.startswith("incoming/café") and row not in unsure:
            assert name.removeprefix("incoming/").rsplit(" ", 1)[0].replace(" ", "_") == breed, row
            assert "needs review" not in row, row  # a confident answer is recorded as it is
    assert len(rows) == 13 and len(unsure) == 2
    assert all("needs review" in row for row in unsure), unsure
    # the review queue lists them, under the threshold the artifact recommends
    queue = result.stdout.split("The review queue: answers under the confidence threshold (")[1]
    threshold = float(queue.split(",")[0])
    listed = [line for line in queue.splitlines()[3:] if line.startswith("incoming/")]
    assert {line[:36].strip() for line in listed} >= {row[:36].strip() for row in unsure}
    # conf. and thr. as shown, to 2 decimals: an answer just under the threshold shows as equal to it
    assert all(float(line[66:72]) <= float(line[74:79]) == threshold for line in listed), listed
    # every classified image says which network and weights answered: the one this CPU gets
    served = served_here().precision
    model = re.compile(rf"(?<![\w-]){re.escape(served)}@[0-9a-f]{{8}}(?![0-9a-f])")
    assert all(model.search(row) for row in rows), rows
    flood = [line for line in result.stdout.splitlines() if re.search(r"\d+  CLASSIFIED +batch ", line)]
    assert flood and all(model.search(row) for row in flood), flood
