"""`make reclassify`'s selection and requests (cli/reclassify.py) on moto's DynamoDB and SQS, with
records written by the real table adapter: which images it selects, what it sends, what it reports."""

from __future__ import annotations

import csv
import gzip
import io
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
from pipeline.logic.s3uri import S3Uri
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


INVENTORY_SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass"


def inventory(aws: Aws, rows: list[list[str]], schema: str = INVENTORY_SCHEMA, file_format: str = "CSV") -> str:
    """An S3 Inventory report as S3 publishes one (S3 User Guide, "Amazon S3 Inventory"): manifest.json
    naming a gzipped CSV list, quoted values, URL-encoded keys. Its manifest's s3:// URI."""
    s3, bucket, folder = aws.clients["s3"], "inventory-reports", f"inv/{aws.bucket}/daily/2026-12-05T01-00Z/"
    s3.create_bucket(Bucket=bucket)
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL).writerows(rows)
    list_key = f"inv/{aws.bucket}/daily/data/3f1c.csv.gz"
    s3.put_object(Bucket=bucket, Key=list_key, Body=gzip.compress(text.getvalue().encode()))
    manifest = {"sourceBucket": aws.bucket, "destinationBucket": f"arn:aws:s3:::{bucket}", "version": "2016-11-30",
                "creationTimestamp": "1764896400000", "fileFormat": file_format, "fileSchema": schema,
                "files": [{"key": list_key, "size": 100, "MD5checksum": "0" * 32}]}  # fmt: skip
    s3.put_object(Bucket=bucket, Key=f"{folder}manifest.json", Body=json.dumps(manifest).encode())
    return f"s3://{bucket}/{folder}manifest.json"


def test_an_inventory_report_selects_the_current_objects_under_the_prefix_by_their_listed_version(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    when = "2026-11-20T12:00:00.000Z"
    rows = [
        [aws.bucket, "incoming/2026/a+dog+%C3%A9.jpg", "", "true", "false", "1234", when, "etag-a", "STANDARD"],
        [
            aws.bucket,
            "incoming/2026/b.jpg",
            "",
            "true",
            "false",
            "99",
            "2026-11-28T00:00:00.000Z",
            "etag-b",
            "STANDARD",
        ],
        [aws.bucket, "incoming/2026/gone.jpg", "", "true", "true", "", when, "", ""],  # a delete marker
        [aws.bucket, "incoming/2026/b.jpg", "v0", "false", "false", "98", when, "etag-b0", "STANDARD"],  # noncurrent
        [aws.bucket, "incoming/2025/c.jpg", "", "true", "false", "5", when, "etag-c", "STANDARD"],  # another prefix
        ["other-bucket", "incoming/2026/d.jpg", "", "true", "false", "5", when, "etag-d", "STANDARD"],
    ]
    manifest = S3Uri.parse(inventory(aws, rows))
    chosen = reclassify.Selection(aws.bucket, "incoming/2026/")
    refs = {ref.key: ref for ref in reclassify.from_inventory(aws.clients["s3"], manifest, chosen)}
    assert set(refs) == {"incoming/2026/a dog é.jpg", "incoming/2026/b.jpg"}
    a = refs["incoming/2026/a dog é.jpg"]
    assert (a.bucket, a.etag, a.size, a.uploaded_at) == (
        aws.bucket,
        "etag-a",
        1234,
        datetime(2026, 11, 20, 12, tzinfo=UTC),
    )
    since = reclassify.Selection(aws.bucket, "incoming/2026/", uploaded_since=datetime(2026, 11, 25, tzinfo=UTC))
    assert [r.key for r in reclassify.from_inventory(aws.clients["s3"], manifest, since)] == ["incoming/2026/b.jpg"]
    # and the command sends a request for each, the same as the table's selection does
    queue_url = aws.stack.reclassify_queue_url
    argv = ["--table", aws.stack.names.table, "--bucket", aws.bucket, "--queue-url", queue_url,
            "--prefix", "incoming/2026/", "--inventory", str(manifest)]  # fmt: skip
    clients = {"dynamodb": aws.clients["dynamodb"], "sqs": aws.clients["sqs"], "s3": aws.clients["s3"]}
    assert reclassify.main(reclassify.get_args_parser().parse_args(argv), clients) == 0
    assert "2 images under" in capsys.readouterr().out
    messages = aws.clients["sqs"].receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert {ref.key for m in messages for ref in parse_message("m", m["Body"]).images} == set(refs)


@pytest.mark.parametrize(
    ("schema", "file_format", "extra", "message"),
    [
        (INVENTORY_SCHEMA, "Parquet", [], "is a Parquet inventory: give a CSV one"),
        ("Bucket, Key, Size", "CSV", [], "lacks LastModifiedDate, ETag: add them to the inventory's fields"),
        (INVENTORY_SCHEMA, "CSV", ["--model-version", OLD], "an inventory knows no model version"),
    ],
)
def test_an_inventory_it_cannot_use_is_refused_with_what_to_change(
    aws: Aws, capsys: pytest.CaptureFixture[str], schema: str, file_format: str, extra: list[str], message: str
) -> None:
    manifest = inventory(aws, [], schema, file_format)
    argv = ["--table", "t", "--bucket", aws.bucket, "--queue-url", "q", "--inventory", manifest, *extra]
    clients = {"dynamodb": None, "sqs": None, "s3": aws.clients["s3"]}
    assert reclassify.main(reclassify.get_args_parser().parse_args(argv), clients) == 2
    assert message in capsys.readouterr().err
