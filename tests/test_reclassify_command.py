"""`make reclassify`'s selection and requests (cli/reclassify.py) on moto's DynamoDB and SQS, with
records written by the real table adapter: which images it selects, what it sends, what it reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

import answers
from cli import reclassify
from pipeline.adapters.dynamodb import DynamoPredictions
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.notifications import parse_message
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.reclassify import REASON
from tests.conftest import Aws

OLD, NEW = "sha256:0000000000000old", "sha256:0000000000000new"


def record(aws: Aws, key: str, version: str, uploaded: datetime, status: Status = Status.CLASSIFIED) -> ImageRef:
    ref = ImageRef(aws.bucket, key, f"etag-{key}", 1234, uploaded)
    store = DynamoPredictions(aws.clients["dynamodb"], aws.stack.names.table)
    if status is Status.PENDING:  # left waiting by a request that stopped before its shard was queued
        waiting = Outcome(Status.PENDING, Mode.BATCH, reason=REASON)
        assert store.write([Change(ref, Event.WAITS, waiting)], datetime.now(UTC)) == [True]
        return ref
    top = (answers.Candidate("012", "Beagle", 0.9),)
    outcome = Outcome(status, Mode.SERVERLESS, answers.Prediction(top, "int8", version))
    assert store.write([Change(ref, Event.ANSWERED, outcome)], datetime.now(UTC)) == [True]
    return ref


@pytest.fixture
def stored(aws: Aws) -> dict[str, ImageRef]:
    day = datetime(2026, 11, 20, 12, tzinfo=UTC)
    return {
        "old": record(aws, "incoming/2026/old.jpg", OLD, day),
        "old-later": record(aws, "incoming/2026/old later.jpg", OLD, day.replace(day=28)),
        "new": record(aws, "incoming/2026/new.jpg", NEW, day),
        "elsewhere": record(aws, "incoming/2025/old.jpg", OLD, day),
        "waiting": record(aws, "incoming/2026/waiting.jpg", NEW, day, Status.PENDING),
    }


def selected(aws: Aws, **selection: Any) -> set[str]:
    chosen = reclassify.Selection(aws.bucket, **selection)
    return {ref.key for ref in reclassify.to_reclassify(aws.clients["dynamodb"], aws.stack.names.table, chosen)}


def test_it_selects_by_model_version_prefix_and_upload_time_and_always_what_was_left_waiting(
    aws: Aws, stored: dict[str, ImageRef]
) -> None:
    keys = {name: ref.key for name, ref in stored.items()}
    assert selected(aws) == set(keys.values())
    assert selected(aws, model_version=OLD) == {keys["old"], keys["old-later"], keys["elsewhere"], keys["waiting"]}
    assert selected(aws, prefix="incoming/2026/", model_version=OLD) == {
        keys["old"],
        keys["old-later"],
        keys["waiting"],
    }
    since = datetime(2026, 11, 25, tzinfo=UTC)
    assert selected(aws, uploaded_since=since) == {keys["old-later"], keys["waiting"]}
    assert selected(aws, uploaded_until=since) == {keys["old"], keys["new"], keys["elsewhere"], keys["waiting"]}


def test_it_sends_one_small_request_per_image_that_names_it_as_its_record_does(
    aws: Aws, stored: dict[str, ImageRef], capsys: pytest.CaptureFixture[str]
) -> None:
    queue_url = aws.stack.reclassify_queue_url
    argv = ["--table", aws.stack.names.table, "--bucket", aws.bucket, "--queue-url", queue_url]
    clients = {"dynamodb": aws.clients["dynamodb"], "sqs": aws.clients["sqs"]}
    assert reclassify.main(reclassify.get_args_parser().parse_args([*argv, "--dry-run"]), clients) == 0
    assert "5 images under" in capsys.readouterr().out
    assert reclassify.main(reclassify.get_args_parser().parse_args([*argv, "--model-version", OLD]), clients) == 0
    assert "4 images under" in capsys.readouterr().out
    bodies = []
    while messages := aws.clients["sqs"].receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            bodies.append(message["Body"])
            aws.clients["sqs"].delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    requested = {ref.key: ref for body in bodies for ref in parse_message("m", body).images}
    assert set(requested) == {stored[name].key for name in ("old", "old-later", "elsewhere", "waiting")}
    for name in ("old", "waiting"):
        ref = stored[name]
        got = requested[ref.key]
        assert (got.bucket, got.etag, got.size, got.uploaded_at) == (ref.bucket, ref.etag, ref.size, ref.uploaded_at)
    assert all(parse_message("m", body).again and len(body.encode()) < 300 for body in bodies)
    assert json.loads(bodies[0]).keys() == {"reclassify"}
    # and --progress says what is left: nothing queued, one image waiting for a transform job
    assert reclassify.main(reclassify.get_args_parser().parse_args([*argv, "--progress"]), clients) == 0
    assert capsys.readouterr().out.startswith("0 requests queued, 0 being taken; 1 images under")


def test_without_a_table_bucket_and_queue_it_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    args = reclassify.get_args_parser().parse_args(["--table", "t"])
    args.bucket = args.queue_url = None
    assert reclassify.main(args, {"dynamodb": None, "sqs": None}) == 2
    assert "give --stack, or --table, --bucket and --queue-url" in capsys.readouterr().err
