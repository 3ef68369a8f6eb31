"""EventBridge-triggered function: a transform job finished; record each of its images."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from pipeline.adapters.clients import client
from pipeline.adapters.dynamodb import DynamoJobBook, DynamoPredictions
from pipeline.adapters.s3 import S3Objects
from pipeline.adapters.sqs import SqsJobQueue
from pipeline.config import CollectSettings
from pipeline.handlers.observe import emit_outcome_metrics
from pipeline.logic.collect import Collect, JobEvent

logger = Logger()
metrics = Metrics()


@cache
def build_collect() -> Collect:
    settings = CollectSettings.from_env()
    return Collect(
        objects=S3Objects(client("s3")),
        store=DynamoPredictions(client("dynamodb"), settings.table_name),
        queue=SqsJobQueue(client("sqs"), settings.job_queue_url),
        jobs=DynamoJobBook(client("dynamodb"), settings.table_name),
        shard_prefix=settings.shard_prefix,
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    return handle(event, build_collect())


def handle(event: EventBridgeEvent, collect: Collect) -> dict[str, Any]:
    """Errors propagate: EventBridge's async invoke retries, then the collector's DLQ keeps the event."""
    job = JobEvent.from_detail(event.detail)
    logger.append_keys(job_name=job.name)
    outcomes = collect.run(job)
    emit_outcome_metrics(metrics, outcomes)
    counts = {status: sum(o.status == status for o in outcomes) for status in {o.status.value for o in outcomes}}
    logger.info("job collected", job_status=job.status, recorded=len(outcomes), by_status=counts)
    return {"job_name": job.name, "job_status": job.status, "recorded": len(outcomes)}
