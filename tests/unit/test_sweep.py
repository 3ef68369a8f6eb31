"""The sweep (functions/pipeline/logic/sweep.py): a job whose end event never came, or whose
collection ran out of time, is collected from what SageMaker says of it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from pipeline.logic.collect import RETRY_GROUP_IMAGES, Collect
from pipeline.logic.deadline import Deadline
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.outcomes import Mode, Outcome, Status
from pipeline.logic.ports import JobItem
from pipeline.logic.s3uri import S3Uri
from pipeline.logic.sweep import Sweep
from tests.fakes.ports import MemoryJobBook, MemoryJobQueue, MemoryObjects, MemoryPredictions, MemoryTransformJobs
from tests.fakes.sagemaker_runtime import fake_prediction
from tests.unit.conftest import BUCKET, T0, Clock
from tests.unit.test_collect import SHARD_PREFIX, Job

LATE = timedelta(minutes=10)


class World:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.objects, self.store, self.queue = MemoryObjects(), MemoryPredictions(), MemoryJobQueue()
        self.book, self.transforms = MemoryJobBook(), MemoryTransformJobs()
        collect = Collect(self.objects, self.store, self.queue, SHARD_PREFIX, self.book, clock=clock)
        self.sweep = Sweep(collect, self.book, self.transforms, LATE, clock=clock)

    def job(self, *keys: str) -> Job:
        """A job the builder started: its files, its images PENDING in it, its item in flight."""
        job = Job(self.objects, self.store, list(keys))
        self.book.open(JobItem(job.files.name, "InProgress", holder="builder"), T0)
        self.transforms.start(job.files.name, str(job.files.manifest), str(job.files.output))
        return job

    def status(self, key: str) -> Status:
        return self.store.records[f"{BUCKET}/{key}"].outcome.status


@pytest.fixture
def world(clock: Clock) -> World:
    return World(clock)


def test_a_job_whose_end_event_never_came_is_collected_once_it_is_late(world: World, clock: Clock) -> None:
    job = world.job("incoming/a.jpg")
    job.answer("incoming/a.jpg", fake_prediction(b"a"))
    world.transforms.finish(job.files.name, at=T0)
    clock.advance(LATE.total_seconds() - 1)
    assert world.sweep.run().collected == []  # its event may still come
    assert world.status("incoming/a.jpg") is Status.PENDING and world.book.in_flight() == [job.files.name]
    clock.advance(1)
    result = world.sweep.run()
    assert result.collected == [job.files.name] and len(result.outcomes) == 1
    assert world.status("incoming/a.jpg") is Status.CLASSIFIED
    assert world.book.in_flight() == [] and world.book.uncollected() == []  # its slot is free again
    assert world.sweep.run().checked == 0  # nothing left to ask about


def test_a_failed_job_whose_event_was_lost_has_its_images_queued_again(world: World, clock: Clock) -> None:
    job = world.job("incoming/a.jpg", "incoming/b.jpg")
    world.transforms.finish(job.files.name, status="Failed", at=T0)
    clock.advance(LATE.total_seconds())
    assert world.sweep.run().collected == [job.files.name]
    assert len(world.queue.messages) == 2  # each alone, as the event's collection would have
    assert world.status("incoming/a.jpg") is Status.PENDING


def test_running_jobs_are_left_and_unknown_ones_dropped(world: World, clock: Clock) -> None:
    running = world.job("incoming/a.jpg")
    world.book.open(JobItem("dogbreed-never-started", "InProgress", holder="builder"), T0)
    clock.advance(3600)
    result = world.sweep.run()
    assert result.checked == 2 and result.collected == []
    assert world.book.uncollected() == [running.files.name]  # asked again next time
    assert world.status("incoming/a.jpg") is Status.PENDING


def test_a_job_its_builder_is_still_starting_is_left_to_the_builder(world: World, clock: Clock) -> None:
    """The builder writes a job's item before CreateTransformJob: a sweep in between finds a job
    SageMaker does not know yet, and must not drop it (its end event may be the one lost)."""
    world.book.open(JobItem("dogbreed-being-started", "Starting", holder="builder"), T0)
    clock.advance(3600)
    assert world.sweep.run().checked == 1
    assert world.book.uncollected() == ["dogbreed-being-started"]
    world.book.update("dogbreed-being-started", "NotStarted", T0, expected="Starting")  # the builder settles it
    assert world.book.uncollected() == []


def test_a_job_collected_already_is_not_recorded_twice(world: World, clock: Clock) -> None:
    job = world.job("incoming/a.jpg")
    job.answer("incoming/a.jpg", fake_prediction(b"a"))
    world.transforms.finish(job.files.name, at=T0)
    # the event came, but the collector stopped before marking the job collected
    world.store.write(
        [
            Change(
                job.shards[0].images[0],
                Event.JOB_ANSWERED,
                Outcome(Status.CLASSIFIED, Mode.BATCH, job_name=job.files.name, prediction=fake_prediction(b"a")),
                job=job.files.name,
            )
        ],
        T0,
    )
    clock.advance(LATE.total_seconds())
    result = world.sweep.run()
    assert result.collected == [job.files.name] and result.outcomes == []
    assert world.book.uncollected() == []


class SlowObjects(MemoryObjects):
    """Reading a chunk's files takes `read_s` of the clock a call, writing a group's `write_s`."""

    def __init__(self, clock: Clock, read_s: float, write_s: float) -> None:
        super().__init__()
        self.clock, self.read_s, self.write_s = clock, read_s, write_s

    def get_many(self, uris: Sequence[S3Uri]) -> list[bytes | None]:
        self.clock.advance(self.read_s)
        return super().get_many(uris)

    def put_many(self, files: Sequence[tuple[str, str, bytes, str]]) -> None:
        self.clock.advance(self.write_s)
        super().put_many(files)


def test_a_sweep_starts_no_collection_whose_first_piece_would_end_past_its_deadline(clock: Clock) -> None:
    """The 20,000-image soak's sweep started a collection near its deadline and ran it a chunk and a
    group past it (83% of the timeout): every piece of a sweep is judged by the longest of its kind
    so far in the invocation, the first of each collection too."""
    world = World(clock)
    slow = SlowObjects(clock, read_s=20, write_s=20)  # a failed job's chunk: two reads, 40 s; a group: 20 s
    world.objects = slow
    collect = Collect(slow, world.store, world.queue, SHARD_PREFIX, world.book, clock=clock)
    world.sweep = Sweep(collect, world.book, world.transforms, LATE, clock=clock)
    big = [f"incoming/a{n}.jpg" for n in range(RETRY_GROUP_IMAGES * 4)]  # a chunk and four groups: 120 s
    jobs = []
    for nonce, shards in (("d", [big[:200], big[200:]]), ("a", [["incoming/b.jpg"]])):  # the sweep's order
        job = Job(slow, world.store, *shards, nonce=nonce)
        world.book.open(JobItem(job.files.name, "InProgress", holder="builder"), T0)
        world.transforms.start(job.files.name, str(job.files.manifest), str(job.files.output))
        world.transforms.finish(job.files.name, status="Failed", at=T0)
        jobs.append(job)
    clock.advance(LATE.total_seconds() + 60)
    started = clock()
    deadline = Deadline.of_invocation(started, remaining_ms=300_000)  # work stops at 210 s
    clock.advance(85)  # the sweep's own asking, and what came before: the first job's collection starts late
    world.sweep.run(deadline)
    # the first job's images all queued again by 205 s; the second's first chunk (40 s) would end past 210 s
    assert len(world.queue.messages) == len(big) and (clock() - started).total_seconds() <= 0.8 * 300
    assert world.status("incoming/b.jpg") is Status.PENDING and world.book.uncollected() == [jobs[1].files.name]
    world.sweep.run(Deadline.of_invocation(clock(), remaining_ms=300_000))  # the next sweep takes it
    assert len(world.queue.messages) == len(big) + 1 and world.book.uncollected() == []
