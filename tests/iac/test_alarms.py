"""Every way the pipeline can stall has an alarm on the stack's topic, and each threshold follows from
the parameters and settings it depends on (template.yaml writes the derivation beside each)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.template import load_template, parameter_defaults

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
}  # fmt: skip
# Alarms that may take longer than an hour, and why that is right.
SLOWER = {
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
    assert {name for name, *_ in FAILURE_MODES.values()} | set(SLOWER) == alarms  # each alarm has its reason
    for name in alarms - set(SLOWER):
        properties = alarm(name)
        waited = properties["Threshold"] if properties["MetricName"] == "ApproximateAgeOfOldestMessage" else 0
        assert waited + properties["Period"] * properties["EvaluationPeriods"] <= HOUR_S, name


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
