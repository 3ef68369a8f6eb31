"""EventBridge-triggered function: a transform job finished, record each of its images; or, on its
schedule, collect the jobs whose end was not collected in time (logic/sweep.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from pipeline.adapters.clients import client
from pipeline.adapters.dynamodb import DynamoJobBook, DynamoPredictions
from pipeline.adapters.s3 import S3Objects
from pipeline.adapters.sagemaker import TransformJobLookup
from pipeline.adapters.sqs import SqsJobQueue
from pipeline.config import CollectSettings
from pipeline.handlers.observe import emit_outcome_metrics
from pipeline.logic.collect import Collect
from pipeline.logic.deadline import Deadline
from pipeline.logic.jobs import JobEvent
from pipeline.logic.sweep import Sweep

logger = Logger()
metrics = Metrics()

SCHEDULED = "Scheduled Event"  # the detail-type of an EventBridge schedule's events


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


@cache
def build_sweep() -> Sweep:
    settings = CollectSettings.from_env()
    jobs = DynamoJobBook(client("dynamodb"), settings.table_name)
    return Sweep(build_collect(), jobs, TransformJobLookup(client("sagemaker")), settings.late_job)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    deadline = Deadline.of_invocation(datetime.now(UTC), context.get_remaining_time_in_millis())
    if event.detail_type == SCHEDULED:
        return sweep(build_sweep(), deadline)
    return handle(event, build_collect(), deadline)


def handle(event: EventBridgeEvent, collect: Collect, deadline: Deadline | None = None) -> dict[str, Any]:
    """Errors propagate: EventBridge's async invoke retries, then the collector's DLQ keeps the event."""
    job = JobEvent.from_detail(event.detail)
    logger.append_keys(job_name=job.name)
    outcomes = collect.run(job, deadline)
    emit_outcome_metrics(metrics, outcomes)
    counts = {status: sum(o.status == status for o in outcomes) for status in {o.status.value for o in outcomes}}
    logger.info("job collected", job_status=job.status, recorded=len(outcomes), by_status=counts)
    return {"job_name": job.name, "job_status": job.status, "recorded": len(outcomes)}


def sweep(sweeper: Sweep, deadline: Deadline | None = None) -> dict[str, Any]:
    result = sweeper.run(deadline)
    emit_outcome_metrics(metrics, result.outcomes)
    # Each is a job whose event came late or never, or whose collection ran out of time (an alarm).
    metrics.add_metric(name="JobsCollectedBySweep", unit=MetricUnit.Count, value=len(result.collected))
    logger.info("jobs swept", checked=result.checked, collected=result.collected, recorded=len(result.outcomes))
    return {"checked": result.checked, "collected": result.collected, "recorded": len(result.outcomes)}
