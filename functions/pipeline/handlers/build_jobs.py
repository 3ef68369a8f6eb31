"""SQS-triggered function: shards queued by the ingest function in, few large transform jobs out."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from pipeline.adapters.clients import client
from pipeline.adapters.dynamodb import DynamoPredictions
from pipeline.adapters.s3 import S3Objects
from pipeline.adapters.sagemaker import TransformJobs
from pipeline.config import BuildSettings
from pipeline.handlers.observe import emit_outcome_metrics
from pipeline.logic.build import BuildJobs
from pipeline.logic.jobs import QueuedShard

logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


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
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, build_jobs())


def handle(event: dict[str, Any], builder: BuildJobs) -> dict[str, Any]:
    """Parse every message (a malformed one fails alone, to the job queue's DLQ), then build jobs
    from the lot; shards that must wait are reported as failures and come back later."""
    shards: list[QueuedShard] = []

    def parse(record: SQSRecord) -> None:
        receive_count = int(record.attributes.approximate_receive_count or 1)
        shards.append(QueuedShard.from_message(record.message_id, record.body, receive_count))

    with processor(records=event.get("Records", []), handler=parse):
        processor.process()
    response = processor.response()

    result = builder.run(shards)
    emit_outcome_metrics(metrics, result.outcomes)
    metrics.add_metric(name="TransformJobsStarted", unit=MetricUnit.Count, value=len(result.jobs))
    metrics.add_metric(name="ImagesWaitingForCapacity", unit=MetricUnit.Count, value=result.waiting)
    failed = {str(item["itemIdentifier"]) for item in response["batchItemFailures"]} | result.failed_message_ids
    logger.info(
        "shards gathered",
        shards=len(shards),
        images=sum(len(shard.images) for shard in shards),
        jobs=result.jobs,
        waiting=result.waiting,
        failed_messages=len(failed),
    )
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in sorted(failed)]}
