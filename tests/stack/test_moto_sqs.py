"""devstack/aws/moto_sqs.py: moto's SQS, patched for backlogs, still keeps SQS's rules on what a
ReceiveMessage returns: visibility timeouts, delays, retention, FIFO message groups, and the
receive count that the redrive policy counts."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws
from moto.sqs import models
from moto.sqs.models import sqs_backends

from devstack.aws import moto_sqs
from devstack.aws.account import ACCOUNT, REGION


@pytest.fixture
def sqs() -> Iterator[Any]:
    moto_sqs.patch()
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def receive(sqs: Any, url: str, count: int = 10) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=count, AttributeNames=["All"])
    return list(messages.get("Messages", []))


def test_a_received_message_is_hidden_until_its_visibility_timeout(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="one")
    assert [m["Body"] for m in receive(sqs, url)] == ["one"]
    assert receive(sqs, url) == []  # in flight
    time.sleep(1.1)
    again = receive(sqs, url)
    assert [m["Body"] for m in again] == ["one"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_a_delayed_message_waits_for_its_delay(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    sqs.send_message(QueueUrl=url, MessageBody="now")
    assert [m["Body"] for m in receive(sqs, url)] == ["now"]
    time.sleep(1.1)
    assert [m["Body"] for m in receive(sqs, url)] == ["later"]


def test_a_message_past_the_retention_period_is_not_received(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="old")
    sqs.send_message(QueueUrl=url, MessageBody="new")
    queue = sqs_backends[ACCOUNT][REGION].get_queue("q")
    old = next(m for m in queue._messages if m.body == "old")
    old.sent_timestamp -= 61_000  # sent 61 s before its neighbour
    bodies = [m["Body"] for _ in range(3) for m in receive(sqs, url)]
    assert bodies == ["new"]  # (moto ends a receive at an expired message; the next one goes on)


def test_counts_and_batches_hold_with_a_backlog(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    for start in range(0, 300, 10):
        entries = [{"Id": str(n), "MessageBody": str(start + n)} for n in range(10)]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    first = receive(sqs, url)
    assert len(first) == 10
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "290"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "10"


def test_a_fifo_group_waits_while_one_of_its_messages_is_in_flight(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="q.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    for body in ("a1", "a2"):
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="a", MessageDeduplicationId=body)
    sqs.send_message(QueueUrl=url, MessageBody="b1", MessageGroupId="b", MessageDeduplicationId="b1")
    first = receive(sqs, url, count=1)
    assert [m["Body"] for m in first] == ["a1"]
    assert [m["Body"] for m in receive(sqs, url)] == ["b1"]  # group a is held by a1
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
    assert [m["Body"] for m in receive(sqs, url)] == ["a2"]


def test_a_delete_rebuilds_the_queue_under_the_lock_that_a_send_appends_under(sqs: Any) -> None:
    """moto's DeleteMessage rebuilt the queue's message list unlocked: a message another thread sent
    meanwhile went to the list being replaced, and was lost (10 notifications of a 20,000-image soak)."""
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="first")
    (first,) = receive(sqs, url)
    queue = sqs_backends[ACCOUNT][REGION].get_queue("q")
    held: list[bool] = []
    original = models.Message.had_receipt_handle

    def while_deleting(message: Any, handle: str) -> bool:
        other = threading.Thread(target=lambda: held.append(not queue._messages_lock.acquire(blocking=False)))
        other.start()
        other.join()
        return bool(original(message, handle))

    with mock.patch.object(models.Message, "had_receipt_handle", while_deleting):
        sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    assert held and all(held)  # no other thread could have appended meanwhile


def test_messages_sent_while_others_are_deleted_are_all_received(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    sent = [f"m{n}" for n in range(1500)]
    received: set[str] = set()
    done = threading.Event()

    def send(bodies: list[str]) -> None:
        for body in bodies:
            sqs.send_message(QueueUrl=url, MessageBody=body)

    def consume() -> None:
        while True:
            messages = receive(sqs, url)
            if not messages and done.is_set():
                return
            for message in messages:
                received.add(message["Body"])
                # on a loaded machine its 30 s visibility may run out and another consumer receive it:
                # delivered at least once, as SQS does
                with contextlib.suppress(sqs.exceptions.ReceiptHandleIsInvalid):
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    consumers = [threading.Thread(target=consume) for _ in range(3)]
    senders = [threading.Thread(target=send, args=(sent[n::3],)) for n in range(3)]
    for thread in consumers + senders:
        thread.start()
    for thread in senders:
        thread.join()
    done.set()
    for thread in consumers:
        thread.join()
    assert received == set(sent)
