"""An event for every outcome on the local stack: the table's stream, template.yaml's pipe, the default
bus, and a queue a user subscribes with a rule."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from devstack.aws.stack import Stack
from tests.stack.conftest import StartStack, outcomes, queue_is_empty, upload, wait_until
from tests.stack.test_stack import photos

DETAIL_TYPES = {"CLASSIFIED": {"Image Classified", "Image Needs Review"}, "REJECTED": {"Image Rejected"}}


def received(stack: Stack, queue_url: str, settle_s: float = 3.0) -> list[dict[str, Any]]:
    """Every event the queue has had, read until nothing more arrives for `settle_s`."""
    sqs = stack.client("sqs", observer=True)
    events: list[dict[str, Any]] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < settle_s:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages")
        for message in messages or []:
            events.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            quiet_since = time.monotonic()
    return events


def test_each_outcome_is_published_once_and_a_duplicate_delivery_publishes_nothing(
    start_stack: StartStack, dataset: Path
) -> None:
    # (batch mode: each image is written waiting, then in its job, then answered; only the answer publishes)
    stack = start_stack(InferenceMode="batch")
    # GIVEN a queue subscribed to the stack's events by a rule on its source
    sqs = stack.client("sqs", observer=True)
    queue_url = sqs.create_queue(QueueName="outcome-events")["QueueUrl"]
    assert stack.bus is not None
    stack.bus.send_to_queue({"source": ["dogbreed.dogbreed-local"]}, queue_url, sqs)
    # WHEN photos and a file that is no image are uploaded and classified
    good = dict(list(photos(dataset).items())[:4])
    files = {key: data for key, (data, _) in good.items()} | {"incoming/notes.jpg": b"meeting notes, not a photo"}
    found = outcomes(stack, upload(stack, files))
    assert {item["status"] for item in found.values()} == {"CLASSIFIED", "REJECTED"}
    # AND one photo's upload is delivered again (the same content: a duplicate the lifecycle table refuses)
    duplicate = next(iter(good))
    upload(stack, {duplicate: files[duplicate]})
    assert stack.resources is not None
    assert wait_until(lambda: queue_is_empty(stack, stack.resources.queue_url))
    assert outcomes(stack, {duplicate: found[duplicate]["etag"]})[duplicate] == found[duplicate]
    # THEN the queue received exactly one event per outcome, with the record as detail, and none for the duplicate
    everything = received(stack, queue_url)
    events = [event for event in everything if event["detail-type"] != "Transform Job Collected"]
    images = Counter(event["detail"]["dynamodb"]["NewImage"]["image_id"]["S"] for event in events)
    assert images == Counter({item["image_id"]: 1 for item in found.values()}), images
    # AND each transform job once, when collected
    jobs = Counter(e["detail"]["dynamodb"]["NewImage"]["job_name"]["S"] for e in everything if e not in events)
    assert jobs and jobs == Counter({n: 1 for n in {item["job_name"] for item in found.values() if "job_name" in item}})
    for event in events:
        record = event["detail"]["dynamodb"]["NewImage"]
        key = record["key"]["S"]
        assert event["detail-type"] in DETAIL_TYPES[found[key]["status"]], (event["detail-type"], found[key])
        assert (event["source"], record["etag"]["S"]) == ("dogbreed.dogbreed-local", found[key]["etag"])
    # AND the pipe read the stream as its own role (checked against template.yaml after the test)
    assert stack.permissions().actions["OutcomeEventsPipeRole"]["events:PutEvents"] >= 1
