"""cli.redrive on moto: FAILED images are copied onto themselves, S3 notifies the copy, and the
ingest handler classifies them anew; nothing else is touched, and a repeat is harmless."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cli.redrive import get_args_parser, main
from devstack.aws.lambda_runtime import LambdaContext
from pipeline.adapters.dynamodb import DynamoPredictions
from pipeline.handlers.ingest import lambda_handler
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from tests.conftest import Aws
from tests.pipeline import images

CONTEXT = LambdaContext(function_name="ingest")


@pytest.fixture
def function_env() -> dict[str, str]:
    return {"INFERENCE_MODE": "serverless"}


def fail(aws: Aws, key: str, data: bytes, when: datetime) -> None:
    """An upload whose record says FAILED, as a job that failed leaves it (issue: nothing retries it)."""
    etag = aws.upload(key, data)
    aws.receive_event()  # its upload event, taken off the queue (in flight, as if its ingest died)
    ref = ImageRef(aws.bucket, key, etag, len(data), when - timedelta(minutes=5))
    failed = Outcome(Status.FAILED, Mode.BATCH, reason="transform job x failed: AlgorithmError", error_code="JobFailed")
    DynamoPredictions(aws.clients["dynamodb"], aws.stack.names.table).write([Change(ref, Event.GAVE_UP, failed)], when)


def redrive(aws: Aws, *argv: str) -> int:
    args = get_args_parser().parse_args(["--table", aws.stack.names.table, "--bucket", aws.bucket, *argv])
    return main(args, clients={"dynamodb": aws.clients["dynamodb"], "s3": aws.clients["s3"]})


def test_a_failed_image_is_sent_again_and_classified(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    fail(aws, "incoming/lost.jpg", images.jpeg(color=(9, 9, 9)), now)
    aws.upload("incoming/fine.jpg", images.jpeg())
    lambda_handler(aws.receive_event(), CONTEXT)  # fine.jpg: CLASSIFIED, not to be redriven
    assert redrive(aws) == 0
    assert "1 of 1 FAILED images tried again" in capsys.readouterr().out
    # THEN S3 notified the copy, and the ingest function classified it
    event = aws.receive_event()
    assert [r["body"] for r in event["Records"]] and "ObjectCreated:Copy" in event["Records"][0]["body"]
    assert lambda_handler(event, CONTEXT) == {"batchItemFailures": []}
    item = aws.item("incoming/lost.jpg")
    assert item is not None and item["status"] == "CLASSIFIED" and item["mode"] == "serverless"
    # AND a repeat finds nothing FAILED
    assert redrive(aws) == 0
    assert "0 of 0 FAILED images" in capsys.readouterr().out


def test_prefix_since_and_dry_run_choose_what_is_sent(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    fail(aws, "incoming/a/old.jpg", images.jpeg(color=(1, 1, 1)), now - timedelta(days=2))
    fail(aws, "incoming/a/new.jpg", images.jpeg(color=(2, 2, 2)), now)
    fail(aws, "incoming/b/new.jpg", images.jpeg(color=(3, 3, 3)), now)
    since = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert redrive(aws, "--prefix", "incoming/a/", "--since", since, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would copy" in out and "incoming/a/new.jpg" in out and "old.jpg" not in out and "incoming/b" not in out
    assert aws.receive_event()["Records"] == []  # a dry run copies nothing
    assert redrive(aws, "--prefix", "incoming/a/", "--since", since) == 0
    (record,) = aws.receive_event()["Records"]
    assert "incoming%2Fa%2Fnew.jpg" in record["body"]  # S3 URL-encodes keys in its events


def test_an_image_deleted_since_is_reported_not_copied(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    fail(aws, "incoming/gone.jpg", images.jpeg(), datetime.now(UTC))
    aws.clients["s3"].delete_object(Bucket=aws.bucket, Key="incoming/gone.jpg")
    assert redrive(aws) == 0
    assert "deleted since" in capsys.readouterr().out
    assert aws.receive_event()["Records"] == []


class TestBatchMode:
    @pytest.fixture
    def function_env(self) -> dict[str, str]:
        return {"INFERENCE_MODE": "batch"}

    def test_a_failed_image_goes_back_into_a_shard_for_a_job(self, aws: Aws) -> None:
        fail(aws, "incoming/lost.jpg", images.jpeg(color=(9, 9, 9)), datetime.now(UTC))
        assert redrive(aws) == 0
        assert lambda_handler(aws.receive_event(), CONTEXT) == {"batchItemFailures": []}
        (shard,) = aws.receive_event(aws.stack.job_queue_url)["Records"]
        assert "incoming/lost.jpg" in shard["body"]  # queued for the job builder, as a new upload is
