"""Every way the pipeline can stall has an alarm on the stack's topic, and each threshold follows from
the parameters and settings it depends on (template.yaml writes the derivation beside each)."""

from __future__ import annotations

import ast
from typing import Any

import pytest

import answers
from infra.template import load_template, parameter_defaults, resolve
from pipeline.handlers.observe import ASSESSED, EXPECTED, UNDER, confidence_metrics
from pipeline.logic.outcomes import Mode, Outcome, Status

TEMPLATE = load_template()
RESOURCES = TEMPLATE["Resources"]
DEFAULTS = parameter_defaults(TEMPLATE)
HOUR_S = 3600

# Each failure mode of the flood and trickle paths, and the alarm that tells of it: (alarm, namespace,
# metric, the resource its dimension names or None for the functions' own metrics).
FAILURE_MODES: dict[str, tuple[str, str, str, str | None]] = {
    "the ingest function fails or times out (a batch of large photos)": (
        "IngestErrorsAlarm", "AWS/Lambda", "Errors", "IngestFunction"),
    "uploads wait: the ingest function fails on them or does not keep up": (
        "UploadQueueAgeAlarm", "AWS/SQS", "ApproximateAgeOfOldestMessage", "ImageQueue"),
    "uploads failed every delivery": (
        "ImageDeadLetterAlarm", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "ImageDeadLetterQueue"),
    "the job builder crashes (a job item it cannot write, a bug)": (
        "BuildJobsErrorsAlarm", "AWS/Lambda", "Errors", "BuildJobsFunction"),
    "nothing takes shards off the job queue": (
        "JobQueueNotDrainedAlarm", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "JobQueue"),
    "shards failed every delivery": (
        "JobDeadLetterAlarm", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "JobDeadLetterQueue"),
    "the collector fails or times out (a large failed job, a refused call)": (
        "CollectErrorsAlarm", "AWS/Lambda", "Errors", "CollectFunction"),
    "job events failed every retry": (
        "JobEventsDeadLetterAlarm", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "JobEventsDeadLetterQueue"),
    "a job's end event was lost, or its collection ran out of time": (
        "LateJobsAlarm", "DogBreedPipeline", "JobsCollectedBySweep", None),
    "images recorded FAILED": ("ImagesFailedAlarm", "DogBreedPipeline", "ImagesFailed", None),
    "outcome events the pipe could not publish": ("OutcomeEventsDeadLetterAlarm", "AWS/SQS",
        "ApproximateNumberOfMessagesVisible", "OutcomeEventsDeadLetterQueue"),
}  # fmt: skip
# Failure modes whose alarm is metric math (each with its own test below).
BY_METRIC_MATH = {"reclassify requests that nothing takes off their queue": "ReclassifyQueueStalledAlarm"}
# Alarms that may take longer than an hour, and why that is right.
SLOWER = {
    "ConfidenceDriftAlarm": "no stall: drift in what users upload shows over a day of answers, not a minute",
    "JobQueueAgeAlarm": "a backstop: shards may wait for capacity up to MaxBatchWaitMinutes",
    "ImagesWaitingAlarm": "waiting for capacity is not a stall until it lasts; the images say why they wait",
}


def alarm(name: str) -> dict[str, Any]:
    resource = RESOURCES[name]
    assert resource["Type"] == "AWS::CloudWatch::Alarm"
    return dict(resource["Properties"])


def dimension_target(properties: dict[str, Any]) -> str | None:
    """The logical id of the resource the alarm's dimension names, if any."""
    ((dimension,),) = [properties["Dimensions"]]
    value = dimension["Value"]
    if isinstance(value, dict):
        return str(value.get("Ref") or value["Fn::GetAtt"][0])
    return None


@pytest.mark.parametrize("mode", FAILURE_MODES)
def test_each_failure_mode_has_an_alarm_on_the_topic(mode: str) -> None:
    name, namespace, metric, target = FAILURE_MODES[mode]
    properties = alarm(name)
    assert (properties["Namespace"], properties["MetricName"], dimension_target(properties)) == (
        namespace, metric, target)  # fmt: skip
    assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert properties["TreatMissingData"] == "notBreaching"  # quiet when nothing flows


def test_every_alarm_fires_within_an_hour_or_says_why_not() -> None:
    alarms = {name for name, r in RESOURCES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    # each alarm has its reason
    assert {name for name, *_ in FAILURE_MODES.values()} | set(BY_METRIC_MATH.values()) | set(SLOWER) == alarms
    for name in alarms - set(SLOWER):
        properties = alarm(name)
        waited = properties["Threshold"] if properties.get("MetricName") == "ApproximateAgeOfOldestMessage" else 0
        periods = [m["MetricStat"]["Period"] for m in properties.get("Metrics", []) if "MetricStat" in m]
        period = max(periods) if periods else properties["Period"]  # metric math: its metrics' periods
        assert waited + period * properties["EvaluationPeriods"] <= HOUR_S, name


def test_the_queue_age_thresholds_follow_from_the_queues_and_functions() -> None:
    # an upload retried once is not an alarm; one retried twice, or waiting as long, is
    visibility = RESOURCES["ImageQueue"]["Properties"]["VisibilityTimeout"]
    ingest_timeout = RESOURCES["IngestFunction"]["Properties"]["Timeout"]
    threshold = alarm("UploadQueueAgeAlarm")["Threshold"]
    assert threshold >= 2 * visibility + DEFAULTS["BatchingWindowSeconds"] + ingest_timeout
    # a shard waits at most MaxBatchWaitMinutes, then one more return from the queue before the builder fails it
    job_visibility = RESOURCES["JobQueue"]["Properties"]["VisibilityTimeout"]
    assert alarm("JobQueueAgeAlarm")["Threshold"] == DEFAULTS["MaxBatchWaitMinutes"] * 60 + job_visibility


def test_the_dashboard_shows_each_function_and_queue_alarmed() -> None:
    body = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    text, names = body[0], body[1]
    for function in ("IngestFunction", "BuildJobsFunction", "CollectFunction"):
        assert {"Ref": function} in names.values()
    assert "Errors" in text and "JobsCollectedBySweep" in text and "ApproximateAgeOfOldestMessage" in text


def reclassify_stall_fires(periods: list[tuple[float, float]]) -> bool:
    """Whether the reclassify queue's alarm fires on these 5-minute periods of (requests visible at
    the least, requests deleted), by the alarm's own expression, M of N periods."""
    properties = alarm("ReclassifyQueueStalledAlarm")
    (expression,) = [m["Expression"] for m in properties["Metrics"] if m.get("ReturnData")]
    for m in properties["Metrics"]:
        if "MetricStat" in m:
            assert m["MetricStat"]["Metric"]["Dimensions"] == [
                {"Name": "QueueName", "Value": {"Fn::GetAtt": ["ReclassifyQueue", "QueueName"]}}
            ]
    breaching = [metric_math(expression, {"visible": v, "deleted": d}) > properties["Threshold"] for v, d in periods]
    last = breaching[-properties["EvaluationPeriods"] :]
    return sum(last) >= properties["DatapointsToAlarm"]


def test_a_reclassify_backlog_that_nothing_takes_fires_and_one_being_worked_through_does_not() -> None:
    assert reclassify_stall_fires([(500_000, 0)] * 3)  # the event source disabled: nothing taken
    assert not reclassify_stall_fires([(500_000, 1_200)] * 3)  # a backfill under way: visible for hours
    assert not reclassify_stall_fires([(0, 0)] * 3)  # nothing asked
    assert not reclassify_stall_fires([(500_000, 0), (500_000, 0), (499_900, 100)])  # taken again


# -- drift: the share of answers under the review threshold, against what validation predicts ------------


def metric_math(expression: str, values: dict[str, float]) -> float:
    """CloudWatch metric math, as much of it as the drift alarm uses: numbers, ids, + - * /, the
    comparisons, AND and OR, and IF(condition, then, else) (CloudWatch user guide, "Metric math syntax
    and functions")."""
    tree = ast.parse(expression.replace(" AND ", " and ").replace(" OR ", " or "), mode="eval")

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.BinOp):
            left, right = value(node.left), value(node.right)
            return {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}.get(
                type(node.op), left / right if isinstance(node.op, ast.Div) else None)  # fmt: skip
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            left, right = value(node.left), value(node.comparators[0])
            return {ast.GtE: left >= right, ast.Gt: left > right, ast.LtE: left <= right, ast.Lt: left < right}[
                type(node.ops[0])]  # fmt: skip
        if isinstance(node, ast.BoolOp):
            results = [value(v) for v in node.values]
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "IF":
            condition, then, otherwise = node.args
            return value(then) if value(condition) else value(otherwise)
        raise AssertionError(f"not metric math this test knows: {ast.dump(node)}")

    return float(value(tree))


def day_of_answers(confidences: list[float], threshold: float, expected_share: float) -> list[Outcome]:
    """A day's classified outcomes with these confidences, each answered by a model whose validation
    split put `expected_share` of its images under `threshold`."""
    candidates = [(answers.Candidate("069", "French_bulldog", c),) for c in confidences]
    return [
        Outcome(Status.CLASSIFIED, Mode.BATCH, answers.Prediction(top5, threshold=threshold,
                                                                  expected_under_threshold=expected_share))
        for top5 in candidates
    ]  # fmt: skip


def drift_alarm_fires(outcomes: list[Outcome]) -> bool:
    """The alarm's state after a day of these outcomes: the metrics the functions emit, summed over its
    one-day period as CloudWatch sums them, through its expression and threshold."""
    properties = alarm("ConfidenceDriftAlarm")
    day = confidence_metrics(outcomes)  # one invocation's sums; a day's are the same sums
    by_name = {ASSESSED: day[ASSESSED], UNDER: day[UNDER], EXPECTED: day[EXPECTED]}
    values: dict[str, float] = {}
    (returned,) = [query for query in properties["Metrics"] if query.get("ReturnData", True)]
    for query in properties["Metrics"]:
        if "MetricStat" in query:
            stat = query["MetricStat"]
            assert (stat["Period"], stat["Stat"], stat["Metric"]["Namespace"]) == (86400, "Sum", "DogBreedPipeline")
            values[query["Id"]] = by_name[stat["Metric"]["MetricName"]]
    expression = resolve(returned["Expression"], {**DEFAULTS})
    assert properties["ComparisonOperator"] == "GreaterThanThreshold" and properties["EvaluationPeriods"] == 1
    return metric_math(expression, values) > properties["Threshold"]


def test_a_day_of_unsure_answers_fires_the_drift_alarm_and_a_day_like_validation_does_not() -> None:
    threshold, expected = 0.6, 0.1  # validation put 10% of its images under 0.6
    like_validation = [0.3] * 10 + [0.9] * 90  # 10% under
    assert not drift_alarm_fires(day_of_answers(like_validation, threshold, expected))
    noisy = [0.3] * 18 + [0.9] * 82  # 18%: under DriftFactor (2) times 10%
    assert not drift_alarm_fires(day_of_answers(noisy, threshold, expected))
    drifted = [0.3] * 45 + [0.9] * 155  # 22.5% under the threshold: more than twice what validation predicts
    assert drift_alarm_fires(day_of_answers(drifted, threshold, expected))
    # too few answers to judge (DriftMinAnswers), and answers of a model without validation figures
    assert not drift_alarm_fires(day_of_answers([0.3] * (DEFAULTS["DriftMinAnswers"] - 1), threshold, expected))
    untracked = [Outcome(Status.CLASSIFIED, Mode.BATCH, answers.Prediction(
        (answers.Candidate("069", "French_bulldog", 0.1),), threshold=0.6))] * 500  # fmt: skip
    assert not drift_alarm_fires(untracked)
    properties = alarm("ConfidenceDriftAlarm")
    assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}] and properties["TreatMissingData"] == "notBreaching"


def test_the_dashboard_shows_the_confidence_and_the_share_under_the_threshold() -> None:
    text = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    for metric in ("AnswersUnderThreshold", "ExpectedUnderThreshold", "ConfidenceTotal", "ImagesClassified"):
        assert f'"{metric}"' in text
