"""The local stack when things go wrong, as they do on AWS: a request over TorchServe's limit, a flood
beyond the account's transform quota, an upload deleted before it is read, an endpoint that keeps failing."""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from tests.pipeline import images
from tests.stack.conftest import StartStack, outcomes, queue_is_empty, upload, wait_until
from tests.stack.test_stack import photos

pytestmark = pytest.mark.slow  # starts the local stack


def large_photo(seed: int) -> bytes:
    """A 1200 x 900 JPEG of noise: about 0.9 MB, 1.2 MB as a base64 record."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((1200, 900), 60 + seed).convert("RGB").save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def test_a_request_over_torchserves_limit_fails_its_job_and_its_images_are_retried_alone(
    start_stack: StartStack,
) -> None:
    """Under TorchServe's default max_request_size (6,553,500 bytes; the template raises it to the
    largest request SageMaker sends), a multi-record request packed to MaxPayloadInMB=10 gets a 413
    before the handler runs, and the job fails as SageMaker's does; each image, retried alone, fits."""
    stack = start_stack(
        InferenceMode="batch",
        TransformMaxPayloadMB="10",
        BatchingWindowSeconds="5",  # the eight uploads in one shard, which is one request
        model_environment={"TS_MAX_REQUEST_SIZE": "6553500"},
    )
    large = {f"incoming/large/{n}.jpg": large_photo(n) for n in range(8)}
    assert 6_553_500 < sum(len(photo) for photo in large.values()) * 4 / 3 < 10 * 1_048_576
    found = outcomes(stack, stack.upload(large), timeout_s=240)
    assert {found[key]["status"] for key in large} == {"CLASSIFIED"}
    assert stack.runner is not None
    reasons = [e["detail"].get("FailureReason", "") for e in stack.runner.finished]
    assert any("answered 413" in reason for reason in reasons), reasons


def test_a_flood_beyond_the_transform_quota_waits_for_capacity_and_loses_nothing(start_stack: StartStack) -> None:
    """The account can run one job (moto answers ResourceLimitExceeded beyond it): a flood that
    needs three jobs runs them one after the other, and every image gets its outcome."""
    stack = start_stack(
        visibility_timeout_s=4,  # a waiting shard comes back after this
        transform_quota=1,
        InferenceMode="batch",
        BatchSize="10",
        MaxImagesPerJob="10",
        MaxTransformJobsInFlight="3",  # above the quota: SageMaker's refusal is what makes images wait
    )
    flood = {f"incoming/flood/{n:02d}.jpg": images.jpeg(color=(n * 8, 60, 90)) for n in range(30)}
    found = outcomes(stack, upload(stack, flood), timeout_s=180)
    assert set(found) == set(flood)
    assert {(item["status"], item["mode"]) for item in found.values()} == {("CLASSIFIED", "batch")}
    assert stack.runner is not None and len(stack.runner.finished) >= 3  # ceil(30 / MaxImagesPerJob)
    jobs = stack.runner.job_records.values()
    assert sum(jobs) == 30 and max(jobs) <= 10  # each image classified once, no job over the maximum
    builder_log = (stack.logs / "BuildJobsFunction.log").read_text()
    assert "ResourceLimitExceeded" in builder_log  # some shards did wait for capacity
    assert stack.resources is not None
    assert queue_is_empty(stack, stack.resources.job_dead_letter_queue_url)


def test_an_upload_deleted_before_processing_is_rejected_though_s3_answers_403(start_stack: StartStack) -> None:
    """The ingest function's role may list only incoming/ (a prefix-conditioned grant), so the local
    S3 answers its read of a deleted upload 403, as S3 may; the upload is still REJECTED as deleted."""
    import boto3
    from botocore.exceptions import ClientError

    stack = start_stack(InferenceMode="serverless", BatchingWindowSeconds="5")
    as_ingest = boto3.client(
        "s3", endpoint_url=stack.endpoint_url, region_name="us-east-1",
        aws_access_key_id="IngestFunction", aws_secret_access_key="local",
    )  # fmt: skip
    with pytest.raises(ClientError) as refused:
        as_ingest.get_object(Bucket=stack.names.bucket, Key="incoming/never-uploaded.jpg")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    etags = upload(stack, {"incoming/gone.jpg": images.jpeg()})
    stack.client("s3").delete_object(Bucket=stack.names.bucket, Key="incoming/gone.jpg")  # within the window
    found = outcomes(stack, etags)["incoming/gone.jpg"]
    assert (found["status"], found["error_code"]) == ("REJECTED", "ObjectDeleted")
    assert stack.resources is not None and queue_is_empty(stack, stack.resources.dead_letter_queue_url)


def test_a_persistently_failing_endpoint_ends_in_the_dlq_with_a_failed_record(
    start_stack: StartStack, dataset: Path
) -> None:
    # Retries come after the visibility timeout, shortened from the template's 12 minutes, but still
    # longer than one invocation lasts (else a message is received again while it is being handled).
    stack = start_stack(visibility_timeout_s=8, InferenceMode="serverless", MaxReceiveCount="2")
    assert stack.runtime is not None and stack.resources is not None
    stack.runtime.endpoints["dogbreed-serverless"] = lambda body, content_type, accept: (
        500, "text/plain", b"CUDA error: device-side assert triggered"
    )  # fmt: skip
    good = dict(list(photos(dataset).items())[:2])
    etags = upload(stack, {key: data for key, (data, _) in good.items()})
    found = outcomes(stack, etags, timeout_s=90)
    assert set(found) == set(good)
    for item in found.values():
        assert item["status"] == "FAILED" and item["error_code"] == "RetriesExhausted", item
        assert "dead-letter queue" in str(item["reason"]) and item["problem_status"] == "FAILED"
    sqs, dead = stack.client("sqs"), []

    def both_in_the_dlq() -> bool:
        messages = sqs.receive_message(
            QueueUrl=stack.resources.dead_letter_queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60
        ).get("Messages", [])
        dead.extend(json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"] for m in messages)
        return len(dead) >= len(good)

    assert wait_until(both_in_the_dlq, timeout_s=60)
    assert sorted(unquote_plus(key) for key in dead) == sorted(good)
