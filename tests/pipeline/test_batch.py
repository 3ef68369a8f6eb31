"""Batch mode: the ingest function queues shards, the job builder starts jobs, the collector records every image."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from devstack.aws.lambda_runtime import LambdaContext
from pipeline.adapters.dynamodb import DynamoJobBook
from pipeline.handlers import build_jobs, collect, ingest
from pipeline.logic import collect as collect_logic
from pipeline.logic import ingest as ingest_logic
from pipeline.logic.downsize import downsize
from tests.conftest import Aws
from tests.fakes.sagemaker_runtime import REVIEW, fake_prediction
from tests.fakes.transform import run_transform_job
from tests.pipeline import images


@pytest.fixture
def function_env() -> dict[str, str]:
    return {"INFERENCE_MODE": "batch"}


def jobs(aws: Aws) -> list[str]:
    return [j["TransformJobName"] for j in aws.clients["sagemaker"].list_transform_jobs()["TransformJobSummaries"]]


def build(aws: Aws) -> dict[str, Any]:
    """Deliver what waits in the job queue to the job builder, as its event source does (which then
    deletes the messages it does not report failed)."""
    event = aws.receive_event(aws.stack.job_queue_url, visibility_timeout=0)
    response = build_jobs.lambda_handler(event, LambdaContext(function_name="BuildJobsFunction"))
    failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
    for record in event["Records"]:
        if record["messageId"] not in failed:
            aws.clients["sqs"].delete_message(QueueUrl=aws.stack.job_queue_url, ReceiptHandle=record["receiptHandle"])
    return response


def index(aws: Aws, job: str) -> list[list[str]]:
    """The image keys on each shard of a job, as its index names them."""
    body = aws.clients["s3"].get_object(Bucket=aws.bucket, Key=f"manifests/{job}.images.json")["Body"].read()
    return [[image["key"] for image in shard["images"]] for shard in json.loads(body)["shards"]]


def test_a_batch_is_queued_as_a_shard_then_built_into_a_multi_record_job(aws: Aws, context: LambdaContext) -> None:
    # GIVEN three images and one text file named .jpg
    good = {
        "incoming/a.jpg": images.jpeg(),
        "incoming/sub dir/b.png": images.png(),
        "incoming/c (1).jpg": images.jpeg(9, 9),
    }
    for key, data in good.items():
        aws.upload(key, data)
    aws.upload("incoming/notes.jpg", b"not an image at all")
    # WHEN one Lambda batch carries their notifications
    assert ingest.lambda_handler(aws.receive_event(), context) == {"batchItemFailures": []}
    # THEN the bad one is REJECTED at once; the valid ones wait in the job queue, without a record yet
    assert all(aws.item(key) is None for key in good)
    rejected = aws.item("incoming/notes.jpg")
    assert rejected is not None and rejected["status"] == "REJECTED" and rejected["error_code"] == "NotAnImage"
    assert jobs(aws) == []
    # AND WHEN the job builder drains the job queue
    assert build(aws) == {"batchItemFailures": []}
    # THEN one job reads the shard of valid images, many records per request
    (job,) = jobs(aws)
    assert re.fullmatch(r"dogbreed-\d{14}-[0-9a-f]{16}", job)
    assert index(aws, job) == [list(good)]
    spec = aws.clients["sagemaker"].describe_transform_job(TransformJobName=job)
    assert spec["ModelName"] == "dogbreed-resnet18"
    assert spec["TransformInput"]["SplitType"] == "Line" and spec["BatchStrategy"] == "MultiRecord"
    assert spec["TransformInput"]["ContentType"] == spec["TransformOutput"]["Accept"] == "application/jsonlines"
    assert spec["TransformOutput"]["AssembleWith"] == "Line"
    assert spec["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"] == "ManifestFile"
    assert spec["MaxPayloadInMB"] * spec["MaxConcurrentTransforms"] <= 100
    for key in good:
        assert aws.item(key)["job_name"] == job  # type: ignore[index]
    # AND the job is an item of the table, counted in flight
    book = DynamoJobBook(aws.clients["dynamodb"], aws.stack.names.table)
    item = book.get_many([job])[job]
    assert (item.status, item.images, item.attempt, item.shards) == ("InProgress", 3, 1, 1)
    assert book.in_flight() == [job]


def queue_and_build(aws: Aws, context: LambdaContext) -> str:
    ingest.lambda_handler(aws.receive_event(), context)
    build(aws)
    (job,) = jobs(aws)
    return job


def test_an_answer_under_its_threshold_is_queued_for_review_by_the_collector_as_by_the_endpoint(
    aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(REVIEW, "threshold", 0.7)  # the fake's answers are 0.6 sure
    aws.upload("incoming/rex.jpg", images.jpeg())
    job = queue_and_build(aws, context)
    collect.lambda_handler(run_transform_job(aws.clients, job), LambdaContext(function_name="collect"))
    rex = aws.item("incoming/rex.jpg")
    assert rex is not None and rex["status"] == "CLASSIFIED" and rex["mode"] == "batch"
    assert rex["review"].startswith("needs-review#") and float(rex["threshold"]) == 0.7


def test_collector_records_each_image_of_a_completed_job(aws: Aws, context: LambdaContext) -> None:
    data = images.jpeg()
    aws.upload("incoming/rex.jpg", data)
    aws.upload("incoming/truncated.jpg", images.truncated_jpeg())  # header is fine: only the model finds out
    job = queue_and_build(aws, context)
    event = run_transform_job(aws.clients, job)
    response = collect.lambda_handler(event, LambdaContext(function_name="collect"))
    assert response == {"job_name": job, "job_status": "Completed", "recorded": 2}
    book = DynamoJobBook(aws.clients["dynamodb"], aws.stack.names.table)
    assert book.get_many([job])[job].status == "Completed" and book.in_flight() == []
    rex = aws.item("incoming/rex.jpg")
    assert rex is not None and rex["status"] == "CLASSIFIED" and rex["mode"] == "batch" and rex["job_name"] == job
    assert rex["breed"] == fake_prediction(data).class_name
    bad = aws.item("incoming/truncated.jpg")
    assert bad is not None and bad["status"] == "REJECTED" and bad["error_code"] == "InvalidImage"
    assert "decode" in bad["reason"]


def test_a_failed_request_fails_only_its_own_image_after_its_neighbours_are_retried_alone(
    aws: Aws, context: LambdaContext
) -> None:
    # GIVEN three photos in one shard, and a model container that fails every request holding b
    photos = {f"incoming/{name}.jpg": images.jpeg(color=(ord(name), 0, 0)) for name in ("a", "b", "c")}
    for key, data in photos.items():
        aws.upload(key, data)
    ingest.lambda_handler(aws.receive_event(), context)
    reasons = []
    for attempt in range(1, collect_logic.MAX_JOB_ATTEMPTS + 1):
        # WHEN the job builder builds a job of what waits and the job fails on b
        before = set(jobs(aws))
        build(aws)
        (job,) = set(jobs(aws)) - before
        event = run_transform_job(aws.clients, job, fail_for=photos["incoming/b.jpg"])
        assert event["detail"]["TransformJobStatus"] == "Failed"
        collect.lambda_handler(event, LambdaContext(function_name="collect"))
        shards = index(aws, job)
        if attempt == 1:  # THEN first the whole shard failed, and each image went back alone
            assert shards == [list(photos)]
            assert {aws.item(key)["status"] for key in photos} == {"PENDING"}  # type: ignore[index]
        else:  # AND in the next job each image is a file of its own: only b's fails
            assert sorted(shards) == [[key] for key in sorted(photos) if attempt == 2 or key == "incoming/b.jpg"]
            for key in ("incoming/a.jpg", "incoming/c.jpg"):
                item = aws.item(key)
                assert item is not None and item["status"] == "CLASSIFIED" and item["mode"] == "batch"
        reasons.append(aws.item("incoming/b.jpg")["reason"])  # type: ignore[index]
    # AND b is FAILED with the job's reason after the documented attempts, never waiting again
    item = aws.item("incoming/b.jpg")
    assert item is not None and item["status"] == "FAILED" and item["error_code"] == "JobFailed"
    assert "AlgorithmError" in item["reason"] and job in item["reason"] and "attempt 3 of 3" in item["reason"]
    assert item["problem_status"] == "FAILED"
    assert "attempt 2 of 3" in reasons[0] and "attempt 3 of 3" in reasons[1]
    assert aws.receive_event(aws.stack.job_queue_url, visibility_timeout=0)["Records"] == []


def test_collecting_twice_writes_nothing_new(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    event = run_transform_job(aws.clients, queue_and_build(aws, context))
    collect.lambda_handler(event, LambdaContext(function_name="collect"))
    first = aws.item("incoming/rex.jpg")
    assert collect.lambda_handler(event, LambdaContext(function_name="collect"))["recorded"] == 0
    assert aws.item("incoming/rex.jpg") == first


def test_a_job_does_not_overwrite_newer_content(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    old_job = queue_and_build(aws, context)
    event = run_transform_job(aws.clients, old_job)
    new_etag = aws.upload("incoming/rex.jpg", images.png())  # re-uploaded while the job ran
    ingest.lambda_handler(aws.receive_event(), context)
    build(aws)  # the new content joins a job of its own
    collect.lambda_handler(event, LambdaContext(function_name="collect"))
    item = aws.item("incoming/rex.jpg")
    assert item is not None and item["etag"] == new_etag and item["status"] == "PENDING"
    assert item.get("job_name") != old_job


def test_a_duplicate_event_while_in_a_job_starts_no_second_job(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    event = aws.receive_event()
    ingest.lambda_handler(event, context)
    build(aws)
    assert ingest.lambda_handler(event, context) == {"batchItemFailures": []}
    build(aws)
    assert len(jobs(aws)) == 1


def test_a_photo_over_the_payload_limit_is_classified_from_its_downsized_copy(aws: Aws, context: LambdaContext) -> None:
    data = images.photo(4000, 3000)  # 6.4 MB: over the 6 MB request of TransformMaxPayloadMB's default
    aws.upload("incoming/phone.jpg", data)
    job = queue_and_build(aws, context)
    collect.lambda_handler(run_transform_job(aws.clients, job), LambdaContext(function_name="collect"))
    item = aws.item("incoming/phone.jpg")
    assert item is not None and item["status"] == "CLASSIFIED" and item["job_name"] == job
    assert item["size"] == len(data)  # the record is of the upload; the model saw its copy
    copy = downsize(data, max_pixels=50_000_000, max_bytes=4_000_000).data
    assert item["breed"] == fake_prediction(copy).class_name


def test_an_object_over_the_largest_image_is_rejected_before_the_shard(
    aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_logic, "LARGEST_IMAGE_BYTES", 6_000_000)
    aws.upload("incoming/huge.png", images.png()[:-12] + b"\x00" * 6_100_000)
    ingest.lambda_handler(aws.receive_event(), context)
    assert build(aws) == {"batchItemFailures": []}
    assert jobs(aws) == []
    item = aws.item("incoming/huge.png")
    assert item is not None and item["status"] == "REJECTED" and item["error_code"] == "TooLarge"
    assert "6,000,000-byte limit for an image" in item["reason"]


def test_a_quota_refusal_leaves_the_shard_waiting_with_the_reason(aws: Aws, context: LambdaContext) -> None:
    """moto's SageMaker answers ResourceLimitExceeded, as an account out of transform instances does."""
    from devstack.aws.transform import limit_jobs_in_flight

    aws.upload("incoming/rex.jpg", images.jpeg())
    ingest.lambda_handler(aws.receive_event(), context)
    undo = limit_jobs_in_flight(0)
    try:
        response = build(aws)
    finally:
        undo()
    assert len(response["batchItemFailures"]) == 1  # back to the job queue, not failed
    item = aws.item("incoming/rex.jpg")
    assert item is not None and item["status"] == "PENDING" and "ResourceLimitExceeded" in item["reason"]
    assert "'ml.c6i.xlarge for transform job usage'" in item["reason"]  # the quota of the job's instance type
    assert jobs(aws) == []


class TestAutoMode:
    @pytest.fixture
    def function_env(self) -> dict[str, str]:
        return {"INFERENCE_MODE": "auto", "AUTO_BATCH_THRESHOLD": "3"}

    def test_a_small_batch_goes_serverless(self, aws: Aws, context: LambdaContext) -> None:
        for i in range(2):
            aws.upload(f"incoming/{i}.jpg", images.jpeg(color=(i, 0, 0)))
        ingest.lambda_handler(aws.receive_event(), context)
        assert jobs(aws) == []
        assert {aws.item(f"incoming/{i}.jpg")["mode"] for i in range(2)} == {"serverless"}  # type: ignore[index]

    def test_a_large_batch_goes_to_batch_transform(self, aws: Aws, context: LambdaContext) -> None:
        for i in range(3):
            aws.upload(f"incoming/{i}.jpg", images.jpeg(color=(i, 0, 0)))
        ingest.lambda_handler(aws.receive_event(), context)
        build(aws)
        assert len(jobs(aws)) == 1
        assert aws.runtime.calls == []

    def test_an_image_over_the_serverless_limit_is_classified_serverless_downsized(
        self, aws: Aws, context: LambdaContext
    ) -> None:
        aws.upload("incoming/small.jpg", images.jpeg())
        aws.upload("incoming/big.jpg", images.photo(4000, 3000))  # 6.4 MB, over the endpoint's 4 MB
        ingest.lambda_handler(aws.receive_event(), context)
        build(aws)
        assert jobs(aws) == []  # no job, and no wait for one
        for key in ("incoming/small.jpg", "incoming/big.jpg"):
            item = aws.item(key)
            assert item is not None and (item["mode"], item["status"]) == ("serverless", "CLASSIFIED")
        assert max(call["size"] for call in aws.runtime.calls) < 4_000_000  # the requests the endpoint got


def test_starting_a_job_twice_is_quiet(aws: Aws) -> None:
    """A retried CreateTransformJob whose first attempt got through: SageMaker refuses the name again."""
    from botocore.awsrequest import AWSResponse

    from pipeline.adapters.clients import client

    jobs_api = build_jobs.build_jobs().transforms  # the job builder's own adapter, from its environment
    jobs_api.start("dogbreed-20261121000000-0123456789abcdef", f"s3://{aws.bucket}/manifests/x.json", "s3://b/out/")

    class Raw:
        def stream(self, **_: Any) -> Any:
            message = "Job name must be unique within an AWS account and region, and a job with this name exists"
            yield json.dumps({"__type": "ValidationException", "message": message}).encode()

    def refuse(request: Any, **_: Any) -> AWSResponse:
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, Raw())

    client("sagemaker").meta.events.register("before-send.sagemaker.CreateTransformJob", refuse)
    jobs_api.start("dogbreed-20261121000000-0123456789abcdef", f"s3://{aws.bucket}/manifests/x.json", "s3://b/out/")
    assert jobs(aws) == ["dogbreed-20261121000000-0123456789abcdef"]
