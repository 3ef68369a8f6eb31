"""A short soak: uploads meet one fault of each kind, and every image still gets its outcome."""

from __future__ import annotations

import pytest

from devstack import soak

pytestmark = pytest.mark.slow  # trains a model and runs the local stack under faults


def test_a_short_soak_with_every_fault_loses_nothing() -> None:
    args = soak.get_args_parser().parse_args(
        ["--images", "60", "--upload-seconds", "12", "--fault-every", "2", "--fault-seconds", "2",
         "--s3-delay", "0.3", "--visibility-timeout", "20", "--timeout", "240",
         "--parameter", "BatchingWindowSeconds=1", "--parameter", "GatherWindowSeconds=2"]
    )  # fmt: skip
    result = soak.run(args)
    soak.report(result)
    # THEN each fault ran, met traffic, and no image is left without an outcome
    assert set(result["fault_counts"]) == set(soak.FAULTS)
    assert result["dynamodb_requests_refused"] > 0 and result["s3_requests_delayed"] > 0
    assert result["without_outcome"] == 0
    assert sum(result["outcomes"].values()) == 60
    failed = sum(n for outcome, n in result["outcomes"].items() if outcome.startswith("FAILED"))
    poisoned = len(result["poisoned_images"])  # if a transform job ran after that fault: FAILED, no message left
    assert failed == result["dead_letters"]["uploads"] + poisoned  # a FAILED upload's message waits in the DLQ
    assert result["model_calls"] >= 60


def test_a_transform_request_that_fails_fails_only_its_own_image() -> None:
    """The new fault in batch mode: a poisoned request fails its job; nothing is left without an
    outcome, the poisoned image alone is FAILED with the job's reason, its neighbours CLASSIFIED."""
    args = soak.get_args_parser().parse_args(
        ["--images", "30", "--mode", "batch", "--faults", "fail-transform-request", "--fault-every", "0.5",
         "--visibility-timeout", "20", "--timeout", "240",
         "--parameter", "BatchingWindowSeconds=1", "--parameter", "GatherWindowSeconds=2"]
    )  # fmt: skip
    result = soak.run(args)
    soak.report(result)
    assert result["without_outcome"] == 0
    assert result["transform_jobs_failed"] >= 1
    (outcome,) = result["poisoned_images"].values()
    assert outcome["status"] == "FAILED" and outcome["error_code"] == "JobFailed"
    assert "AlgorithmError" in outcome["reason"] and "attempt 3 of 3" in outcome["reason"]
    assert result["outcomes"] == {"CLASSIFIED batch": 29, "FAILED batch": 1}
