"""Lambda's SQS batch rules and EventBridge's rule matching and async delivery, as the local stack
applies them (read from the translated template)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.aws.account import arn
from devstack.aws.event_sources import EventBus, RuleTarget, SqsTrigger, failed_message_ids, matches
from devstack.aws.lambda_runtime import Invocation
from devstack.aws.provision import LocalNames, references
from infra.template import load_template, resolve, translate
from tests.conftest import Aws, load_event

TRIGGER = SqsTrigger("IngestFunction", arn("sqs", "q"), 100, 5, True, 5)
IDS = ["m1", "m2", "m3"]


@pytest.mark.parametrize(
    ("invocation", "failed"),
    [
        (Invocation(True, {"batchItemFailures": []}), set()),
        (Invocation(True, {"batchItemFailures": [{"itemIdentifier": "m2"}]}), {"m2"}),
        (Invocation(False, error="Task timed out after 120.00 seconds"), set(IDS)),
        (Invocation(True, {"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}), set(IDS)),
        (Invocation(True, {"batchItemFailures": [{"id": "m1"}]}), set(IDS)),
        (Invocation(True, "ok"), set(IDS)),
        (Invocation(True, None), set()),
    ],
    ids=["all-ok", "one-failed", "function-error", "unknown-id", "malformed-item", "malformed-response", "null"],
)
def test_which_messages_return_to_the_queue(invocation: Invocation, failed: set[str]) -> None:
    assert failed_message_ids(TRIGGER, invocation, IDS) == failed


def test_without_report_batch_item_failures_only_an_error_fails_the_batch() -> None:
    trigger = SqsTrigger("f", "arn", 10, 0, False, 5)
    assert (
        failed_message_ids(trigger, Invocation(True, {"batchItemFailures": [{"itemIdentifier": "m1"}]}), IDS) == set()
    )
    assert failed_message_ids(trigger, Invocation(False, error="boom"), IDS) == set(IDS)


def template_rule() -> RuleTarget:
    (rule,) = [
        r
        for r in translate(load_template())["Resources"].values()
        if r["Type"] == "AWS::Events::Rule" and "EventPattern" in r["Properties"]
    ]
    return RuleTarget("rule", resolve(rule["Properties"]["EventPattern"], references(LocalNames())), "CollectFunction")


def job_event(name: str = "dogbreed-20261121101200-ab12", status: str = "Completed") -> dict[str, Any]:
    event = load_event("collect_transform_completed.json")
    event["detail"].update(TransformJobName=name, TransformJobStatus=status)
    return event


@pytest.mark.parametrize(
    ("name", "status", "bucket", "delivered"),
    [
        ("dogbreed-20261121101200-ab12", "Completed", LocalNames().bucket, True),
        ("dogbreed-20261121101200-ab12", "Failed", LocalNames().bucket, True),
        ("dogbreed-20261121101200-ab12", "InProgress", LocalNames().bucket, False),
        ("someone-elses-job", "Completed", LocalNames().bucket, False),
        ("dogbreed-20261121101200-ab12", "Completed", "another-stacks-bucket", False),  # a second stack's job
    ],
)
def test_the_template_rule_takes_only_our_finished_jobs(name: str, status: str, bucket: str, delivered: bool) -> None:
    event = job_event(name, status)
    output = event["detail"]["TransformOutput"]
    output["S3OutputPath"] = output["S3OutputPath"].replace(LocalNames().bucket, bucket)
    assert matches(template_rule().pattern, event) is delivered


class Function:
    def __init__(self, *answers: Invocation) -> None:
        self.answers = list(answers)
        self.events: list[dict[str, Any]] = []

    def invoke(self, event: dict[str, Any]) -> Invocation:
        self.events.append(event)
        return self.answers.pop(0)


def test_a_function_error_is_retried_twice_then_the_event_goes_to_the_dead_letter_queue(aws: Aws) -> None:
    failing = Function(*[Invocation(False, error="ValueError: boom")] * 3)
    sqs = aws.clients["sqs"]
    dlq = aws.stack.job_events_dead_letter_queue_url
    bus = EventBus([template_rule()], {"CollectFunction": failing}, {"CollectFunction": dlq}, lambda _: sqs, (0.0, 0.0))
    bus.put(job_event())
    assert len(failing.events) == 3
    (message,) = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(message["Body"]) == job_event()


def test_a_retry_that_succeeds_sends_nothing_to_the_dead_letter_queue(aws: Aws) -> None:
    flaky = Function(Invocation(False, error="boom"), Invocation(True, {}))
    sqs = aws.clients["sqs"]
    dlq = aws.stack.job_events_dead_letter_queue_url
    EventBus([template_rule()], {"CollectFunction": flaky}, {"CollectFunction": dlq}, lambda _: sqs, (0.0, 0.0)).put(
        job_event()
    )
    assert len(flaky.events) == 2
    assert "Messages" not in sqs.receive_message(QueueUrl=dlq)
