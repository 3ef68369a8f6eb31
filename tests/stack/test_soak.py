"""A short soak: uploads meet one fault of each kind, and every image still gets its outcome; and
the two soaks' traffic, every AWS call of it, against the roles of template.yaml."""

from __future__ import annotations

import re
from typing import Any

import pytest

from devstack.aws.iam import template_policies
from devstack.aws.provision import LocalNames
from devstack.workloads import soak
from infra.template import TEMPLATE_PATH

pytestmark = pytest.mark.slow  # trains a model and runs the local stack under faults


@pytest.fixture(scope="module")
def auto_soak() -> dict[str, Any]:
    args = soak.get_args_parser().parse_args(
        ["--images", "60", "--upload-seconds", "12", "--fault-every", "2", "--fault-seconds", "2",
         "--s3-delay", "0.3", "--visibility-timeout", "20", "--timeout", "240",
         "--parameter", "BatchingWindowSeconds=1", "--parameter", "GatherWindowSeconds=2"]
    )  # fmt: skip
    result = soak.run(args)
    soak.report(result)
    return result


@pytest.fixture(scope="module")
def batch_soak() -> dict[str, Any]:
    """A flood whose transform requests are poisoned: jobs fail, and their images are retried alone."""
    args = soak.get_args_parser().parse_args(
        ["--images", "30", "--mode", "batch", "--faults", "fail-transform-request", "--fault-every", "0.5",
         "--visibility-timeout", "20", "--timeout", "240",
         "--parameter", "BatchingWindowSeconds=1", "--parameter", "GatherWindowSeconds=2"]
    )  # fmt: skip
    result = soak.run(args)
    soak.report(result)
    return result


def test_a_short_soak_with_every_fault_loses_nothing(auto_soak: dict[str, Any]) -> None:
    result = auto_soak
    # THEN each fault ran, met traffic, and no image is left without an outcome
    assert set(result["fault_counts"]) == set(soak.DEFAULT_FAULTS)
    assert result["dynamodb_requests_refused"] > 0 and result["s3_requests_delayed"] > 0
    assert result["without_outcome"] == 0
    assert sum(result["outcomes"].values()) == 60
    failed = sum(n for outcome, n in result["outcomes"].items() if outcome.startswith("FAILED"))
    poisoned = len(result["poisoned_images"])  # if a transform job ran after that fault: FAILED, no message left
    assert failed == result["dead_letters"]["uploads"] + poisoned  # a FAILED upload's message waits in the DLQ
    assert result["model_calls"] >= 60


def test_a_transform_request_that_fails_fails_only_its_own_image(batch_soak: dict[str, Any]) -> None:
    """The new fault in batch mode: a poisoned request fails its job; nothing is left without an
    outcome, the poisoned image alone is FAILED with the job's reason, its neighbours CLASSIFIED."""
    result = batch_soak
    assert result["without_outcome"] == 0
    assert result["transform_jobs_failed"] >= 1
    (outcome,) = result["poisoned_images"].values()
    assert outcome["status"] == "FAILED" and outcome["error_code"] == "JobFailed"
    assert "AlgorithmError" in outcome["reason"] and "attempt 3 of 3" in outcome["reason"]
    assert result["outcomes"] == {"CLASSIFIED batch": 29, "FAILED batch": 1}


# How template.yaml says why a statement no call of the local stack needs is there.
REASONS = ("Made by AWS:", "Rare path:")


def explained_statements() -> set[tuple[str, str]]:
    """(role, Sid) of the statements whose comment (on the Sid's line, or the lines just above it)
    gives one of the REASONS."""
    role, found, comments = "", set(), ""
    for line in TEMPLATE_PATH.read_text().splitlines():
        if re.match(r"^  [A-Za-z]+:$", line):
            role = line.strip().rstrip(":")
        sid = re.match(r"^\s*- Sid: (\w+)(.*)$", line)
        if sid and any(reason in comments + sid.group(2) for reason in REASONS):
            found.add((role, sid.group(1)))
        comments = comments + line if line.lstrip().startswith("#") else ""
    return found


def test_every_call_is_allowed_and_every_statement_needed_or_explained(
    auto_soak: dict[str, Any], batch_soak: dict[str, Any]
) -> None:
    """Least privilege, by use: under both soaks' traffic (faults included) no call of a function or of
    SageMaker is refused by its role, and each Allow statement of each role was needed by some call,
    or its comment says which path needs it: a rare one, or a call AWS makes for us (REASONS)."""
    results = (auto_soak, batch_soak)
    assert [r["permissions"]["denied"] for r in results] == [[], []]
    used = {(role, sid) for r in results for role, sids in r["permissions"]["used"].items() for sid in sids}
    policies = template_policies(LocalNames(), {}, "s3://artifacts/model.tar.gz")
    people = {"ReviewerPolicy"}  # a person's policy, no traffic here: tests/stack/test_review_loop.py uses it
    allows = {
        (role, s.sid)
        for role, policy in policies.items()
        if role not in people
        for s in policy.statements
        if s.effect == "Allow"
    }
    assert allows - used - explained_statements() == set()
