"""The whole system on the local stack: real handlers in their own processes, the real model in
its container, moto as AWS, driven only by uploads to the bucket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import answers
from devstack.aws.stack import Stack
from pipeline.logic.ingest import IMAGES_PER_REQUEST
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
    """Photos as phones save them, of the first three photos' dogs: a 48-megapixel, 25 MB JPEG stored
    sideways (EXIF orientation 6); an iPhone's 12-megapixel HEIC, sideways, in Display P3; an AVIF."""
    (first, breed1), (second, breed2), (third, breed3) = list(good.values())[:3]
    heic = images.phone_photo("HEIF", subject=second, orientation=6, profile=images.display_p3_profile())
    return {
        "incoming/phone/IMG_0001.jpg": (images.photo(subject=first, orientation=6), breed1),
        "incoming/phone/IMG_0002.HEIC": (heic, breed2),
        "incoming/phone/saved.avif": (images.phone_photo("AVIF", 1600, 1200, subject=third), breed3),
    }


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
    assert stack.runtime is not None
    requests, sent = stack.runtime.answered["dogbreed-serverless"], stack.runtime.images["dogbreed-serverless"]
    assert sent >= len(good) and requests <= -(-sent // IMAGES_PER_REQUEST) + 1  # several images a request
    (uploads,) = [p for p in stack.pollers if p.trigger.queue_arn.endswith(":" + stack.names.queue)]
    assert max(uploads.batch_sizes) <= 100  # the template's BatchSize


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


def test_a_flood_goes_to_batch_transform_and_a_trickle_to_the_endpoint(start_stack: StartStack, dataset: Path) -> None:
    """Auto mode routes by the backlog: a burst is a backlog over the threshold, a trickle is not."""
    stack = start_stack(AutoBatchThreshold="8", BatchingWindowSeconds="3")
    trickle = dict(list(photos(dataset).items())[:3])
    trickle.update(phone_photo(trickle))  # 25 MB: downsized for the endpoint, not sent to wait for a job
    found = outcomes(stack, upload(stack, {key: data for key, (data, _) in trickle.items()}))
    assert {found[key]["mode"] for key in trickle} == {"serverless"}
    assert {found[key]["status"] for key in trickle} == {"CLASSIFIED"}
    burst = {f"incoming/burst/{n}.jpg": images.jpeg(color=(n * 20, 90, 40)) for n in range(10)}
    found = outcomes(stack, upload(stack, burst))
    assert {found[key]["mode"] for key in burst} == {"batch"} and len(found) == len(burst)


def test_auto_mode_reads_the_backlog_behind_a_small_batch(start_stack: StartStack) -> None:
    """Batches of 2 can only reach a threshold of 8 with the uploads waiting behind them in the queue
    (GetQueueAttributes on the local SQS): the batches of a burst that have enough behind them go to
    batch transform, the last, with little behind them, to the endpoint, and every image has its outcome."""
    stack = start_stack(AutoBatchThreshold="8", BatchSize="2", BatchingWindowSeconds="1")
    burst = {f"incoming/backlog/{n}.jpg": images.jpeg(color=(n * 12, 40, 90)) for n in range(16)}
    found = outcomes(stack, upload(stack, burst))
    modes = [found[key]["mode"] for key in burst]
    assert len(found) == len(burst) and {found[key]["status"] for key in burst} == {"CLASSIFIED"}
    assert "batch" in modes and "serverless" in modes, modes  # a batch of 2 went to jobs: the backlog counted


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
