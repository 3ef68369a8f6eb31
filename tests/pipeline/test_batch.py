"""Batch mode: one transform job per Lambda batch, then the collector records every image."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from devstack.lambda_runtime import LambdaContext
from pipeline.handlers import collect, ingest
from tests.conftest import Aws
from tests.fakes.sagemaker_runtime import fake_prediction
from tests.fakes.transform import run_transform_job
from tests.pipeline import images


@pytest.fixture
def function_env() -> dict[str, str]:
    return {"INFERENCE_MODE": "batch"}


def jobs(aws: Aws) -> list[str]:
    return [j["TransformJobName"] for j in aws.clients["sagemaker"].list_transform_jobs()["TransformJobSummaries"]]


def manifest(aws: Aws, job: str) -> list[Any]:
    body = aws.clients["s3"].get_object(Bucket=aws.bucket, Key=f"manifests/{job}.json")["Body"].read()
    return list(json.loads(body))


def test_one_job_per_batch_with_only_valid_images(aws: Aws, context: LambdaContext) -> None:
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
    # THEN one job is started whose manifest lists only the valid images
    (job,) = jobs(aws)
    assert len(job) <= 63
    assert re.fullmatch(r"dogbreed-\d{14}-[0-9a-f]{16}", job)
    assert manifest(aws, job)[0] == {"prefix": f"s3://{aws.bucket}/incoming/"}
    assert sorted(manifest(aws, job)[1:]) == sorted(k.removeprefix("incoming/") for k in good)
    spec = aws.clients["sagemaker"].describe_transform_job(TransformJobName=job)
    assert spec["ModelName"] == "dogbreed-resnet18"
    assert spec["TransformInput"]["SplitType"] == "None"
    assert spec["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"] == "ManifestFile"
    assert spec["Environment"] == {"BAD_INPUT_POLICY": "record"}
    assert spec["MaxPayloadInMB"] * spec["MaxConcurrentTransforms"] <= 100
    # AND the images wait as PENDING in that job; the bad one is REJECTED at once
    for key in good:
        item = aws.item(key)
        assert item is not None and item["status"] == "PENDING" and item["job_name"] == job
    rejected = aws.item("incoming/notes.jpg")
    assert rejected is not None and rejected["status"] == "REJECTED" and rejected["error_code"] == "NotAnImage"


def test_collector_records_each_image_of_a_completed_job(aws: Aws, context: LambdaContext) -> None:
    data = images.jpeg()
    aws.upload("incoming/rex.jpg", data)
    aws.upload("incoming/truncated.jpg", images.truncated_jpeg())  # header is fine: only the model finds out
    ingest.lambda_handler(aws.receive_event(), context)
    (job,) = jobs(aws)
    event = run_transform_job(aws.clients, job)
    response = collect.lambda_handler(event, LambdaContext(function_name="collect"))
    assert response == {"job_name": job, "job_status": "Completed", "recorded": 2}
    rex = aws.item("incoming/rex.jpg")
    assert rex is not None and rex["status"] == "CLASSIFIED" and rex["mode"] == "batch" and rex["job_name"] == job
    assert rex["breed"] == fake_prediction(data).class_name
    bad = aws.item("incoming/truncated.jpg")
    assert bad is not None and bad["status"] == "REJECTED" and bad["error_code"] == "InvalidImage"
    assert "decode" in bad["reason"]


def test_a_failed_job_marks_every_unfinished_image_failed_with_the_reason(aws: Aws, context: LambdaContext) -> None:
    photos = {f"incoming/{name}.jpg": images.jpeg(color=(ord(name), 0, 0)) for name in ("a", "b", "c")}
    for key, data in photos.items():
        aws.upload(key, data)
    ingest.lambda_handler(aws.receive_event(), context)
    (job,) = jobs(aws)
    keys = ["incoming/" + k for k in manifest(aws, job)[1:]]
    event = run_transform_job(aws.clients, job, fail_for=photos[keys[1]])
    collect.lambda_handler(event, LambdaContext(function_name="collect"))
    first, second, third = (aws.item(k) for k in keys)
    assert first is not None and first["status"] == "CLASSIFIED"  # its output was written before the failure
    for item in (second, third):
        assert item is not None and item["status"] == "FAILED" and item["error_code"] == "JobFailed"
        assert "AlgorithmError" in item["reason"] and job in item["reason"]
        assert item["problem_status"] == "FAILED"


def test_collecting_twice_writes_nothing_new(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    ingest.lambda_handler(aws.receive_event(), context)
    event = run_transform_job(aws.clients, jobs(aws)[0])
    collect.lambda_handler(event, LambdaContext(function_name="collect"))
    first = aws.item("incoming/rex.jpg")
    assert collect.lambda_handler(event, LambdaContext(function_name="collect"))["recorded"] == 0
    assert aws.item("incoming/rex.jpg") == first


def test_a_job_does_not_overwrite_newer_content(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    ingest.lambda_handler(aws.receive_event(), context)
    (old_job,) = jobs(aws)
    event = run_transform_job(aws.clients, old_job)
    new_etag = aws.upload("incoming/rex.jpg", images.png())  # re-uploaded while the job ran
    ingest.lambda_handler(aws.receive_event(), context)
    collect.lambda_handler(event, LambdaContext(function_name="collect"))
    item = aws.item("incoming/rex.jpg")
    assert item is not None and item["etag"] == new_etag and item["status"] == "PENDING"
    assert item["job_name"] != old_job


def test_a_duplicate_event_while_pending_starts_no_second_job(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    event = aws.receive_event()
    ingest.lambda_handler(event, context)
    assert ingest.lambda_handler(event, context) == {"batchItemFailures": []}
    assert len(jobs(aws)) == 1


def test_an_oversize_image_is_rejected_before_the_job(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/huge.png", images.png()[:-12] + b"\x00" * 6_100_000)
    ingest.lambda_handler(aws.receive_event(), context)
    assert jobs(aws) == []
    item = aws.item("incoming/huge.png")
    assert item is not None and item["status"] == "REJECTED" and item["error_code"] == "TooLarge"


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
        assert len(jobs(aws)) == 1
        assert aws.runtime.calls == []

    def test_an_image_over_the_serverless_limit_goes_to_batch(self, aws: Aws, context: LambdaContext) -> None:
        aws.upload("incoming/small.jpg", images.jpeg())
        aws.upload("incoming/big.png", images.png()[:-12] + b"\x00" * 4_500_000)
        ingest.lambda_handler(aws.receive_event(), context)
        assert aws.item("incoming/small.jpg")["mode"] == "serverless"  # type: ignore[index]
        big = aws.item("incoming/big.png")
        assert big is not None and big["mode"] == "batch" and big["status"] == "PENDING"


def test_starting_a_job_twice_is_quiet(aws: Aws) -> None:
    """A retried CreateTransformJob whose first attempt got through: SageMaker refuses the name again."""
    from botocore.awsrequest import AWSResponse

    from pipeline.adapters.clients import client
    from pipeline.adapters.sagemaker import TransformJobs

    jobs_api = TransformJobs(
        client("sagemaker"),
        model_name="dogbreed-resnet18",
        instance_type="ml.m5.xlarge",
        instance_count=1,
        max_payload_mb=6,
    )
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
