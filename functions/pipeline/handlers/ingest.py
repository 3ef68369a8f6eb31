"""SQS-triggered function: S3 upload notifications, reclassify requests and trial requests in, predictions
(or shards queued for batch transform, or a trial's shards) out."""

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
from pipeline.adapters.sqs import SqsBacklog, SqsJobQueue
from pipeline.config import IngestSettings
from pipeline.handlers.observe import emit_outcome_metrics
from pipeline.logic.deadline import Deadline
from pipeline.logic.ingest import SHARD_MAX_BYTES, Ingest
from pipeline.logic.notifications import parse_message
from pipeline.logic.outcomes import ImageRef
from pipeline.logic.reclassify import Reclassify
from pipeline.logic.trial import Trial, TrialRequest

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
        backlog=SqsBacklog(client("sqs"), settings.upload_queue_url),
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(
        event, build_ingest(), Deadline.of_invocation(datetime.now(UTC), context.get_remaining_time_in_millis())
    )


def handle(event: dict[str, Any], ingest: Ingest, deadline: Deadline | None = None) -> dict[str, Any]:
    """Parse every message (a bad one fails alone), classify the batch's uploads, take its reclassify
    requests by the flood path and its trial requests into their trials' shards, report partial failures."""
    images: list[ImageRef] = []
    again: list[ImageRef] = []
    tried: list[TrialRequest] = []

    def parse(record: SQSRecord) -> None:
        receive_count = int(record.attributes.approximate_receive_count or 1)
        message = parse_message(record.message_id, record.body, receive_count)
        if message.trial is not None:
            tried.extend(TrialRequest(message.trial, ref) for ref in message.images)
        else:
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
    if tried:
        trial = Trial(ingest.objects, ingest.read_checked, SHARD_MAX_BYTES, ingest.clock).run(tried, deadline)
        failed |= trial.failed_message_ids
        logger.info("trial requests done", images=len(tried), sharded=trial.sharded, refused=trial.refused)
    logger.info(
        "batch done",
        messages=len(event.get("Records", [])),
        images=len(images),
        outcomes=len(result.outcomes),
        duplicates=result.duplicates,
        superseded=result.superseded,
        handed_back=result.handed_back,
        reclassify_requests=len(again),
        trial_requests=len(tried),
        failed_messages=len(failed),
    )
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in sorted(failed)]}
