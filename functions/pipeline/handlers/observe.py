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
# What the answers' confidence says, summed over an invocation's outcomes (EMF takes at most 100 values
# of a metric per record: a job's thousands of answers are summed, not listed). The drift alarm divides
# the day's AnswersUnderThreshold by its ExpectedUnderThreshold (what validation predicts for the same
# answers); the dashboard's mean confidence is ConfidenceTotal / ImagesClassified.
ASSESSED = "AnswersAssessed"  # classified answers with a threshold and validation's share under it
UNDER = "AnswersUnderThreshold"  # of those, the ones under the threshold (in the review queue)
EXPECTED = "ExpectedUnderThreshold"  # the sum of their validation shares: how many validation predicts
CONFIDENCE_TOTAL = "ConfidenceTotal"  # the sum of every classified answer's confidence


def confidence_metrics(outcomes: Iterable[Outcome]) -> dict[str, float]:
    """The confidence metrics of these outcomes (pure: the drift alarm's test feeds it a day)."""
    totals = dict.fromkeys((ASSESSED, UNDER, EXPECTED, CONFIDENCE_TOTAL), 0.0)
    for outcome in outcomes:
        prediction = outcome.prediction
        if outcome.status is not Status.CLASSIFIED or prediction is None:
            continue
        totals[CONFIDENCE_TOTAL] += prediction.confidence
        if prediction.threshold is not None and prediction.expected_under_threshold is not None:
            totals[ASSESSED] += 1
            totals[UNDER] += outcome.needs_review
            totals[EXPECTED] += prediction.expected_under_threshold
    return totals


def emit_outcome_metrics(metrics: Metrics, outcomes: Iterable[Outcome]) -> None:
    outcomes = list(outcomes)
    for name, total in confidence_metrics(outcomes).items():
        metrics.add_metric(
            name=name, unit=MetricUnit.NoUnit if name == CONFIDENCE_TOTAL else MetricUnit.Count, value=total
        )
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
