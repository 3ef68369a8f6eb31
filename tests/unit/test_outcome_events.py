"""An event for every outcome: which records carry a detail-type (outcomes.py, the table adapter), and
what template.yaml's pipe makes of the table's stream records (devstack/aws/pipes.py reads the pipe
from the template, as the local stack runs it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import answers
from devstack.aws.pipes import PipeSpec
from devstack.aws.provision import LocalNames, references
from infra.template import load_template, resolve
from pipeline.adapters.dynamodb import marshal, outcome_item
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import JOB_COLLECTED

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)
REF = ImageRef("dogbreed-images-local", "incoming/rex.jpg", "e1", 1234, NOW)


def prediction(confidence: float) -> answers.Prediction:
    return answers.Prediction((answers.Candidate("012", "Beagle", confidence),), "int8", "sha256:0", 0.6, 0.1)


OUTCOMES = {
    "Image Classified": Outcome(Status.CLASSIFIED, Mode.BATCH, prediction(0.9)),
    "Image Needs Review": Outcome(Status.CLASSIFIED, Mode.SERVERLESS, prediction(0.4)),
    "Image Rejected": Outcome(Status.REJECTED, Mode.SERVERLESS, reason="not an image", error_code="NotAnImage"),
    "Image Failed": Outcome(Status.FAILED, Mode.BATCH, reason="gave up", error_code="JobFailed"),
}


@pytest.mark.parametrize("detail_type", OUTCOMES)
def test_each_final_outcome_is_recorded_with_its_detail_type(detail_type: str) -> None:
    assert OUTCOMES[detail_type].detail_type == detail_type
    assert outcome_item(REF, OUTCOMES[detail_type], NOW)["detail_type"] == detail_type


def test_an_image_that_waits_has_none() -> None:
    for waiting in (Outcome(Status.PENDING, Mode.BATCH), Outcome(Status.PENDING, Mode.BATCH, job_name="j")):
        assert waiting.detail_type is None and "detail_type" not in outcome_item(REF, waiting, NOW)


@pytest.fixture(scope="module")
def pipe() -> PipeSpec:
    (logical_id,) = [i for i, r in load_template()["Resources"].items() if r["Type"] == "AWS::Pipes::Pipe"]
    resource = load_template()["Resources"][logical_id]
    refs = references(LocalNames())
    props = {k: resolve(v, refs) for k, v in resource["Properties"].items() if k != "RoleArn"}
    return PipeSpec.of_properties(logical_id, props, resource["Properties"]["RoleArn"]["Fn::GetAtt"][0])


def stream_record(event_name: str, item: dict[str, Any]) -> dict[str, Any]:
    """A record of the table's stream (NEW_IMAGE), as DynamoDB Streams delivers it."""
    return {
        "eventID": "1",
        "eventName": event_name,
        "eventSource": "aws:dynamodb",
        "dynamodb": {"Keys": {"image_id": {"S": item["image_id"]}}, "NewImage": marshal(item), "SequenceNumber": "1"},
    }


@pytest.mark.parametrize("detail_type", OUTCOMES)
def test_the_pipe_publishes_a_final_outcome_with_the_record_as_detail(pipe: PipeSpec, detail_type: str) -> None:
    item = outcome_item(REF, OUTCOMES[detail_type], NOW)
    for event_name in ("INSERT", "MODIFY"):  # a first outcome, or a later one (a new upload, classified again)
        event = pipe.event(stream_record(event_name, item))
        assert event is not None and event["detail-type"] == detail_type
        assert event["source"] == "dogbreed.dogbreed-local"  # dogbreed.<stack name>: two stacks apart
        assert event["detail"]["dynamodb"]["NewImage"]["image_id"] == {"S": REF.image_id}


def test_the_pipe_leaves_waiting_labels_removals_and_labelled_records_alone(pipe: PipeSpec) -> None:
    waiting = outcome_item(REF, Outcome(Status.PENDING, Mode.BATCH, job_name="j"), NOW)
    labelled = outcome_item(REF, OUTCOMES["Image Needs Review"], NOW)
    del labelled["detail_type"], labelled["review"]  # what cli.label leaves of the record
    label_item = {"image_id": "#label/" + REF.image_id, "given_breed": "Beagle", "review": "labelled"}
    assert pipe.event(stream_record("MODIFY", waiting)) is None
    assert pipe.event(stream_record("MODIFY", labelled)) is None
    assert pipe.event(stream_record("INSERT", label_item)) is None
    removed = stream_record("REMOVE", outcome_item(REF, OUTCOMES["Image Classified"], NOW))
    assert pipe.event(removed) is None


def test_a_collected_job_is_published_once_marked(pipe: PipeSpec) -> None:
    job = {"image_id": "#job/dogbreed-1", "job_name": "dogbreed-1", "job_status": "Completed", "images": 20}
    assert pipe.event(stream_record("MODIFY", job)) is None  # opened, or its status set: not yet
    event = pipe.event(stream_record("MODIFY", {**job, "detail_type": JOB_COLLECTED, "collected_at": "t"}))
    assert event is not None and event["detail-type"] == "Transform Job Collected"
