"""Transform job events on the local stack: the collector takes only this stack's jobs, and a job
whose event never comes is collected by the sweep (functions/pipeline/logic/sweep.py)."""

from __future__ import annotations

import copy
import time
from typing import Any

from devstack.aws.stack import Stack
from tests.pipeline import images
from tests.stack.conftest import StartStack, outcomes, queue_is_empty, upload, wait_until

JOB_EVENT = "SageMaker Transform Job State Change"


def test_a_lost_job_event_is_collected_by_the_sweep_and_another_stacks_events_are_not(start_stack: StartStack) -> None:
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
    # WHEN another stack's job (same job-name prefix, its own bucket) sends its events
    stack.bus.lose = lambda event: False
    invoked = collector.invocations
    stack.bus.put(foreign(lost[-1], stack))
    # THEN this stack's collector is not invoked: nothing fails into its job-events DLQ
    time.sleep(1)
    assert collector.invocations == invoked
    assert queue_is_empty(stack, stack.resources.job_events_dead_letter_queue_url)
    # AND WHEN the sweep runs on its schedule, it collects the job as its event would have been
    stack.bus.fire_schedules()
    found = outcomes(stack, etags, timeout_s=30)
    assert {found[key]["status"] for key in files} == {"CLASSIFIED"}
    assert {found[key]["job_name"] for key in files} == {lost[-1]["detail"]["TransformJobName"]}
    assert collector.invocations == invoked + 1  # the sweep, once


def foreign(event: dict[str, Any], stack: Stack) -> dict[str, Any]:
    """The event of another stack's job: the same shape, writing to another bucket."""
    other = copy.deepcopy(event)
    detail = other["detail"]
    detail["TransformOutput"]["S3OutputPath"] = detail["TransformOutput"]["S3OutputPath"].replace(
        stack.names.bucket, "dogbreed-images-of-another-stack"
    )
    source = detail["TransformInput"]["DataSource"]["S3DataSource"]
    source["S3Uri"] = source["S3Uri"].replace(stack.names.bucket, "dogbreed-images-of-another-stack")
    return other
