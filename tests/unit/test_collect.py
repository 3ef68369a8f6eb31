"""The collector's rules (functions/pipeline/logic/collect.py) over in-memory fakes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.logic import answers
from pipeline.logic.collect import Collect, JobEvent
from pipeline.logic.errors import TransientError
from pipeline.logic.jobs import JobFiles, JobLayout
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from tests.conftest import load_event
from tests.fakes.ports import MemoryObjects, MemoryPredictions
from tests.fakes.sagemaker_runtime import fake_prediction
from tests.unit.conftest import BUCKET, T0, Clock

LAYOUT = JobLayout("dogbreed", "incoming/", "manifests/", "transform-output/")


class Job:
    """A transform job as the ingest side leaves it: a manifest and PENDING records; then outputs."""

    def __init__(self, objects: MemoryObjects, store: MemoryPredictions, keys: list[str]) -> None:
        self.objects, self.store = objects, store
        self.refs = [ImageRef(BUCKET, key, f"etag-{n}", 100, T0) for n, key in enumerate(keys)]
        self.files: JobFiles = LAYOUT.new_job(BUCKET, self.refs, started=T0, nonce="n")
        objects.put_json(BUCKET, self.files.manifest.key, self.files.manifest_doc(keys))
        for ref in self.refs:
            store.record(ref, Outcome(Status.PENDING, Mode.BATCH, job_name=self.files.name), T0)

    def answer(self, key: str, answer: answers.Answer | bytes) -> None:
        body = answer if isinstance(answer, bytes) else answers.dumps(answer).encode()
        output = self.files.output_for(key)
        self.objects.objects[output.bucket, output.key] = body

    def event(self, status: str = "Completed", reason: str | None = None) -> JobEvent:
        detail = {
            "TransformJobName": self.files.name,
            "TransformJobStatus": status,
            "FailureReason": reason,
            "ModelName": "dogbreed-resnet18",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": str(self.files.manifest)}}},
            "TransformOutput": {"S3OutputPath": str(self.files.output).rstrip("/")},
        }
        return JobEvent.from_detail(detail)


@pytest.fixture
def store() -> MemoryPredictions:
    return MemoryPredictions()


@pytest.fixture
def objects() -> MemoryObjects:
    return MemoryObjects()


@pytest.fixture
def collect(objects: MemoryObjects, store: MemoryPredictions, clock: Clock) -> Collect:
    return Collect(objects, store, clock=clock)


def status(store: MemoryPredictions, key: str) -> tuple[Status, str | None]:
    outcome = store.outcome(f"{BUCKET}/{key}")
    assert outcome is not None
    return outcome.status, outcome.error_code


def test_a_completed_job_records_each_image_from_its_output(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions
) -> None:
    job = Job(objects, store, ["incoming/rex.jpg", "incoming/sub/half.jpg", "incoming/lost.jpg"])
    job.answer("incoming/rex.jpg", fake_prediction(b"rex"))
    job.answer("incoming/sub/half.jpg", answers.ErrorRecord("InvalidImage", "cannot decode the image: truncated"))
    # "lost.jpg" has no output at all
    outcomes = collect.run(job.event())
    assert len(outcomes) == 3
    assert status(store, "incoming/rex.jpg") == (Status.CLASSIFIED, None)
    assert store.outcome(f"{BUCKET}/incoming/rex.jpg").prediction == fake_prediction(b"rex")  # type: ignore[union-attr]
    assert status(store, "incoming/sub/half.jpg") == (Status.REJECTED, "InvalidImage")
    assert status(store, "incoming/lost.jpg") == (Status.FAILED, "JobCompleted")
    assert "wrote no output" in (store.outcome(f"{BUCKET}/incoming/lost.jpg").reason or "")  # type: ignore[union-attr]


def test_a_failed_job_fails_its_unfinished_images_with_the_job_reason(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions
) -> None:
    job = Job(objects, store, ["incoming/a.jpg", "incoming/b.jpg"])
    job.answer("incoming/a.jpg", fake_prediction(b"a"))
    collect.run(job.event("Failed", "AlgorithmError: worker died"))
    assert status(store, "incoming/a.jpg") == (Status.CLASSIFIED, None)
    assert status(store, "incoming/b.jpg") == (Status.FAILED, "JobFailed")
    reason = store.outcome(f"{BUCKET}/incoming/b.jpg").reason or ""  # type: ignore[union-attr]
    assert job.files.name in reason and "AlgorithmError: worker died" in reason


def test_a_broken_output_is_a_failure_not_a_rejection(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions
) -> None:
    job = Job(objects, store, ["incoming/a.jpg"])
    job.answer("incoming/a.jpg", b"<html>gateway error</html>")
    collect.run(job.event())
    assert status(store, "incoming/a.jpg") == (Status.FAILED, "BadModelOutput")


def test_collecting_twice_writes_nothing_new(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions
) -> None:
    job = Job(objects, store, ["incoming/a.jpg"])
    job.answer("incoming/a.jpg", fake_prediction(b"a"))
    assert len(collect.run(job.event())) == 1
    writes = store.writes
    assert collect.run(job.event()) == []
    assert store.writes == writes


def test_an_image_that_moved_on_is_left_alone(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions
) -> None:
    # GIVEN an image re-uploaded while its job ran: its record now belongs to newer content
    job = Job(objects, store, ["incoming/a.jpg"])
    job.answer("incoming/a.jpg", fake_prediction(b"a"))
    newer = ImageRef(BUCKET, "incoming/a.jpg", "etag-new", 100, datetime(2026, 11, 22, 11, tzinfo=UTC))
    store.record(newer, Outcome(Status.PENDING, Mode.BATCH, job_name="dogbreed-later-job"), T0)
    # WHEN the old job is collected
    assert collect.run(job.event()) == []
    # THEN the newer content's record is untouched
    assert store.records[newer.image_id].ref.etag == "etag-new"


def test_a_job_still_running_is_not_collected(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions
) -> None:
    job = Job(objects, store, ["incoming/a.jpg"])
    assert collect.run(job.event("InProgress")) == []
    assert status(store, "incoming/a.jpg") == (Status.PENDING, None)


def test_the_event_files_parse() -> None:
    event = JobEvent.from_detail(load_event("collect_transform_failed.json")["detail"])
    assert event.status == "Failed" and event.failure_reason.startswith("ClientError")
    with pytest.raises(ValueError, match="lacks"):
        JobEvent.from_detail({"TransformJobName": "x"})


def test_a_missing_manifest_is_retried_not_recorded(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions
) -> None:
    job = Job(objects, store, ["incoming/a.jpg"])
    del objects.objects[BUCKET, job.files.manifest.key]
    with pytest.raises(TransientError, match="does not exist"):  # EventBridge retries, then the job-events DLQ
        collect.run(job.event())
    assert status(store, "incoming/a.jpg") == (Status.PENDING, None)
