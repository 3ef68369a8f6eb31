"""The collector's rules (functions/pipeline/logic/collect.py) over in-memory fakes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

import answers
from pipeline.logic.collect import (
    CHUNK_BYTES,
    CHUNK_IMAGES,
    MAX_JOB_ATTEMPTS,
    RETRY_GROUP_BYTES,
    RETRY_GROUP_IMAGES,
    SHARDS_AT_ONCE,
    Collect,
    retry_groups,
    shard_chunks,
)
from pipeline.logic.deadline import Deadline
from pipeline.logic.errors import TransientError
from pipeline.logic.jobs import JobEvent, JobFiles, JobLayout, QueuedShard
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import JobItem
from pipeline.logic.s3uri import S3Uri
from tests.conftest import load_event
from tests.fakes.ports import MemoryJobBook, MemoryJobQueue, MemoryObjects, MemoryPredictions
from tests.fakes.sagemaker_runtime import fake_prediction
from tests.unit.conftest import BUCKET, T0, Clock

SHARD_PREFIX = "batch-input/"
LAYOUT = JobLayout("dogbreed", SHARD_PREFIX, "manifests/", "transform-output/")


class Job:
    """A transform job as the job builder leaves it (a manifest, an index, PENDING records), then
    the output lines SageMaker writes for each shard."""

    def __init__(
        self, objects: MemoryObjects, store: MemoryPredictions, *shards: list[str], attempt: int = 1, nonce: str = "n"
    ) -> None:
        self.objects, self.store = objects, store
        self.shards = [
            QueuedShard(
                S3Uri(BUCKET, f"{SHARD_PREFIX}20261122T100000-{nonce}{n}.jsonl"),
                tuple(map(_ref, keys)),
                attempt=attempt,
            )
            for n, keys in enumerate(shards)
        ]
        for shard in self.shards:  # as the ingest function writes them
            lines = b"".join(answers.dumps_record(ref.key, ref.key.encode()) + b"\n" for ref in shard.images)
            objects.put_bytes(BUCKET, shard.uri.key, lines, answers.JSON_LINES)
        self.files: JobFiles = LAYOUT.new_job(BUCKET, self.shards, started=T0, nonce=nonce)
        objects.put_json(BUCKET, self.files.index.key, self.files.index_doc(self.shards))
        objects.put_json(BUCKET, self.files.manifest.key, self.files.manifest_doc(self.shards))
        for shard in self.shards:
            for ref in shard.images:
                in_job = Outcome(Status.PENDING, Mode.BATCH, job_name=self.files.name)
                store.write([Change(ref, Event.JOB_STARTED, in_job)], T0)
        self.lines: dict[str, list[str]] = {}

    def answer(self, key: str, answer: answers.Answer | str) -> None:
        """Add the output line for an image (or a raw line) to its shard's .out file."""
        shard = next(s for s in self.shards if key in {ref.key for ref in s.images})
        lines = self.lines.setdefault(shard.uri.key, [])
        lines.append(answer if isinstance(answer, str) else answers.dumps_line(key, answer))
        output = self.files.output_for(shard.uri.key)
        self.objects.objects[output.bucket, output.key] = "".join(line + "\n" for line in lines).encode()

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


def _ref(key: str) -> ImageRef:
    return ImageRef(BUCKET, key, f"etag-{key}", 100, T0)


@pytest.fixture
def store() -> MemoryPredictions:
    return MemoryPredictions()


@pytest.fixture
def objects() -> MemoryObjects:
    return MemoryObjects()


@pytest.fixture
def queue() -> MemoryJobQueue:
    return MemoryJobQueue()


@pytest.fixture
def book() -> MemoryJobBook:
    return MemoryJobBook()


@pytest.fixture
def collect(
    objects: MemoryObjects, store: MemoryPredictions, queue: MemoryJobQueue, book: MemoryJobBook, clock: Clock
) -> Collect:
    return Collect(objects, store, queue, SHARD_PREFIX, book, clock=clock)


def status(store: MemoryPredictions, key: str) -> tuple[Status, str | None]:
    outcome = store.outcome(f"{BUCKET}/{key}")
    assert outcome is not None
    return outcome.status, outcome.error_code


def test_a_completed_job_records_each_image_from_its_output_line(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions
) -> None:
    # GIVEN a job of two shards: the first answered in an order of its own, one image without a
    # line; the second shard without any output
    job = Job(objects, store, ["incoming/rex.jpg", "incoming/sub/half.jpg", "incoming/lost.jpg"], ["incoming/gone.jpg"])
    job.answer("incoming/sub/half.jpg", answers.ErrorRecord("InvalidImage", "cannot decode the image: truncated"))
    job.answer("incoming/rex.jpg", fake_prediction(b"rex"))
    # WHEN the collector reads the finished job
    outcomes = collect.run(job.event())
    # THEN each image gets the answer on its own line, and an image without one FAILED with the reason
    assert len(outcomes) == 4
    assert status(store, "incoming/rex.jpg") == (Status.CLASSIFIED, None)
    assert store.outcome(f"{BUCKET}/incoming/rex.jpg").prediction == fake_prediction(b"rex")  # type: ignore[union-attr]
    assert status(store, "incoming/sub/half.jpg") == (Status.REJECTED, "InvalidImage")
    assert status(store, "incoming/lost.jpg") == (Status.FAILED, "NoAnswerLine")
    assert "no answer line" in (store.outcome(f"{BUCKET}/incoming/lost.jpg").reason or "")  # type: ignore[union-attr]
    assert status(store, "incoming/gone.jpg") == (Status.FAILED, "NoOutput")


@pytest.mark.parametrize("job_status", ["Failed", "Stopped"])
def test_a_failed_job_queues_each_unanswered_image_again_alone(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions, queue: MemoryJobQueue, job_status: str
) -> None:
    # GIVEN a job whose first shard (two images) failed, and whose second shard was answered
    job = Job(objects, store, ["incoming/a.jpg", "incoming/b.jpg"], ["incoming/c.jpg"])
    job.answer("incoming/c.jpg", fake_prediction(b"c"))  # SageMaker goes on with the other files
    # WHEN the collector reads the failed job
    outcomes = collect.run(job.event(job_status, "AlgorithmError: the model container answered 500"))
    # THEN the answered image is recorded, and each unanswered one waits, queued alone for attempt 2
    assert [o.status for o in outcomes] == [Status.CLASSIFIED]
    queued = [QueuedShard.from_message(str(n), body) for n, body in enumerate(queue.messages)]
    assert sorted(ref.key for shard in queued for ref in shard.images) == ["incoming/a.jpg", "incoming/b.jpg"]
    for shard in queued:
        (ref,) = shard.images
        assert shard.attempt == 2 and shard.uri.key.startswith(SHARD_PREFIX)
        assert objects.objects[BUCKET, shard.uri.key] == answers.dumps_record(ref.key, ref.key.encode()) + b"\n"
        record = store.records[ref.image_id]
        assert record.outcome.status is Status.PENDING and record.outcome.job_name is None
        assert "answered 500" in (record.outcome.reason or "") and "attempt 2 of 3" in (record.outcome.reason or "")
    # AND collecting the same event again queues nothing more (its images are no longer in the job)
    assert collect.run(job.event(job_status, "AlgorithmError: the model container answered 500")) == []
    assert len(queue.messages) == 2


def test_an_image_unanswered_after_the_last_attempt_is_failed_with_the_job_reason(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions, queue: MemoryJobQueue
) -> None:
    job = Job(objects, store, ["incoming/a.jpg"], ["incoming/b.jpg"], attempt=MAX_JOB_ATTEMPTS)
    job.answer("incoming/a.jpg", fake_prediction(b"a"))
    collect.run(job.event("Failed", "AlgorithmError: worker died"))
    assert status(store, "incoming/a.jpg") == (Status.CLASSIFIED, None)
    assert status(store, "incoming/b.jpg") == (Status.FAILED, "JobFailed")
    reason = store.outcome(f"{BUCKET}/incoming/b.jpg").reason or ""  # type: ignore[union-attr]
    assert job.files.name in reason and "AlgorithmError: worker died" in reason and "make redrive" in reason
    assert queue.messages == []


def test_an_image_whose_shard_is_gone_is_failed_not_queued(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions, queue: MemoryJobQueue
) -> None:
    job = Job(objects, store, ["incoming/a.jpg"])
    objects.delete(BUCKET, job.shards[0].uri.key)  # expired by the bucket's lifecycle rule
    collect.run(job.event("Failed", "AlgorithmError: worker died"))
    assert status(store, "incoming/a.jpg") == (Status.FAILED, "JobFailed")
    assert "cannot be retried" in (store.outcome(f"{BUCKET}/incoming/a.jpg").reason or "")  # type: ignore[union-attr]
    assert queue.messages == []


def test_a_retry_that_cannot_be_queued_records_nothing_and_is_retried(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions, queue: MemoryJobQueue
) -> None:
    job = Job(objects, store, ["incoming/a.jpg"])
    queue.fail_next(TransientError("SQS is unavailable"))
    with pytest.raises(TransientError):  # EventBridge delivers the event again
        collect.run(job.event("Failed", "AlgorithmError: worker died"))
    assert store.records[f"{BUCKET}/incoming/a.jpg"].outcome.job_name == job.files.name  # still in the job
    collect.run(job.event("Failed", "AlgorithmError: worker died"))
    assert len(queue.messages) == 1


def test_a_malformed_line_leaves_its_image_failed_and_the_others_read(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions
) -> None:
    job = Job(objects, store, ["incoming/a.jpg", "incoming/b.jpg", "incoming/c.jpg"])
    job.answer("incoming/a.jpg", fake_prediction(b"a"))
    job.answer("incoming/b.jpg", "<html>gateway error</html>")
    job.answer("incoming/c.jpg", '{"id": "incoming/c.jpg", "predicted_label": "001"}')  # breaks the contract
    collect.run(job.event())
    assert status(store, "incoming/a.jpg") == (Status.CLASSIFIED, None)
    for key in ("incoming/b.jpg", "incoming/c.jpg"):
        assert status(store, key) == (Status.FAILED, "NoAnswerLine")
        assert "2 unreadable lines" in (store.outcome(f"{BUCKET}/{key}").reason or "")  # type: ignore[union-attr]


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
    store.write(
        [Change(newer, Event.JOB_STARTED, Outcome(Status.PENDING, Mode.BATCH, job_name="dogbreed-later-job"))], T0
    )
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


def test_a_missing_index_is_retried_not_recorded(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions
) -> None:
    job = Job(objects, store, ["incoming/a.jpg"])
    del objects.objects[BUCKET, job.files.index.key]
    with pytest.raises(TransientError, match="does not exist"):  # EventBridge retries, then the job-events DLQ
        collect.run(job.event())
    assert status(store, "incoming/a.jpg") == (Status.PENDING, None)


@pytest.mark.parametrize("folder", ["", "batch-input/", "2026/11/22/"])
def test_an_output_under_another_name_is_found_by_one_listing(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions, folder: str
) -> None:
    """AWS does not document the output names of a manifest's inputs: an output written under
    another folder of the job's output is found by its file name."""
    job = Job(objects, store, ["incoming/a.jpg"], ["incoming/b.jpg"])
    for shard, key in zip(job.shards, ["incoming/a.jpg", "incoming/b.jpg"], strict=True):
        job.answer(key, fake_prediction(key.encode()))
        expected = job.files.output_for(shard.uri.key)
        moved = f"{job.files.output.key}{folder}{expected.key.rsplit('/', 1)[1]}"
        objects.objects[BUCKET, moved] = objects.objects.pop((BUCKET, expected.key))
    listings = []
    list_keys = objects.list_keys
    objects.list_keys = lambda bucket, prefix: listings.append(prefix) or list_keys(bucket, prefix)  # type: ignore[method-assign]
    collect.run(job.event())
    assert status(store, "incoming/a.jpg") == status(store, "incoming/b.jpg") == (Status.CLASSIFIED, None)
    assert listings == ([] if folder == "" else [job.files.output.key])  # once for the job, not per shard


def test_an_output_found_nowhere_is_no_output_after_one_listing(
    collect: Collect, objects: MemoryObjects, store: MemoryPredictions
) -> None:
    job = Job(objects, store, ["incoming/a.jpg"], ["incoming/b.jpg"])
    collect.run(job.event())
    assert status(store, "incoming/a.jpg") == status(store, "incoming/b.jpg") == (Status.FAILED, "NoOutput")


@pytest.mark.parametrize(("job_status", "reason"), [("Completed", ""), ("Failed", "AlgorithmError: worker died")])
def test_the_collector_ends_the_jobs_item_before_it_queues_any_image_again(
    collect: Collect,
    objects: MemoryObjects,
    store: MemoryPredictions,
    queue: MemoryJobQueue,
    book: MemoryJobBook,
    job_status: str,
    reason: str,
) -> None:
    """A builder that receives a retried image must find its job ended (the lifecycle table lets it
    take an image only from a job that answers nothing more)."""
    job = Job(objects, store, ["incoming/a.jpg"], ["incoming/b.jpg"])
    book.open(JobItem(job.files.name, "InProgress", holder="builder"), T0)
    job.answer("incoming/a.jpg", fake_prediction(b"a"))
    seen_when_queued: list[str] = []  # the job item's status each time an image is queued again
    send_many = queue.send_many

    def send_and_look(bodies: Sequence[str]) -> None:
        seen_when_queued.extend(book.items[job.files.name].status for _ in bodies)
        send_many(bodies)

    queue.send_many = send_and_look  # type: ignore[method-assign]
    collect.run(job.event(job_status, reason or None))
    assert book.in_flight() == [] and book.items[job.files.name].status == job_status
    assert book.items[job.files.name].failure_reason == reason
    assert seen_when_queued == ([job_status] if job_status == "Failed" else [])


def test_a_large_failed_job_is_queued_again_a_group_at_a_time_each_group_recorded(
    collect: Collect,
    objects: MemoryObjects,
    store: MemoryPredictions,
    queue: MemoryJobQueue,
    book: MemoryJobBook,
    clock: Clock,
) -> None:
    """A job that fails before answering anything leaves every image unanswered: the collector
    queues them again a group at a time, records each group as it is queued, and stops at its
    deadline; the next collection (the sweep) goes on where it stopped, queueing nothing twice."""
    keys = [f"incoming/{n:03}.jpg" for n in range(2 * RETRY_GROUP_IMAGES + 50)]
    job = Job(objects, store, keys)
    book.open(JobItem(job.files.name, "InProgress", holder="builder"), T0)
    calls: list[int] = []
    send_many = queue.send_many

    def send_and_take_time(bodies: Sequence[str]) -> None:
        calls.append(len(bodies))
        send_many(bodies)
        clock.advance(60)  # each group takes a minute: the deadline passes after the first

    queue.send_many = send_and_take_time  # type: ignore[method-assign]
    deadline = Deadline(ends_at=T0 + timedelta(minutes=5), stop_at=T0 + timedelta(seconds=30))
    collect.run(job.event("Failed", "AlgorithmError: the model container never became healthy"), deadline)
    assert calls == [RETRY_GROUP_IMAGES]  # one group, then out of time
    waiting_alone = [k for k in keys if store.records[f"{BUCKET}/{k}"].outcome.job_name is None]
    assert waiting_alone == keys[:RETRY_GROUP_IMAGES]  # the queued group is recorded, the rest still in the job
    assert book.uncollected() == [job.files.name] and book.in_flight() == []  # ended, not yet collected
    collect.run(job.event("Failed", "AlgorithmError: the model container never became healthy"))  # the next collection
    assert calls == [RETRY_GROUP_IMAGES, RETRY_GROUP_IMAGES, 50]
    assert sorted(QueuedShard.from_json(json.loads(m)).images[0].key for m in queue.messages) == keys
    assert book.uncollected() == []


def test_retry_groups_are_bounded_by_images_and_bytes() -> None:
    refs = [_ref(f"incoming/{n}.jpg") for n in range(5)]
    lines = {ref.key: b"x" * (RETRY_GROUP_BYTES // 2) for ref in refs}
    assert [len(group) for group in retry_groups(refs, lines)] == [2, 2, 1]
    small = {ref.key: b"x" for ref in refs}
    many = [_ref(f"incoming/{n}.jpg") for n in range(RETRY_GROUP_IMAGES + 1)]
    assert [len(g) for g in retry_groups(many, small | {r.key: b"x" for r in many})] == [RETRY_GROUP_IMAGES, 1]


def test_shards_are_read_in_chunks_bounded_by_count_images_and_a_failed_jobs_bytes() -> None:
    def shard(n: int, images: int, size: int) -> tuple[QueuedShard, list[ImageRef]]:
        refs = [ImageRef(BUCKET, f"incoming/{n}-{i}.jpg", "e", size, T0) for i in range(images)]
        return QueuedShard(S3Uri(BUCKET, f"{SHARD_PREFIX}{n}.jsonl"), tuple(refs)), refs

    one_image = [shard(n, 1, 1000) for n in range(SHARDS_AT_ONCE + 1)]
    assert [len(c) for c in shard_chunks(one_image, failed=False)] == [SHARDS_AT_ONCE, 1]
    full = [shard(n, CHUNK_IMAGES // 2, 1000) for n in range(3)]
    assert [len(c) for c in shard_chunks(full, failed=False)] == [2, 1]
    large = [shard(n, 3, CHUNK_BYTES // 4) for n in range(3)]  # each shard about 4/3 x 3/4 of CHUNK_BYTES
    assert [len(c) for c in shard_chunks(large, failed=False)] == [3]  # a completed job's shards are not read
    assert [len(c) for c in shard_chunks(large, failed=True)] == [1, 1, 1]
