"""SQS: the job queue between the ingest function and the job builder, and the upload queue's backlog."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.adapters.aws_errors import aws_call
from pipeline.adapters.concurrent import concurrently
from pipeline.logic.errors import TransientError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

BATCH_ENTRIES = 10  # SQS's limit on the entries of one batch call (SendMessageBatch, ChangeMessageVisibilityBatch)


class SqsJobQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    def send(self, body: str) -> None:
        with aws_call("queueing a shard for a transform job"):
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def send_many(self, bodies: Sequence[str]) -> None:
        """Ten messages a SendMessageBatch call, the calls made at once. The messages a call could
        not send raise TransientError: the caller has recorded nothing for them yet."""
        batches = [bodies[start : start + BATCH_ENTRIES] for start in range(0, len(bodies), BATCH_ENTRIES)]
        concurrently(self._send_batch, batches)

    def _send_batch(self, bodies: Sequence[str]) -> None:
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(number), "MessageBody": body} for number, body in enumerate(bodies)
        ]
        with aws_call("queueing shards for transform jobs"):
            failed = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries).get("Failed", [])
        if failed:
            first = failed[0]
            raise TransientError(
                f"queueing shards for transform jobs: {len(failed)} of {len(entries)} not sent "
                f"({first.get('Code')}: {first.get('Message', '')})"
            )

    def retry_later(self, receipt_handles: Sequence[str], seconds: int) -> None:
        """Make received messages visible again in `seconds` rather than at the queue's timeout.
        Best effort: a message this misses comes back at the timeout anyway."""
        for start in range(0, len(receipt_handles), BATCH_ENTRIES):
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(number), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                for number, handle in enumerate(receipt_handles[start : start + BATCH_ENTRIES])
            ]
            with aws_call("shortening the wait of shards"):
                self.client.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)


class SqsBacklog:
    """The upload queue's messages waiting (received ones are not counted), one image each."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    def waiting(self) -> int:
        with aws_call("reading the upload queue's backlog"):
            attributes = self.client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            ).get("Attributes", {})
        return int(attributes.get("ApproximateNumberOfMessages", 0))
