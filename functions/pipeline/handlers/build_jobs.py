"""SQS-triggered function: shards queued by the ingest function in, few large transform jobs out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from pipeline.adapters.clients import client
from pipeline.adapters.dynamodb import DynamoJobBook, DynamoLease, DynamoPredictions
from pipeline.adapters.s3 import S3Objects
from pipeline.adapters.sagemaker import TransformJobs
from pipeline.adapters.sqs import SqsJobQueue
from pipeline.config import BuildSettings
from pipeline.handlers.observe import emit_outcome_metrics
from pipeline.logic.build import BuildJobs
from pipeline.logic.errors import TransientError
from pipeline.logic.jobs import QueuedShard

logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


@cache
def job_queue() -> SqsJobQueue:
    return SqsJobQueue(client("sqs"), BuildSettings.from_env().job_queue_url)


@cache
def build_jobs() -> BuildJobs:
    settings = BuildSettings.from_env()
    return BuildJobs(
        rules=settings.rules,
        objects=S3Objects(client("s3")),
        store=DynamoPredictions(client("dynamodb"), settings.table_name),
        transforms=TransformJobs(
            client("sagemaker"),
            model_name=settings.rules.model_name,
            instance_type=settings.transform.instance_type,
            instance_count=settings.transform.instance_count,
            max_payload_mb=settings.transform.max_payload_mb,
            job_prefix=settings.rules.jobs.job_prefix,
        ),
        jobs=DynamoJobBook(client("dynamodb"), settings.table_name),
        lease=DynamoLease(client("dynamodb"), settings.table_name),
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deadline = datetime.now(UTC) + timedelta(milliseconds=context.get_remaining_time_in_millis())
    return handle(event, build_jobs(), job_queue(), deadline)


def handle(event: dict[str, Any], builder: BuildJobs, queue: SqsJobQueue, deadline: datetime) -> dict[str, Any]:
    """Parse every message (a malformed one fails alone, to the job queue's DLQ), then build jobs
    from the lot; shards that must wait are reported as failures and come back later (sooner when
    another builder held the lease)."""
    shards: list[QueuedShard] = []

    def parse(record: SQSRecord) -> None:
        receive_count = int(record.attributes.approximate_receive_count or 1)
        shards.append(QueuedShard.from_message(record.message_id, record.body, receive_count))

    with processor(records=event.get("Records", []), handler=parse):
        processor.process()
    response = processor.response()

    result = builder.run(shards, deadline=deadline)
    emit_outcome_metrics(metrics, result.outcomes)
    metrics.add_metric(name="TransformJobsStarted", unit=MetricUnit.Count, value=len(result.jobs))
    metrics.add_metric(name="ImagesWaitingForCapacity", unit=MetricUnit.Count, value=result.waiting)
    if result.in_flight is not None:
        metrics.add_metric(name="TransformJobsInFlight", unit=MetricUnit.Count, value=result.in_flight)
    failed = {str(item["itemIdentifier"]) for item in response["batchItemFailures"]} | result.failed_message_ids
    if result.retry_after_s is not None:
        handles = [r["receiptHandle"] for r in event.get("Records", []) if r["messageId"] in result.failed_message_ids]
        try:
            queue.retry_later(handles, result.retry_after_s)
        except TransientError as exc:
            logger.warning("shards come back at the queue's visibility timeout", error=str(exc))
    logger.info(
        "shards gathered",
        shards=len(shards),
        images=sum(len(shard.images) for shard in shards),
        jobs=result.jobs,
        waiting=result.waiting,
        retry_after_s=result.retry_after_s,
        failed_messages=len(failed),
    )
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in sorted(failed)]}
