"""CloudWatch metrics (EMF) shared by both functions."""

from __future__ import annotations

from collections.abc import Iterable

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from pipeline.logic.outcomes import Outcome, Status

_COUNTERS = {Status.CLASSIFIED: "ImagesClassified", Status.REJECTED: "ImagesRejected", Status.FAILED: "ImagesFailed"}


def emit_outcome_metrics(metrics: Metrics, outcomes: Iterable[Outcome]) -> None:
    counts = dict.fromkeys(_COUNTERS.values(), 0)
    for outcome in outcomes:
        if outcome.status in _COUNTERS:
            counts[_COUNTERS[outcome.status]] += 1
        if outcome.inference_ms is not None:
            metrics.add_metric(name="InferenceLatency", unit=MetricUnit.Milliseconds, value=outcome.inference_ms)
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
