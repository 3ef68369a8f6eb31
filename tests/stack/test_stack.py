"""The whole system on the local stack: real handlers in their own processes, the real model in
its container, moto as AWS, driven only by uploads to the bucket."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

import answers
from devstack.aws.stack import Stack
from pipeline.logic.s3uri import S3Uri
from tests.pipeline import images
from tests.stack.conftest import StartStack, outcomes, queue_is_empty, upload, wait_until

pytestmark = pytest.mark.slow  # starts the local stack

BAD = {
    "incoming/bad/notes.jpg": (b"shopping list: kibble, leash\n", "NotAnImage"),
    "incoming/bad/empty.jpg": (b"", "EmptyObject"),
    "incoming/bad/half a dog.jpg": (images.truncated_jpeg(), "InvalidImage"),
}


Photos = dict[str, tuple[bytes, str]]


def photos(dataset: Path) -> Photos:
    """Two held-out photos per breed under names with spaces and unicode: key -> (bytes, breed)."""
    return {
        f"incoming/{folder.name[4:].replace('_', ' ')} é {n}.jpg": (path.read_bytes(), folder.name[4:])
        for folder in sorted((dataset / "test").iterdir())
        for n, path in enumerate(sorted(folder.glob("*.jpg"))[:2])
    }


def phone_photo(good: Photos) -> Photos:
    """A 48-megapixel, 25 MB phone JPEG (stored sideways, EXIF orientation 6) of the first photo's dog."""
    data, breed = next(iter(good.values()))
    return {"incoming/phone/IMG_0001.jpg": (images.photo(subject=data, orientation=6), breed)}


def run_mode(start_stack: StartStack, dataset: Path, mode: str) -> tuple[Stack, dict[str, dict[str, Any]], Photos]:
    """Upload photos, a 25 MB phone photo and bad files to a stack in `mode`; every upload gets its
    outcome, the photos CLASSIFIED in that mode (the model right on at least 80%), the bad files
    REJECTED with a reason."""
    stack = start_stack(InferenceMode=mode)
    good = photos(dataset)
    good.update(phone_photo(good))
    assert len(good["incoming/phone/IMG_0001.jpg"][0]) > 25_000_000
    etags = upload(stack, {key: data for key, (data, _) in {**good, **BAD}.items()})
    found = outcomes(stack, etags)
    assert set(found) == set(etags)
    for key in good:
        assert found[key]["status"] == "CLASSIFIED" and found[key]["mode"] == mode, found[key]
    right = sum(found[key]["breed"] == breed for key, (_, breed) in good.items())
    assert right / len(good) >= 0.8, {k: found[k]["breed"] for k in good}
    for key, (_, code) in BAD.items():
        assert found[key]["status"] == "REJECTED" and found[key]["error_code"] == code and found[key]["reason"]
    return stack, found, good


def test_serverless_mode_end_to_end(start_stack: StartStack, dataset: Path) -> None:
    stack, _, good = run_mode(start_stack, dataset, "serverless")
    assert stack.runtime is not None and stack.runtime.answered["dogbreed-serverless"] >= len(good)
    assert max(stack.pollers[0].batch_sizes) <= 100  # the template's BatchSize


def test_batch_mode_end_to_end(start_stack: StartStack, dataset: Path) -> None:
    stack, found, good = run_mode(start_stack, dataset, "batch")
    sagemaker, s3 = stack.client("sagemaker"), stack.client("s3")
    answered: dict[str, answers.Answer] = {}
    for job in {found[key]["job_name"] for key in good}:
        assert sagemaker.describe_transform_job(TransformJobName=job)["TransformJobStatus"] == "Completed"
        index = json.loads(s3.get_object(Bucket=stack.names.bucket, Key=f"manifests/{job}.images.json")["Body"].read())
        for shard in index["shards"]:  # SageMaker's layout: <S3OutputPath>/<shard under the manifest prefix>.out
            relative = S3Uri.parse(shard["shard"]).key.removeprefix("batch-input/")
            output = s3.get_object(Bucket=stack.names.bucket, Key=f"transform-output/{job}/{relative}.out")
            by_id, broken = answers.loads_lines(output["Body"].read())
            assert not broken and set(by_id) == {image["key"] for image in shard["images"]}
            answered.update(by_id)
    for key in good:
        answer = answered[key]
        assert isinstance(answer, answers.Prediction) and answer.class_name == found[key]["breed"]
    assert stack.runtime is not None and stack.runtime.answered.get("dogbreed-serverless", 0) == 0
    assert stack.runner is not None and stack.runner.records == len(good) + 1  # the truncated photo is a record too


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


def test_a_flood_goes_to_batch_transform_and_a_trickle_to_the_endpoint(start_stack: StartStack, dataset: Path) -> None:
    """Auto mode routes by batch size: the event source mapping gathers a burst into one batch."""
    stack = start_stack(AutoBatchThreshold="8", BatchingWindowSeconds="3")
    trickle = dict(list(photos(dataset).items())[:3])
    trickle.update(phone_photo(trickle))  # 25 MB: downsized for the endpoint, not sent to wait for a job
    found = outcomes(stack, upload(stack, {key: data for key, (data, _) in trickle.items()}))
    assert {found[key]["mode"] for key in trickle} == {"serverless"}
    assert {found[key]["status"] for key in trickle} == {"CLASSIFIED"}
    burst = {f"incoming/burst/{n}.jpg": images.jpeg(color=(n * 20, 90, 40)) for n in range(10)}
    found = outcomes(stack, upload(stack, burst))
    assert {found[key]["mode"] for key in burst} == {"batch"} and len(found) == len(burst)


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


def test_duplicates_call_the_model_once(start_stack: StartStack, dataset: Path) -> None:
    stack = start_stack(InferenceMode="serverless")
    data, _ = next(iter(photos(dataset).values()))
    first = outcomes(stack, upload(stack, {"incoming/rex.jpg": data}))["incoming/rex.jpg"]
    assert stack.runtime is not None
    calls = stack.runtime.answered["dogbreed-serverless"]
    upload(stack, {"incoming/rex.jpg": data})  # the same content again: a new event, the same ETag
    assert stack.resources is not None
    assert wait_until(lambda: queue_is_empty(stack, stack.resources.queue_url))
    assert stack.functions["IngestFunction"].invocations >= 2  # the second event was delivered
    again = outcomes(stack, {"incoming/rex.jpg": first["etag"]})["incoming/rex.jpg"]
    assert again == first and stack.runtime.answered["dogbreed-serverless"] == calls


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
