"""Every AWS limit a path depends on, checked at the template's defaults with AWS's documented numbers
(infra/limits.py): the size of what is stored and sent, and each function's worst piece of work
(per-call latency x calls, and bytes moved) against its timeout. A change of default that breaks
one fails here."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack.aws.meter import item_size
from devstack.aws.provision import function_environment
from infra import limits
from infra.limits import Budget, rounds, transfer_s
from infra.template import load_template, parameter_defaults
from pipeline.adapters.concurrent import THREADS
from pipeline.adapters.dynamodb import BATCH_GET_LIMIT, REVIEW_SHARDS, DynamoJobBook, marshal, outcome_item
from pipeline.config import BuildSettings, IngestSettings
from pipeline.logic import collect, deadline, ingest
from pipeline.logic.downsize import LARGEST_IMAGE_BYTES
from pipeline.logic.jobs import MAX_JOB_NAME, QueuedShard, ref_json_size
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import JobItem
from pipeline.logic.routing import SERVERLESS_MAX_BYTES
from pipeline.logic.s3uri import S3Uri
from tests.fakes.sagemaker_runtime import fake_prediction

TEMPLATE = load_template()
DEFAULTS = parameter_defaults(TEMPLATE)
NOW = datetime(2026, 12, 5, tzinfo=UTC)
LONGEST_KEY = "incoming/" + "k" * (limits.S3_KEY_BYTES - len("incoming/"))


def function(name: str) -> dict[str, Any]:
    """A function's Timeout and MemorySize, its own or the template's Globals."""
    properties = {**TEMPLATE["Globals"]["Function"], **TEMPLATE["Resources"][name]["Properties"]}
    return {"timeout_s": int(properties["Timeout"]), "memory_mb": int(properties["MemorySize"])}


def budget(name: str) -> Budget:
    return Budget(function(name)["timeout_s"], deadline.WORK_SHARE)


def longest_ref() -> ImageRef:
    return ImageRef("b" * 63, LONGEST_KEY, "e" * 34, LARGEST_IMAGE_BYTES, NOW, requested_at=NOW)  # reclassified


# -- sizes --------------------------------------------------------------------------------------------


def test_a_job_item_is_bounded_whatever_its_shards() -> None:
    """A failed 20,000-image job built again from one-image shards once wrote every shard's URI into
    its item and passed DynamoDB's 400 KB at about 4,050 shards. The item keeps a count."""
    name = "j" * MAX_JOB_NAME
    job = JobItem(name, "Starting", "h" * 32, shards=10**9, images=DEFAULTS["MaxImagesPerJob"], attempt=3)
    item = DynamoJobBook(None, "t").item(job, NOW) | {"failure_reason": "r" * limits.SAGEMAKER_FAILURE_REASON_CHARS}  # type: ignore[arg-type]
    assert item_size(marshal(item)) < 2_000 < limits.DYNAMODB_ITEM_BYTES


def test_the_sets_of_jobs_in_flight_and_uncollected_are_bounded() -> None:
    """Names leave the set of jobs in flight as jobs end (at most MaxTransformJobsInFlight in it);
    the uncollected set holds a job until it is collected, minutes after it ends. It holds 5,000
    (about 9,000 fit): weeks of jobs ending while every collection fails, under three alarms."""
    names = {f"{DEFAULTS['TransformJobPrefix']}-20261205000000-{n:016x}" for n in range(5_000)}
    assert item_size(marshal({"image_id": DynamoJobBook.UNCOLLECTED_KEY, "names": names})) < limits.DYNAMODB_ITEM_BYTES


def test_a_prediction_record_is_bounded() -> None:
    failed = Outcome(Status.FAILED, Mode.BATCH, job_name="j" * MAX_JOB_NAME, model_name="m" * 63,
                     reason="r" * (limits.SAGEMAKER_FAILURE_REASON_CHARS + 500), error_code="JobFailed")  # fmt: skip
    classified = Outcome(Status.CLASSIFIED, Mode.SERVERLESS, prediction=fake_prediction(b"x"), endpoint_name="e" * 63)
    for outcome in (failed, classified):
        assert item_size(marshal(outcome_item(longest_ref(), outcome, NOW))) < 10_000 < limits.DYNAMODB_ITEM_BYTES


def test_ten_retried_shards_fit_one_send_message_batch() -> None:
    shard = QueuedShard(S3Uri("b" * 63, f"batch-input/20261205T000000-{'0' * 32}.jsonl"), (longest_ref(),), attempt=3)
    assert limits.SQS_BATCH_ENTRIES * len(shard.message_body().encode()) < limits.SQS_BATCH_BYTES


# -- time ---------------------------------------------------------------------------------------------


def test_the_ingest_functions_worst_piece_ends_under_80_percent_of_its_timeout() -> None:
    """In batch mode a piece is one image: read whole (up to LARGEST_IMAGE_BYTES; larger ones are
    judged by their header), decoded and downsized at the function's share of a vCPU (MaxImagePixels
    at most, in the slowest format to decode: a HEIC), then the shard in hand written and queued. A full
    batch of 48 MP photos took 120-150 s at 512 MB; now the function stops starting images at WORK_SHARE
    and hands the rest back."""
    ingest_function = function("IngestFunction")
    settings = IngestSettings.from_env(function_environment("IngestFunction"))
    cpu = limits.vcpus(ingest_function["memory_mb"])
    slowest_s_per_megapixel = max(limits.DOWNSIZE_S_PER_MEGAPIXEL, limits.CONVERT_S_PER_MEGAPIXEL)  # HEIC's
    downsize_s = slowest_s_per_megapixel * settings.rules.routing.max_image_pixels / 1e6 / cpu
    flush_s = transfer_s(ingest.SHARD_MAX_BYTES) + limits.SQS_REQUEST_S
    piece_s = transfer_s(LARGEST_IMAGE_BYTES) + downsize_s + flush_s + limits.DYNAMODB_REQUEST_S
    assert piece_s <= budget("IngestFunction").piece_s, f"{piece_s:.1f} s"
    # without the deadline a full batch of 48 MP phone photos (25 MB) would not fit
    photo_s = transfer_s(25_000_000) + limits.DOWNSIZE_S_PER_MEGAPIXEL * 48 / cpu
    assert DEFAULTS["BatchSize"] * photo_s > ingest_function["timeout_s"]


def test_a_serverless_request_of_the_most_images_is_answered_well_within_60_s() -> None:
    """The ingest function sends up to IMAGES_PER_REQUEST images in one InvokeEndpoint, their records
    within the 4 MB payload: the handler decodes and classifies them all before it answers."""
    decode_s = SERVERLESS_MAX_BYTES * limits.HANDLER_DECODE_S_PER_BYTE
    handler_s = (ingest.IMAGES_PER_REQUEST * limits.HANDLER_FORWARD_S + decode_s) / limits.SERVERLESS_VCPUS
    assert handler_s <= 0.8 * limits.SERVERLESS_INVOCATION_S, f"{handler_s:.1f} s"


def test_the_job_builder_records_its_largest_batch_well_within_its_timeout() -> None:
    """The builder has no deadline: its largest batch (the 6 MB invoke payload of shard messages,
    each image about ref_json_size bytes of it) must be read, recorded and built into jobs in one run."""
    settings = BuildSettings.from_env(function_environment("BuildJobsFunction"))
    images = limits.LAMBDA_PAYLOAD_BYTES // ref_json_size(ImageRef("b" * 20, "incoming/a.jpg", "e" * 32, 1, NOW))
    jobs = math.ceil(images / settings.rules.max_images_per_job)
    per_job_s = 2 * limits.S3_SMALL_REQUEST_S + 4 * limits.DYNAMODB_REQUEST_S + limits.SAGEMAKER_CONTROL_S
    run_s = (
        rounds(images, BATCH_GET_LIMIT) * limits.DYNAMODB_REQUEST_S  # the images' records
        + rounds(images, THREADS) * limits.DYNAMODB_REQUEST_S  # a conditional write per image
        + jobs * per_job_s
    )
    assert run_s <= 0.8 * function("BuildJobsFunction")["timeout_s"], f"{run_s:.0f} s"


@pytest.mark.parametrize("failed", [True, False])
def test_the_collectors_worst_piece_ends_under_80_percent_of_its_timeout(failed: bool) -> None:
    """A piece is a chunk of shards (their outputs read at once, a missing one a GET and a LIST; a
    failed job's shard files too, at most CHUNK_BYTES) or a group of images queued again (files
    written at once, ten messages a call, their records)."""
    outputs_s = rounds(collect.SHARDS_AT_ONCE, THREADS) * 2 * limits.S3_SMALL_REQUEST_S
    shards_s = (rounds(collect.SHARDS_AT_ONCE, THREADS) * limits.S3_FIRST_BYTE_S
                + collect.CHUNK_BYTES / limits.S3_BYTES_PER_S) if failed else 0.0  # fmt: skip
    answers_bytes = collect.SHARDS_AT_ONCE * 2_000  # a completed chunk's output lines, about 2 KB an image
    records_s = rounds(collect.CHUNK_IMAGES, THREADS) * limits.DYNAMODB_REQUEST_S
    chunk_s = outputs_s + shards_s + answers_bytes / limits.S3_BYTES_PER_S + records_s
    group_s = (
        rounds(collect.RETRY_GROUP_IMAGES, THREADS) * limits.S3_SMALL_REQUEST_S
        + collect.RETRY_GROUP_BYTES / limits.S3_BYTES_PER_S
        + rounds(rounds(collect.RETRY_GROUP_IMAGES, limits.SQS_BATCH_ENTRIES), THREADS) * limits.SQS_REQUEST_S
        + rounds(collect.RETRY_GROUP_IMAGES, THREADS) * limits.DYNAMODB_REQUEST_S
    )
    limit_s = budget("CollectFunction").piece_s
    assert max(chunk_s, group_s) <= limit_s, f"chunk {chunk_s:.1f} s, group {group_s:.1f} s, limit {limit_s:.0f} s"


def test_a_failed_job_of_max_images_is_queued_again_within_a_few_collections() -> None:
    """The shape the issue found broken: a 20,000-image job that failed before answering anything,
    retried as 20,000 one-image shards of phone-photo copies (about 300 KB each). The first
    collection does what fits in WORK_SHARE of its timeout, each sweep goes on; the images all
    wait again within a few sweeps, not never. Copying their bytes (read once, written once) is
    most of it."""
    images = DEFAULTS["MaxImagesPerJob"]
    per_image_bytes = 300_000
    chunks = math.ceil(images / collect.SHARDS_AT_ONCE)
    read_s = chunks * (rounds(collect.SHARDS_AT_ONCE, THREADS) * (limits.S3_SMALL_REQUEST_S + limits.S3_FIRST_BYTE_S))
    bytes_s = 2 * images * per_image_bytes / limits.S3_BYTES_PER_S  # read once, written once
    groups = math.ceil(images / collect.RETRY_GROUP_IMAGES)
    queue_s = groups * (
        rounds(collect.RETRY_GROUP_IMAGES, THREADS) * (limits.S3_SMALL_REQUEST_S + limits.DYNAMODB_REQUEST_S)
        + limits.SQS_REQUEST_S
    )
    collections = math.ceil((read_s + bytes_s + queue_s) / budget("CollectFunction").work_s)
    assert collections <= 4, f"{collections} collections ({read_s + bytes_s + queue_s:.0f} s of work)"


def test_the_index_of_the_largest_job_fits_the_collectors_memory() -> None:
    """The index the collector reads for a job of MaxImagesPerJob images
    (each image's reference) is held in memory once: a few MB."""
    index_bytes = DEFAULTS["MaxImagesPerJob"] * ref_json_size(longest_ref())
    assert index_bytes < function("CollectFunction")["memory_mb"] * 1_000_000 / 10


def test_the_sweep_takes_a_job_over_only_after_its_collector_would_have_ended() -> None:
    """A collection runs at most the collector's timeout: a sweep that took a job over sooner would
    collect it beside its own event's collector (harmless, but twice the work)."""
    assert DEFAULTS["LateJobSeconds"] >= function("CollectFunction")["timeout_s"]


def test_a_flood_of_unsure_answers_stays_under_the_review_queues_partition_limit() -> None:
    """Every writer at once records answers that all need review: the collectors of the jobs in flight
    (and the sweep's), and the ingest functions the upload queue's MaximumConcurrency allows, each
    THREADS writes at a time, DYNAMODB_REQUEST_S each. The review index spreads them over its shards."""
    unsure = Outcome(Status.CLASSIFIED, Mode.BATCH, prediction=replace(fake_prediction(b"x"), threshold=0.99))
    ref = ImageRef("dogbreed-images-0123456789ab", "incoming/2026/12/05/IMG_0001.jpg", "0" * 32, 3_000_000, NOW)
    item = outcome_item(ref, unsure, NOW)
    assert "review" in item
    units = math.ceil(item_size(marshal(item)) / limits.DYNAMODB_WRITE_UNIT_BYTES)
    writers = DEFAULTS["MaxTransformJobsInFlight"] + 1 + DEFAULTS["EndpointMaxConcurrency"]
    units_per_s = writers * THREADS / limits.DYNAMODB_REQUEST_S * units
    assert units_per_s <= REVIEW_SHARDS * limits.DYNAMODB_PARTITION_WRITE_UNITS_PER_S, (
        f"{units_per_s:.0f} write units a second into {REVIEW_SHARDS} review partitions"
    )
