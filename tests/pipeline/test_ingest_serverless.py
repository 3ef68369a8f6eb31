"""The ingest function in serverless mode, driven by real S3 notifications from moto."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from devstack.aws import moto_s3
from devstack.aws.lambda_runtime import LambdaContext
from pipeline.handlers import ingest
from pipeline.handlers.ingest import lambda_handler
from tests.conftest import Aws
from tests.fakes.sagemaker_runtime import REVIEW, fake_prediction
from tests.pipeline import images


@pytest.fixture
def function_env() -> dict[str, str]:
    return {"INFERENCE_MODE": "serverless"}


def run(aws: Aws, context: LambdaContext, event: dict[str, Any] | None = None) -> dict[str, Any]:
    return lambda_handler(event if event is not None else aws.receive_event(), context)


def test_classifies_an_upload_and_records_the_prediction(aws: Aws, context: LambdaContext) -> None:
    # GIVEN a JPEG dropped under the input prefix
    data = images.jpeg()
    etag = aws.upload("incoming/rex.jpg", data)
    # WHEN the function receives the notification
    response = run(aws, context)
    # THEN the endpoint's answer is recorded for that content
    assert response == {"batchItemFailures": []}
    item = aws.item("incoming/rex.jpg")
    expected = fake_prediction(data)
    assert item is not None
    assert item["status"] == "CLASSIFIED"
    assert item["etag"] == etag
    assert item["breed"] == expected.class_name
    assert item["label"] == expected.label
    assert float(item["confidence"]) == pytest.approx(0.6)
    assert [c["breed"] for c in item["top5"]] == [c.class_name for c in expected.top5]
    assert item["mode"] == "serverless"
    assert item["endpoint_name"] == "dogbreed-serverless"
    assert item["model_name"] == "dogbreed-resnet18"
    assert item["inference_ms"] >= 0
    assert "problem_status" not in item
    assert aws.runtime.calls[-1]["content_type"] == "image/jpeg"


@pytest.mark.parametrize(
    "key",
    ["incoming/my dog (1).jpg", "incoming/a+b=c.jpg", "incoming/café/chien été.jpg", "incoming/100%/x&y.jpg"],
)
def test_keys_are_decoded(aws: Aws, context: LambdaContext, key: str) -> None:
    aws.upload(key, images.jpeg())
    run(aws, context)
    item = aws.item(key)
    assert item is not None and item["status"] == "CLASSIFIED"
    assert item["key"] == key


def test_every_record_of_every_message_is_processed(aws: Aws, context: LambdaContext) -> None:
    keys = [f"incoming/dog-{i}.jpg" for i in range(7)]
    for i, key in enumerate(keys):
        aws.upload(key, images.jpeg(color=(i * 30, 100, 100)))
    event = aws.receive_event()
    # Fold two messages' records into one message body, as S3 may do.
    import json

    first, second = json.loads(event["Records"][0]["body"]), json.loads(event["Records"][1]["body"])
    first["Records"] += second["Records"]
    event["Records"][0]["body"] = json.dumps(first)
    del event["Records"][1]
    assert run(aws, context, event) == {"batchItemFailures": []}
    assert [aws.item(k)["status"] for k in keys] == ["CLASSIFIED"] * len(keys)  # type: ignore[index]


def test_the_s3_test_event_is_skipped(aws: Aws, context: LambdaContext) -> None:
    # GIVEN the notification S3 sends when a bucket notification is configured
    config = aws.clients["s3"].get_bucket_notification_configuration(Bucket=aws.bucket)
    config.pop("ResponseMetadata")
    aws.clients["s3"].put_bucket_notification_configuration(Bucket=aws.bucket, NotificationConfiguration=config)
    event = aws.receive_event()
    assert "s3:TestEvent" in event["Records"][0]["body"]
    assert run(aws, context, event) == {"batchItemFailures": []}
    assert aws.runtime.calls == []


def test_a_duplicate_event_neither_calls_the_model_nor_writes_again(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    event = aws.receive_event()
    run(aws, context, event)
    first = aws.item("incoming/rex.jpg")
    calls = len(aws.runtime.calls)
    # WHEN the same notification is delivered again (at-least-once delivery)
    assert run(aws, context, event) == {"batchItemFailures": []}
    assert len(aws.runtime.calls) == calls
    assert aws.item("incoming/rex.jpg") == first


def test_duplicates_within_one_batch_call_the_model_once(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    event = aws.receive_event()
    twice = {"Records": [event["Records"][0], {**event["Records"][0], "messageId": "copy"}]}
    assert run(aws, context, twice) == {"batchItemFailures": []}
    assert len(aws.runtime.calls) == 1


def test_a_reupload_with_new_content_is_classified_again(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg(color=(10, 10, 10)))
    run(aws, context)
    new_etag = aws.upload("incoming/rex.jpg", images.png())
    run(aws, context)
    item = aws.item("incoming/rex.jpg")
    assert item is not None and item["etag"] == new_etag and item["status"] == "CLASSIFIED"
    assert len(aws.runtime.calls) == 2
    assert aws.runtime.calls[-1]["content_type"] == "image/png"


def test_a_stale_event_for_overwritten_content_records_nothing(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg(color=(10, 10, 10)))
    stale = aws.receive_event()
    new_etag = aws.upload("incoming/rex.jpg", images.png())
    run(aws, context)  # the newer event first
    assert run(aws, context, stale) == {"batchItemFailures": []}
    item = aws.item("incoming/rex.jpg")
    assert item is not None and item["etag"] == new_etag
    assert len(aws.runtime.calls) == 1


BAD_INPUTS = [
    ("empty.jpg", b"", "EmptyObject", "empty"),
    ("notes.jpg", b"shopping list: kibble, leash\n", "NotAnImage", "not an image"),
    ("truncated.jpg", images.truncated_jpeg(), "InvalidImage", "decode"),
    ("corrupt.jpg", images.corrupt_jpeg(), "InvalidImage", "decode"),
    ("photo.heic", images.heic_header(), "InvalidImage", "cannot decode"),  # a header, no image
    ("scan.pdf", b"%PDF-1.7\n" + b"\x00" * 64, "UnsupportedFormat", "PDF"),
    ("bomb.png", images.png_bomb(), "DecompressionBomb", "900,000,000 pixels"),
    ("cut-off.jpg", images.photo(4000, 3000)[:4_500_000], "InvalidImage", "cannot decode"),  # over 4 MB
]


@pytest.mark.parametrize(("name", "data", "code", "reason_part"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_rejected_with_a_reason(
    aws: Aws, context: LambdaContext, name: str, data: bytes, code: str, reason_part: str
) -> None:
    aws.upload(f"incoming/{name}", data)
    assert run(aws, context) == {"batchItemFailures": []}
    item = aws.item(f"incoming/{name}")
    assert item is not None
    assert item["status"] == "REJECTED"
    assert item["error_code"] == code
    assert reason_part in item["reason"]
    assert item["problem_status"] == "REJECTED"


def test_bad_input_does_not_poison_the_batch(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/good-1.jpg", images.jpeg())
    aws.upload("incoming/notes.jpg", b"not an image")
    aws.upload("incoming/good-2.png", images.png())
    assert run(aws, context) == {"batchItemFailures": []}
    statuses = {k: aws.item(f"incoming/{k}")["status"] for k in ("good-1.jpg", "notes.jpg", "good-2.png")}  # type: ignore[index]
    assert statuses == {"good-1.jpg": "CLASSIFIED", "notes.jpg": "REJECTED", "good-2.png": "CLASSIFIED"}


@pytest.mark.parametrize("may_list", [True, False])
def test_an_object_deleted_before_processing_is_rejected(aws: Aws, context: LambdaContext, may_list: bool) -> None:
    """S3 answers 404 to a caller that may list the bucket and 403 to one that may not
    (devstack/aws/moto_s3.py); a deleted upload is REJECTED either way."""
    if not may_list:
        moto_s3.cannot_list("testing", [aws.bucket])
    aws.upload("incoming/gone.jpg", images.jpeg())
    aws.clients["s3"].delete_object(Bucket=aws.bucket, Key="incoming/gone.jpg")
    assert run(aws, context) == {"batchItemFailures": []}
    item = aws.item("incoming/gone.jpg")
    assert item is not None and item["status"] == "REJECTED" and item["error_code"] == "ObjectDeleted"
    assert "deleted" in item["reason"]


def test_a_refused_read_is_a_failure_not_a_deleted_upload(
    aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 403 on an object that exists is a real refusal: retried, never REJECTED as deleted."""
    aws.upload("incoming/rex.jpg", images.jpeg())
    moto_s3.cannot_list("testing", [aws.bucket])
    s3 = ingest.build_ingest().objects.client  # type: ignore[attr-defined]

    def refuse(**kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject")

    monkeypatch.setattr(s3, "get_object", refuse)
    event = aws.receive_event()
    assert run(aws, context, event) == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert aws.item("incoming/rex.jpg") is None  # nothing recorded on the first delivery


def test_a_malformed_message_fails_alone(aws: Aws, context: LambdaContext) -> None:
    aws.upload("incoming/rex.jpg", images.jpeg())
    event = aws.receive_event()
    event["Records"].append({**event["Records"][0], "messageId": "junk", "body": "{not json"})
    response = run(aws, context, event)
    assert response == {"batchItemFailures": [{"itemIdentifier": "junk"}]}
    assert aws.item("incoming/rex.jpg")["status"] == "CLASSIFIED"  # type: ignore[index]


def test_outcomes_are_published_as_metrics(
    aws: Aws, context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    aws.upload("incoming/rex.jpg", images.jpeg())
    aws.upload("incoming/notes.jpg", b"not an image")
    capsys.readouterr()
    run(aws, context)
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    (metrics,) = [blob for blob in emf if "ImagesClassified" in blob]
    by_mode = {(b["mode"], b["outcome"]): b["ImagesByMode"] for b in emf if "ImagesByMode" in b}
    assert by_mode == {("serverless", "CLASSIFIED"): [1.0], ("serverless", "REJECTED"): [1.0]}
    assert metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "DogBreedPipeline"
    assert metrics["ImagesClassified"] == [1.0]
    assert metrics["ImagesRejected"] == [1.0]
    assert metrics["ImagesFailed"] == [0.0]
    assert len(metrics["InferenceLatency"]) == 1


@pytest.mark.parametrize("threshold", [0.7, 0.5])
def test_an_answer_under_its_threshold_is_classified_and_queued_for_review(
    aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch, threshold: float
) -> None:
    monkeypatch.setitem(REVIEW, "threshold", threshold)  # the fake's answers are 0.6 sure
    aws.upload("incoming/rex.jpg", images.jpeg())
    run(aws, context)
    item = aws.item("incoming/rex.jpg")
    assert item is not None and item["status"] == "CLASSIFIED" and float(item["threshold"]) == threshold
    assert ("review" in item) is (threshold > 0.6)
