"""An SQS message body in, the S3 objects it announces out."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from pipeline.logic.errors import MalformedMessage
from pipeline.logic.notifications import Message, parse_message, reclassify_request
from tests.conftest import load_event


def body_of(event_file: str) -> str:
    return str(load_event(event_file)["Records"][0]["body"])


def test_a_put_notification_names_the_object_with_its_key_decoded() -> None:
    (ref,) = parse_message("m1", body_of("ingest_s3_put.json"), receive_count=3).images
    assert ref.key == "incoming/my dog (1).jpg"  # sent as incoming/my+dog+%281%29.jpg
    assert ref.etag and '"' not in ref.etag
    assert ref.size > 0
    assert ref.uploaded_at.tzinfo is not None
    assert (ref.message_id, ref.receive_count) == ("m1", 3)


def test_every_record_of_a_message_is_returned() -> None:
    refs = [ref for record in load_event("ingest_multi_record.json")["Records"]
            for ref in parse_message(record["messageId"], record["body"]).images]  # fmt: skip
    assert "incoming/puppy + friends.png" in {ref.key for ref in refs}
    assert "incoming/café/terrier.jpg" in {ref.key for ref in refs}


def test_the_s3_test_event_announces_nothing() -> None:
    assert parse_message("m1", body_of("ingest_s3_test_event.json")) == Message([])


def test_an_event_time_without_a_zone_is_utc() -> None:
    body = json.loads(body_of("ingest_s3_put.json"))
    body["Records"][0]["eventTime"] = "2026-11-22T10:00:00.000"
    (ref,) = parse_message("m1", json.dumps(body)).images
    assert ref.uploaded_at == datetime(2026, 11, 22, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"hello": "world"}', "neither an S3 event notification"),
        ('{"reclassify": {"bucket": "b", "key": "k"}}', "incomplete reclassify request"),
        ('{"reclassify": "incoming/a.jpg"}', "incomplete reclassify request"),
        ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete"}]}', "not an S3 ObjectCreated"),
        ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}', "incomplete S3 record"),
    ],
)
def test_anything_else_is_a_malformed_message(body: str, message: str) -> None:
    with pytest.raises(MalformedMessage, match=message):
        parse_message("m1", body)


def test_a_reclassify_request_names_the_stored_image_as_its_upload_did() -> None:
    (upload,) = parse_message("m0", body_of("ingest_s3_put.json")).images
    body = reclassify_request(upload)
    assert len(body.encode()) < 300  # a small message: no image bytes travel through the caller
    message = parse_message("m2", body, receive_count=2)
    assert message.again and message.images == [replace(upload, message_id="m2", receive_count=2)]
    # and the file in events/ that `sam local invoke` takes is one
    (record,) = load_event("ingest_reclassify_request.json")["Records"]
    (ref,) = parse_message(record["messageId"], record["body"]).images
    assert ref.key == "incoming/my dog (1).jpg" and parse_message("m", record["body"]).again
