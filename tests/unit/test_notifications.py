"""An SQS message body in, the S3 objects it announces out."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline.logic.errors import MalformedMessage
from pipeline.logic.notifications import parse_message
from tests.conftest import load_event


def body_of(event_file: str) -> str:
    return str(load_event(event_file)["Records"][0]["body"])


def test_a_put_notification_names_the_object_with_its_key_decoded() -> None:
    (ref,) = parse_message("m1", body_of("ingest_s3_put.json"), receive_count=3)
    assert ref.key == "incoming/my dog (1).jpg"  # sent as incoming/my+dog+%281%29.jpg
    assert ref.etag and '"' not in ref.etag
    assert ref.size > 0
    assert ref.uploaded_at.tzinfo is not None
    assert (ref.message_id, ref.receive_count) == ("m1", 3)


def test_every_record_of_a_message_is_returned() -> None:
    refs = [ref for record in load_event("ingest_multi_record.json")["Records"]
            for ref in parse_message(record["messageId"], record["body"])]  # fmt: skip
    assert "incoming/puppy + friends.png" in {ref.key for ref in refs}
    assert "incoming/café/terrier.jpg" in {ref.key for ref in refs}


def test_the_s3_test_event_announces_nothing() -> None:
    assert parse_message("m1", body_of("ingest_s3_test_event.json")) == []


def test_an_event_time_without_a_zone_is_utc() -> None:
    body = json.loads(body_of("ingest_s3_put.json"))
    body["Records"][0]["eventTime"] = "2026-11-22T10:00:00.000"
    (ref,) = parse_message("m1", json.dumps(body))
    assert ref.uploaded_at == datetime(2026, 11, 22, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"hello": "world"}', "not an S3 event notification"),
        ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete"}]}', "not an S3 ObjectCreated"),
        ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}', "incomplete S3 record"),
    ],
)
def test_anything_else_is_a_malformed_message(body: str, message: str) -> None:
    with pytest.raises(MalformedMessage, match=message):
        parse_message("m1", body)
