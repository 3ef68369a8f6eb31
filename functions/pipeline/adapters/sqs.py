"""SQS: the job queue between the ingest function and the job builder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.adapters.aws_errors import aws_call

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import ChangeMessageVisibilityBatchRequestEntryTypeDef


class SqsJobQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    def send(self, body: str) -> None:
        with aws_call("queueing a shard for a transform job"):
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def retry_later(self, receipt_handles: Sequence[str], seconds: int) -> None:
        """Make received messages visible again in `seconds` rather than at the queue's timeout.
        Best effort: a message this misses comes back at the timeout anyway."""
        for start in range(0, len(receipt_handles), 10):  # SQS's batch limit
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(number), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                for number, handle in enumerate(receipt_handles[start : start + 10])
            ]
            with aws_call("shortening the wait of shards"):
                self.client.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
