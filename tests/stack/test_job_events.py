"""Transform job events on the local stack: a job whose event never comes is collected by the sweep
(functions/pipeline/logic/sweep.py), and two stacks in one account each collect only their own jobs."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.aws.stack import SharedAccount, Stack
from tests.pipeline import images
from tests.stack.conftest import StartStack, outcomes, queue_is_empty, upload, wait_until

pytestmark = pytest.mark.slow  # starts the local stack

JOB_EVENT = "SageMaker Transform Job State Change"


def test_a_lost_job_event_is_collected_by_the_sweep(start_stack: StartStack) -> None:
    stack = start_stack(InferenceMode="batch", LateJobSeconds="0")
    assert stack.bus is not None and stack.resources is not None
    lost: list[dict[str, Any]] = []

    def lose_job_events(event: dict[str, Any]) -> bool:
        if event.get("detail-type") == JOB_EVENT:
            lost.append(event)
            return True
        return False

    stack.bus.lose = lose_job_events
    files = {f"incoming/lost/{n}.jpg": images.jpeg(color=(n * 40, 120, 60)) for n in range(3)}
    etags = upload(stack, files)
    # GIVEN the job ran and its end event never arrived
    assert wait_until(lambda: bool(lost), timeout_s=90), "the transform job did not end"
    assert outcomes(stack, etags, timeout_s=2) == {}  # its images wait, with no outcome
    collector = stack.functions["CollectFunction"]
    invoked = collector.invocations
    # WHEN the sweep runs on its schedule, it collects the job as its event would have been
    stack.bus.lose = lambda event: False
    stack.bus.fire_schedules()
    found = outcomes(stack, etags, timeout_s=30)
    assert {found[key]["status"] for key in files} == {"CLASSIFIED"}
    assert {found[key]["job_name"] for key in files} == {lost[-1]["detail"]["TransformJobName"]}
    assert collector.invocations == invoked + 1  # the sweep, once
    assert queue_is_empty(stack, stack.resources.job_events_dead_letter_queue_url)


def test_two_stacks_in_one_account_each_collect_only_their_own_jobs(start_stack: StartStack) -> None:
    """A dev and a prod stack with the same job-name prefix (the default): every job event of the
    account reaches both stacks' rules, and each collects only the jobs writing to its own bucket."""
    account = SharedAccount()
    dev = start_stack(account=account, InferenceMode="batch")
    prod = start_stack(
        name="prod", account=account, InferenceMode="batch", ModelName="dogbreed-prod", EndpointName="dogbreed-prod"
    )
    assert dev.parameters["TransformJobPrefix"] == prod.parameters["TransformJobPrefix"]
    uploaded = {
        stack: upload(stack, {f"incoming/{n}.jpg": images.jpeg(color=(n * 40, shade, 60)) for n in range(3)})
        for stack, shade in ((dev, 20), (prod, 200))
    }
    found = {stack: outcomes(stack, etags, timeout_s=120) for stack, etags in uploaded.items()}

    jobs = {stack: _jobs(stack) for stack in (dev, prod)}
    assert jobs[dev] and jobs[prod] and not jobs[dev] & jobs[prod]  # each ran its own jobs
    for stack in (dev, prod):
        assert stack.bus is not None and stack.resources is not None
        assert {found[stack][key]["status"] for key in uploaded[stack]} == {"CLASSIFIED"}
        assert {found[stack][key]["job_name"] for key in uploaded[stack]} <= jobs[stack]
        # every job event of the account reached this stack's bus ...
        seen = {e["detail"]["TransformJobName"] for e in stack.bus.received if e.get("detail-type") == JOB_EVENT}
        assert seen == jobs[dev] | jobs[prod]
        # ... and its collector ran for its own jobs only: none failed on the other stack's bucket
        assert stack.functions["CollectFunction"].invocations == len(jobs[stack])
        assert queue_is_empty(stack, stack.resources.job_events_dead_letter_queue_url)


def _jobs(stack: Stack) -> set[str]:
    assert stack.runner is not None
    return {event["detail"]["TransformJobName"] for event in stack.runner.finished}
