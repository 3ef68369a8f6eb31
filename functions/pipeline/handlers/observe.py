"""CloudWatch metrics (EMF) shared by the functions. template.yaml's alarms and dashboard read these
names (tests/iac checks that the dashboard names only metrics emitted here or by the handlers)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from aws_lambda_powertools import Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit

from pipeline.logic.outcomes import Outcome, Status

OUTCOME_COUNTERS = {
    Status.CLASSIFIED: "ImagesClassified",
    Status.REJECTED: "ImagesRejected",
    Status.FAILED: "ImagesFailed",
}
# The same outcomes by mode (dimensions `mode` and `outcome`), for the dashboard; the totals above carry
# only the service dimension, so that an alarm watches one metric.
BY_MODE = "ImagesByMode"


def emit_outcome_metrics(metrics: Metrics, outcomes: Iterable[Outcome]) -> None:
    counts = dict.fromkeys(OUTCOME_COUNTERS.values(), 0)
    by_mode: Counter[tuple[str, str]] = Counter()
    for outcome in outcomes:
        if outcome.status in OUTCOME_COUNTERS:
            counts[OUTCOME_COUNTERS[outcome.status]] += 1
            by_mode[(outcome.mode.value, outcome.status.value)] += 1
        if outcome.inference_ms is not None:
            metrics.add_metric(name="InferenceLatency", unit=MetricUnit.Milliseconds, value=outcome.inference_ms)
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    for (mode, status), value in sorted(by_mode.items()):
        with single_metric(name=BY_MODE, unit=MetricUnit.Count, value=value) as metric:
            metric.add_dimension(name="mode", value=mode)
            metric.add_dimension(name="outcome", value=status)
