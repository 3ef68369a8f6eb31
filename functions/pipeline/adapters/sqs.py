"""SQS: the job queue between the ingest function and the job builder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.adapters.aws_errors import aws_call

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class SqsJobQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    def send(self, body: str) -> None:
        with aws_call("queueing a shard for a transform job"):
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=body)
