"""Turn the body of one SQS message into the S3 objects it announces: an S3 event notification (an
upload), a request of `make reclassify` (one image to classify again with the current model), or one
of `make compare` (one image for a candidate model's trial)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event

from pipeline.logic.errors import MalformedMessage
from pipeline.logic.outcomes import ImageRef
from pipeline.logic.trial import check_trial_id

RECLASSIFY = "reclassify"  # the one key of a reclassify request's body
COMPARE = "compare"  # the one key of a trial request's body


@dataclass(frozen=True)
class Message:
    images: list[ImageRef]
    again: bool = False  # a reclassify request: classify these again, not an upload
    trial: str | None = None  # a trial request: shard these for this trial (logic/trial.py), record nothing


def is_test_event(body: dict[str, object]) -> bool:
    """S3 sends one `s3:TestEvent` (no Records) when a notification is configured."""
    return body.get("Event") == "s3:TestEvent"


def _image(ref: ImageRef) -> dict[str, Any]:
    """The object version a record names, as an upload's notification would name it."""
    return {"bucket": ref.bucket, "key": ref.key, "etag": ref.etag, "size": ref.size,
            "uploaded_at": ref.uploaded_at.isoformat()}  # fmt: skip


def reclassify_request(ref: ImageRef) -> str:
    """The body of a request to classify one stored image again (about 200 bytes)."""
    return json.dumps({RECLASSIFY: _image(ref)}, ensure_ascii=False, separators=(",", ":"))


def trial_request(trial: str, ref: ImageRef) -> str:
    """The body of a request to put one stored image into a trial's shards (about 250 bytes)."""
    return json.dumps({COMPARE: {"trial": trial, "image": _image(ref)}}, ensure_ascii=False, separators=(",", ":"))


def parse_message(message_id: str, raw_body: str, receive_count: int = 1) -> Message:
    """Every object-created record of an S3 notification, keys decoded (none for the S3 test event),
    or the image of a reclassify request."""
    try:
        body = json.loads(raw_body)
    except ValueError as exc:
        raise MalformedMessage(f"message {message_id} is not JSON: {raw_body[:200]!r}") from exc
    if not isinstance(body, dict):
        raise MalformedMessage(f"message {message_id} is not a JSON object")
    if is_test_event(body):
        return Message([])
    if RECLASSIFY in body:
        return Message([_requested(message_id, body[RECLASSIFY], receive_count)], again=True)
    if COMPARE in body:
        request = body[COMPARE]
        try:
            trial = check_trial_id(request["trial"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessage(f"message {message_id} is a trial request without a trial id: {exc!r}") from exc
        return Message([_requested(message_id, request.get("image"), receive_count)], trial=trial)
    if not isinstance(body.get("Records"), list):
        raise MalformedMessage(
            f"message {message_id} is neither an S3 event notification (no Records) nor a reclassify or trial request"
        )
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
    return Message(refs)


def _requested(message_id: str, image: Any, receive_count: int) -> ImageRef:
    try:
        return ImageRef(
            bucket=str(image["bucket"]),
            key=str(image["key"]),
            etag=str(image["etag"]),
            size=int(image["size"]),
            uploaded_at=_parse_time(str(image["uploaded_at"])),
            message_id=message_id,
            receive_count=receive_count,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"message {message_id} is an incomplete reclassify request: {exc!r}") from exc


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
