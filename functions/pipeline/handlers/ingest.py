"""SQS-triggered function: S3 upload notifications and reclassify requests in, predictions (or shards queued
for batch transform) out."""

from __future__ import annotations

from datetime import UTC, datetime
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
from pipeline.adapters.sagemaker import ServerlessEndpoint
from pipeline.adapters.sqs import SqsJobQueue
from pipeline.config import IngestSettings
from pipeline.handlers.observe import emit_outcome_metrics
from pipeline.logic.deadline import Deadline
from pipeline.logic.ingest import Ingest
from pipeline.logic.notifications import parse_message
from pipeline.logic.outcomes import ImageRef
from pipeline.logic.reclassify import Reclassify

logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


@cache
def build_ingest() -> Ingest:
    settings = IngestSettings.from_env()
    return Ingest(
        rules=settings.rules,
        objects=S3Objects(client("s3")),
        store=DynamoPredictions(client("dynamodb"), settings.table_name),
        endpoint=ServerlessEndpoint(client("sagemaker-runtime"), settings.endpoint_name),
        queue=SqsJobQueue(client("sqs"), settings.job_queue_url),
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(
        event, build_ingest(), Deadline.of_invocation(datetime.now(UTC), context.get_remaining_time_in_millis())
    )


def handle(event: dict[str, Any], ingest: Ingest, deadline: Deadline | None = None) -> dict[str, Any]:
    """Parse every message (a bad one fails alone), classify the batch's uploads, take its reclassify
    requests by the flood path, report partial failures."""
    images: list[ImageRef] = []
    again: list[ImageRef] = []

    def parse(record: SQSRecord) -> None:
        receive_count = int(record.attributes.approximate_receive_count or 1)
        message = parse_message(record.message_id, record.body, receive_count)
        (again if message.again else images).extend(message.images)

    with processor(records=event.get("Records", []), handler=parse):
        processor.process()
    response = processor.response()

    result = ingest.run(images, deadline)
    emit_outcome_metrics(metrics, result.outcomes)
    metrics.add_metric(name="DuplicatesSkipped", unit=MetricUnit.Count, value=result.duplicates)
    failed = {str(item["itemIdentifier"]) for item in response["batchItemFailures"]} | result.failed_message_ids
    if again:
        redo = Reclassify.beside(ingest).run(again, deadline)
        emit_outcome_metrics(metrics, redo.outcomes)
        failed |= redo.failed_message_ids
        logger.info("reclassify requests done", images=len(again), queued=redo.queued, skipped=redo.skipped)
    logger.info(
        "batch done",
        messages=len(event.get("Records", [])),
        images=len(images),
        outcomes=len(result.outcomes),
        duplicates=result.duplicates,
        superseded=result.superseded,
        handed_back=result.handed_back,
        reclassify_requests=len(again),
        failed_messages=len(failed),
    )
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in sorted(failed)]}
