"""moto's SQS at flood scale: the same behaviour, without rescanning the queue for every message.

moto 5.2 (pinned in requirements/dev.txt) checks each message it receives against the queue's
retention period by computing *all* the queue's attributes, three times, and each
ApproximateNumberOfMessages* attribute scans every message, reading the clock through datetime
arithmetic twice per message. A ReceiveMessage of 10 therefore costs 30 scans of the whole queue:
with 2,000 messages waiting it took about 2 s (1.8 s by this module's measure), so the local event
source gathered a few dozen messages per batching window where Lambda's pollers fill a batch of
100, and a flood in auto mode went to the endpoint one image at a time. SendMessage scanned three times per message too.

Four patches, applied in the local stack's process before moto's server starts:
- a message's `visible` and `delayed` read the clock with time.time() (moto's unix_time_millis is
  the same number, made from datetimes);
- the retention check reads the queue's MessageRetentionPeriod itself instead of every attribute;
- a queue's pending message groups are read from a copy of its pending messages: moto's server
  answers requests in threads, and a ReceiveMessage that read the set while another request
  changed it failed with "Set changed size during iteration" (once in a 10,000-image flood);
- a DeleteMessage holds the queue's lock while it rebuilds the queue's message list, as SendMessage
  does while it appends: moto rebuilt it unlocked, so a message sent meanwhile (an S3 notification,
  sent by the upload's own request thread) was appended to the old list and lost. A 20,000-image
  soak lost 10 uploads' notifications so, with no error anywhere (the send had succeeded); on AWS
  an event notification is delivered at least once.
`python -m devstack.aws.moto_sqs` measures ReceiveMessage and SendMessage against a backlog, unpatched
and patched.
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def _visible(message: Any) -> bool:
    return bool(time.time() * 1000 > message.visible_at)


def _delayed(message: Any) -> bool:
    return bool(time.time() * 1000 < message.delayed_until)


def _retained(backend: Any, queue_name: str, message: Any) -> bool:
    retention_s = int(backend.get_queue(queue_name).message_retention_period)
    return bool(retention_s + message.sent_timestamp / 1000 > time.time())


def _pending_message_groups(queue: Any) -> set[str]:
    pending = tuple(queue._pending_messages)  # one step under the GIL: no other thread changes it meanwhile
    return {message.group_id for message in pending if message.group_id is not None}


_MOTO_DELETE_MESSAGE: Any = None


def _delete_message_locked(queue: Any, receipt_handle: str) -> None:
    with queue._messages_lock:  # a Condition on an RLock: add_message takes the same lock
        _MOTO_DELETE_MESSAGE(queue, receipt_handle)


def patch() -> None:
    """Make moto's SQS backend cheap per message, and lose no message to a race (idempotent)."""
    global _MOTO_DELETE_MESSAGE
    from moto.sqs import models

    if _MOTO_DELETE_MESSAGE is None:
        _MOTO_DELETE_MESSAGE = models.Queue.delete_message
        models.Queue.delete_message = _delete_message_locked  # type: ignore[method-assign,assignment]
    models.Message.visible = property(_visible)  # type: ignore[method-assign,assignment]
    models.Message.delayed = property(_delayed)  # type: ignore[method-assign,assignment]
    models.SQSBackend.is_message_valid_based_on_retention_period = _retained  # type: ignore[method-assign,assignment]
    models.Queue.pending_message_groups = property(_pending_message_groups)  # type: ignore[method-assign,assignment]


def measure(backlog: int) -> dict[str, float]:
    """Milliseconds per ReceiveMessage(10) and per SendMessageBatch(10) with `backlog` messages waiting."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="backlog")["QueueUrl"]
        entries = [{"Id": str(n), "MessageBody": "x" * 500} for n in range(10)]
        for _ in range(backlog // 10):
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        started = time.perf_counter()
        for _ in range(5):
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        send = (time.perf_counter() - started) / 5
        started = time.perf_counter()
        for _ in range(5):
            sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
        receive = (time.perf_counter() - started) / 5
    return {"receive_ms": round(1000 * receive, 1), "send_batch_ms": round(1000 * send, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=2000)
    arguments = parser.parse_args()
    before = measure(arguments.backlog)
    patch()
    after = measure(arguments.backlog)
    print(f"{arguments.backlog} messages waiting: unpatched {before}, patched {after}")
