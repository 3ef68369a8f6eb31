"""Turn the body of one SQS message into the S3 objects it announces."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event

from pipeline.logic.errors import MalformedMessage
from pipeline.logic.outcomes import ImageRef


def is_test_event(body: dict[str, object]) -> bool:
    """S3 sends one `s3:TestEvent` (no Records) when a notification is configured."""
    return body.get("Event") == "s3:TestEvent"


def parse_message(message_id: str, raw_body: str, receive_count: int = 1) -> list[ImageRef]:
    """Every object-created record of the message, keys decoded; [] for the S3 test event."""
    try:
        body = json.loads(raw_body)
    except ValueError as exc:
        raise MalformedMessage(f"message {message_id} is not JSON: {raw_body[:200]!r}") from exc
    if not isinstance(body, dict):
        raise MalformedMessage(f"message {message_id} is not a JSON object")
    if is_test_event(body):
        return []
    if not isinstance(body.get("Records"), list):
        raise MalformedMessage(f"message {message_id} is not an S3 event notification (no Records)")
    refs = []
    try:
        for record in S3Event(body).records:
            if record.event_source != "aws:s3" or not record.event_name.startswith("ObjectCreated:"):
                raise MalformedMessage(
                    f"message {message_id} holds a {record.event_source} {record.event_name} record, "
                    "not an S3 ObjectCreated notification"
                )
            obj = record.s3.get_object
            refs.append(
                ImageRef(
                    bucket=record.s3.bucket.name,
                    key=unquote_plus(obj.key),  # keys arrive URL-encoded, spaces as '+'
                    etag=obj.etag.strip('"'),
                    size=int(obj.size),
                    uploaded_at=_parse_time(record.event_time),
                    message_id=message_id,
                    receive_count=receive_count,
                )
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"message {message_id} has an incomplete S3 record: {exc!r}") from exc
    return refs


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
