"""Transient failures are retried with backoff; if they persist the message goes back to the
queue and finally to the DLQ, and the image still gets a visible outcome."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

import answers
from devstack.aws.lambda_runtime import LambdaContext
from pipeline.adapters.dynamodb import DynamoPredictions
from pipeline.adapters.retry import Backoff
from pipeline.handlers import build_jobs, ingest
from pipeline.logic import ingest as ingest_logic
from pipeline.logic.errors import TransientError
from tests.conftest import Aws
from tests.pipeline import images


@pytest.fixture
def function_env() -> dict[str, str]:
    return {"INFERENCE_MODE": "serverless"}


@pytest.mark.parametrize("fault", ["throttle", "cold", "crash"])
def test_a_passing_fault_is_retried_with_backoff(
    aws: Aws, context: LambdaContext, backoff_waits: list[float], fault: str
) -> None:
    # GIVEN an endpoint that throttles (HTTP 400 ThrottlingException) or faults (ModelError 5xx) twice
    aws.upload("incoming/rex.jpg", images.jpeg())
    aws.runtime.fail_next(fault, fault)
    # WHEN the image is processed
    assert ingest.lambda_handler(aws.receive_event(), context) == {"batchItemFailures": []}
    # THEN the third attempt succeeded after two backoff waits
    assert len(aws.runtime.calls) == 3
    assert len(backoff_waits) == 2
    assert aws.item("incoming/rex.jpg")["status"] == "CLASSIFIED"  # type: ignore[index]


def test_a_persistent_fault_returns_the_message_to_the_queue(
    aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_logic, "IMAGES_PER_REQUEST", 1)  # a call an image: one call's fault, one image
    aws.upload("incoming/rex.jpg", images.jpeg())
    aws.upload("incoming/ok.png", images.png())
    event = aws.receive_event()
    rex = next(r["messageId"] for r in event["Records"] if "rex" in r["body"])
    event["Records"].sort(key=lambda r: r["messageId"] == rex)  # ok.png first, then rex.jpg
    aws.runtime.fail_next("none")  # ok.png's call succeeds ('none' is no fault) ...
    aws.runtime.fail_always("throttle")  # ... and every call for rex.jpg is throttled
    response = ingest.lambda_handler(event, context)
    # THEN only rex.jpg's message returns to the queue, after every in-place attempt
    assert response == {"batchItemFailures": [{"itemIdentifier": rex}]}
    assert len(aws.runtime.calls) == 1 + Backoff().attempts
    assert aws.item("incoming/rex.jpg") is None  # not the last delivery: no outcome yet
    assert aws.item("incoming/ok.png")["status"] == "CLASSIFIED"  # type: ignore[index]


def test_retries_exhausted_end_in_the_dlq_with_a_failed_record(aws: Aws, context: LambdaContext) -> None:
    # GIVEN an endpoint that crashes on every call
    aws.upload("incoming/rex.jpg", images.jpeg())
    aws.runtime.fail_always("crash")
    max_receives = 5  # template.yaml's MaxReceiveCount default, which the fixture's environment carries
    # WHEN Lambda receives the message again and again, as the queue redelivers it
    for delivery in range(1, max_receives + 1):
        event = aws.receive_event(visibility_timeout=0)
        assert len(event["Records"]) == 1
        assert event["Records"][0]["attributes"]["ApproximateReceiveCount"] == str(delivery)
        response = ingest.lambda_handler(event, context)
        assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
        item = aws.item("incoming/rex.jpg")
        # THEN no outcome before the last delivery, and FAILED with the reason on the last one
        assert (item is None) == (delivery < max_receives)
    assert aws.receive_event(visibility_timeout=0)["Records"] == []
    assert len(aws.receive_event(aws.stack.dead_letter_queue_url)["Records"]) == 1
    item = aws.item("incoming/rex.jpg")
    assert item is not None and item["status"] == "FAILED" and item["error_code"] == "RetriesExhausted"
    assert "dead-letter queue" in item["reason"] and "ModelError" in item["reason"]


def test_a_redriven_message_is_classified_once_the_endpoint_recovers(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    event = aws.receive_event()
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "5"
    aws.runtime.fail_always("crash")
    ingest.lambda_handler(event, context)
    assert aws.item("incoming/rex.jpg")["status"] == "FAILED"  # type: ignore[index]
    # WHEN the endpoint works again and the message is redriven from the DLQ (receive count restarts)
    aws.runtime.reset()
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "1"
    assert ingest.lambda_handler(event, context) == {"batchItemFailures": []}
    assert aws.item("incoming/rex.jpg")["status"] == "CLASSIFIED"  # type: ignore[index]


def test_an_unknown_endpoint_is_not_retried_in_place_but_fails_the_message(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    event = aws.receive_event()
    container = aws.runtime.endpoints.pop("dogbreed-serverless")
    try:
        response = ingest.lambda_handler(event, context)
    finally:
        aws.runtime.endpoints["dogbreed-serverless"] = container
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert len(aws.runtime.calls) == 1


class _UnprocessedFirst:
    """A DynamoDB client that leaves every key unprocessed on the first `times` BatchGetItem calls."""

    def __init__(self, client: Any, times: int) -> None:
        self.client, self.times, self.calls = client, times, 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.calls += 1
        if self.calls <= self.times:
            return {"Responses": {}, "UnprocessedKeys": RequestItems}
        return dict(self.client.batch_get_item(RequestItems=RequestItems))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_unprocessed_batch_keys_are_retried(aws: Aws, context: LambdaContext, backoff_waits: list[float]) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    event = aws.receive_event()
    ingest.lambda_handler(event, context)
    flaky = _UnprocessedFirst(aws.clients["dynamodb"], times=2)
    store = DynamoPredictions(flaky, aws.stack.names.table)
    found = store.get_many([f"{aws.bucket}/incoming/rex.jpg"])
    assert list(found) == [f"{aws.bucket}/incoming/rex.jpg"]
    assert flaky.calls == 3
    assert len(backoff_waits) == 2


def test_keys_left_unprocessed_for_good_raise_a_transient_error(aws: Aws) -> None:
    store = DynamoPredictions(_UnprocessedFirst(aws.clients["dynamodb"], times=99), aws.stack.names.table, Backoff(3))
    with pytest.raises(TransientError, match="unprocessed"):
        store.get_many([f"{aws.bucket}/incoming/rex.jpg"])


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def sagemaker_throttling() -> AWSResponse:
    """What SageMaker answers a call over its rate: HTTP 400 ThrottlingException."""
    body = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
    return AWSResponse("https://sagemaker", 400, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body))


def test_dynamodb_throttling_is_retried_by_the_client(aws: Aws, context: LambdaContext) -> None:
    # GIVEN DynamoDB throttles the first two writes (botocore's standard retry mode handles it)
    from pipeline.adapters.clients import client

    throttled: list[str] = []

    def throttle(request: Any, **_: Any) -> AWSResponse | None:
        if len(throttled) >= 2:
            return None
        throttled.append(request.url)
        body = b'{"__type":"ProvisionedThroughputExceededException","message":"slow down"}'
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(body))

    client("dynamodb").meta.events.register("before-send.dynamodb.PutItem", throttle)
    aws.upload("incoming/rex.jpg", images.jpeg())
    # WHEN the image is classified
    assert ingest.lambda_handler(aws.receive_event(), context) == {"batchItemFailures": []}
    # THEN the write went through after the throttled attempts
    assert len(throttled) == 2
    assert aws.item("incoming/rex.jpg")["status"] == "CLASSIFIED"  # type: ignore[index]


def test_a_transform_job_that_is_throttled_waits_and_is_built_on_the_next_delivery(
    aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERENCE_MODE", "batch")
    ingest.build_ingest.cache_clear()
    aws.upload("incoming/rex.jpg", images.jpeg())
    ingest.lambda_handler(aws.receive_event(), context)
    event = aws.receive_event(aws.stack.job_queue_url)
    sagemaker = boto3.client("sagemaker")
    from pipeline.adapters.clients import client

    def refuse(**_: Any) -> AWSResponse:
        return sagemaker_throttling()

    client("sagemaker").meta.events.register("before-send.sagemaker.CreateTransformJob", refuse)
    # WHEN CreateTransformJob keeps being throttled
    response = build_jobs.lambda_handler(event, LambdaContext(function_name="BuildJobsFunction"))
    # THEN the shard goes back to the job queue and the image waits PENDING with the reason
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    pending = aws.item("incoming/rex.jpg")
    assert pending is not None and pending["status"] == "PENDING" and "ThrottlingException" in pending["reason"]
    assert sagemaker.list_transform_jobs()["TransformJobSummaries"] == []
    # AND the next delivery starts its job
    client("sagemaker").meta.events.unregister("before-send.sagemaker.CreateTransformJob", refuse)
    assert build_jobs.lambda_handler(event, LambdaContext(function_name="BuildJobsFunction")) == {
        "batchItemFailures": []
    }
    (job,) = sagemaker.list_transform_jobs()["TransformJobSummaries"]
    assert aws.item("incoming/rex.jpg")["job_name"] == job["TransformJobName"]  # type: ignore[index]


def throttle_twice(operation: str) -> list[str]:
    """Make the next two calls of a SageMaker operation answer ThrottlingException (HTTP 400)."""
    from pipeline.adapters.clients import client

    throttled: list[str] = []

    def refuse(**_: Any) -> AWSResponse | None:
        if len(throttled) == 2:
            return None  # sent as usual
        throttled.append(operation)
        return sagemaker_throttling()

    client("sagemaker").meta.events.register(f"before-send.sagemaker.{operation}", refuse)
    return throttled


def test_a_throttled_describe_is_retried_like_every_sagemaker_call(aws: Aws, backoff_waits: list[float]) -> None:
    jobs = build_jobs.build_jobs().transforms  # the job builder's own adapter, from its environment
    jobs.start("dogbreed-20261201000000-0123456789abcdef", f"s3://{aws.bucket}/manifests/x.json", "s3://b/out/")
    throttled = throttle_twice("DescribeTransformJob")
    assert jobs.status("dogbreed-20261201000000-0123456789abcdef") == "InProgress"  # as SageMaker starts a job
    assert len(throttled) == 2 and len(backoff_waits) == 2
    assert jobs.status("dogbreed-20261201000000-ffffffffffffffff") is None  # an unknown job is not retried
    assert len(backoff_waits) == 2


def test_a_failed_request_of_several_images_sends_them_all_back_and_records_none(
    aws: Aws, context: LambdaContext
) -> None:
    """Several images go in one InvokeEndpoint (JSON Lines): a call that fails every attempt returns every
    one of its images' messages, none with an outcome before its last delivery."""
    for name in ("a", "b", "c"):
        aws.upload(f"incoming/{name}.jpg", images.jpeg(color=(len(name) * 40, 90, 30)))
    event = aws.receive_event()
    aws.runtime.fail_always("crash")
    response = ingest.lambda_handler(event, context)
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted(
        r["messageId"] for r in event["Records"]
    )
    assert len(aws.runtime.calls) == Backoff().attempts  # one request, tried in place, for the three
    assert {call["content_type"] for call in aws.runtime.calls} == {answers.JSON_LINES}
    assert all(aws.item(f"incoming/{name}.jpg") is None for name in ("a", "b", "c"))
