"""The job builder's rules (functions/pipeline/logic/build.py): few large jobs, the cap on jobs in
flight, quota refusals as waits, and the maximum wait."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest

from pipeline.logic.build import BuildJobs, BuildResult, BuildRules
from pipeline.logic.errors import TransientError
from pipeline.logic.jobs import JobFiles, JobLayout, QueuedShard
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.s3uri import S3Uri
from tests.fakes.ports import MemoryJobBook, MemoryLease, MemoryObjects, MemoryPredictions, MemoryTransformJobs
from tests.unit.conftest import BUCKET, Clock

LAYOUT = JobLayout("dogbreed", "batch-input/", "manifests/", "transform-output/")
MAX_WAIT = timedelta(hours=6)


@dataclass
class World:
    clock: Clock
    max_images_per_job: int = 100
    max_jobs_in_flight: int = 2
    objects: MemoryObjects = field(default_factory=MemoryObjects)
    store: MemoryPredictions = field(default_factory=MemoryPredictions)
    jobs: MemoryTransformJobs = field(default_factory=MemoryTransformJobs)
    lease: MemoryLease = field(default_factory=MemoryLease)
    book: MemoryJobBook = field(default_factory=MemoryJobBook)
    queued: int = 0

    @property
    def builder(self) -> BuildJobs:
        rules = BuildRules(LAYOUT, "dogbreed-resnet18", self.max_images_per_job, self.max_jobs_in_flight, MAX_WAIT)
        return BuildJobs(rules, self.objects, self.store, self.jobs, self.book, self.lease, clock=self.clock)

    def finish(self, name: str, status: str = "Completed") -> None:
        """The job ends, and its collector records that in the job's item."""
        self.jobs.finish(name, status=status)
        self.book.update(name, status, self.clock())

    def shard(self, images: int, *, receive_count: int = 1) -> QueuedShard:
        """A shard as the ingest function queues it (its images have no record yet)."""
        self.queued += 1
        refs = tuple(
            ImageRef(BUCKET, f"incoming/{self.queued}/{n}.jpg", "e1", 100, self.clock(), f"m{self.queued}")
            for n in range(images)
        )
        uri = S3Uri(BUCKET, f"batch-input/2026/11/22/{self.queued}.jsonl")
        return QueuedShard.from_message(f"m{self.queued}", QueuedShard(uri, refs).message_body(), receive_count)

    def run(self, *shards: QueuedShard) -> BuildResult:
        return self.builder.run(list(shards))

    def outcome(self, ref: ImageRef) -> Outcome:
        outcome = self.store.outcome(ref.image_id)
        assert outcome is not None
        return outcome

    def job_images(self, name: str) -> list[str]:
        """The image keys of a job, read back from its index as the collector reads it."""
        job = self.jobs.jobs[name]
        manifest = S3Uri.parse(job.manifest_uri)
        index = json.loads(self.objects.objects[manifest.bucket, f"manifests/{name}.images.json"])
        _, shards = JobFiles.from_index(name, manifest, index, job.output_uri)
        return [ref.key for shard in shards for ref in shard.images]


@pytest.fixture
def world(clock: Clock) -> World:
    return World(clock)


def test_a_flood_of_shards_becomes_few_full_jobs(world: World) -> None:
    # GIVEN 10 shards of 30 images gathered in one batch, at most 100 images a job
    world.max_jobs_in_flight = 10
    shards = [world.shard(30) for _ in range(10)]
    # WHEN the builder runs
    result = world.run(*shards)
    # THEN ceil(300 / 100) + 1 jobs at most hold every image once, each PENDING in its job
    assert len(result.jobs) == 4  # whole shards: 90 + 90 + 90 + 30
    held = [key for name in result.jobs for key in world.job_images(name)]
    assert sorted(held) == sorted(ref.key for shard in shards for ref in shard.images)
    for name in result.jobs:
        for key in world.job_images(name):
            assert world.store.records[f"{BUCKET}/{key}"].outcome.job_name == name
    assert not result.failed_message_ids and result.waiting == 0


def test_jobs_beyond_the_cap_wait_with_the_reason_and_start_when_capacity_frees(world: World) -> None:
    world.max_jobs_in_flight = 1
    first, second = world.shard(80), world.shard(80)
    result = world.run(first, second)
    # THEN one job starts; the other shard goes back to the queue, its images PENDING with the reason
    (job,) = result.jobs
    assert result.failed_message_ids == {second.message_id} and result.waiting == 80
    waiting = world.outcome(second.images[0])
    assert waiting.status is Status.PENDING and waiting.job_name is None
    assert "1 transform jobs in flight" in (waiting.reason or "")
    # WHEN the shard comes back while the job still runs, it waits again
    assert world.run(second).failed_message_ids == {second.message_id}
    # AND once the job finishes, it gets a job of its own
    world.finish(job)
    again = world.run(second)
    assert len(again.jobs) == 1 and not again.failed_message_ids
    assert world.outcome(second.images[0]).job_name == again.jobs[0]


def test_a_quota_refusal_is_a_wait_never_a_spent_retry(world: World) -> None:
    # GIVEN SageMaker refuses any job (ResourceLimitExceeded), on a shard's 50th delivery
    world.jobs = MemoryTransformJobs(quota=0)
    shard = world.shard(5, receive_count=50)
    result = world.run(shard)
    # THEN the shard waits for another try, its images PENDING with the reason, none FAILED
    assert result.failed_message_ids == {shard.message_id} and not result.outcomes
    outcome = world.outcome(shard.images[0])
    assert outcome.status is Status.PENDING and "no capacity" in (outcome.reason or "")
    assert "ResourceLimitExceeded" in (outcome.reason or "")


def test_an_image_waiting_longer_than_the_maximum_is_failed_with_the_reason(world: World) -> None:
    world.jobs = MemoryTransformJobs(quota=0)
    stale = world.shard(2)
    world.clock.advance(MAX_WAIT.total_seconds() + 60)
    fresh = world.shard(1)
    result = world.run(stale, fresh)
    # THEN the stale images are FAILED (their shard is done), the fresh one still waits
    for ref in stale.images:
        outcome = world.outcome(ref)
        assert outcome.status is Status.FAILED and outcome.error_code == "WaitedTooLong"
        assert "361 min" in (outcome.reason or "") and "360-min maximum" in (outcome.reason or "")
    assert result.failed_message_ids == {fresh.message_id}
    assert [o.error_code for o in result.outcomes] == ["WaitedTooLong", "WaitedTooLong"]


def test_images_that_no_longer_wait_are_left_out(world: World) -> None:
    shard = world.shard(4)
    done, newer, in_job, waiting = shard.images
    newer_content = ImageRef(BUCKET, newer.key, "e2", 100, newer.uploaded_at + timedelta(seconds=1))
    world.jobs.start("dogbreed-running", "s3://b/m.json", "s3://b/out/")
    running = Outcome(Status.PENDING, Mode.BATCH, job_name="dogbreed-running")
    world.store.write(
        [
            Change(done, Event.ANSWERED, Outcome(Status.CLASSIFIED, Mode.BATCH)),
            Change(newer_content, Event.WAITS, Outcome(Status.PENDING, Mode.BATCH)),
            Change(in_job, Event.JOB_STARTED, running),
        ],
        world.clock(),
    )
    result = world.run(shard)
    (job,) = result.jobs
    assert world.job_images(job) == [waiting.key]
    # AND once every image is in a running job, the shard is done without a job
    assert replace(world.run(shard), in_flight=None) == BuildResult()


def test_newer_content_of_an_image_in_a_running_job_gets_a_job_of_its_own(world: World) -> None:
    old = world.shard(1)
    (first,) = world.run(old).jobs
    world.clock.advance(5)
    newer = world.shard(1)
    rex = newer.images[0]
    newer = replace(newer, images=(replace(rex, key=old.images[0].key, etag="e2"),))  # the same key re-uploaded
    (second,) = world.run(newer).jobs
    assert second != first and world.outcome(newer.images[0]).job_name == second


def test_a_shard_queued_twice_puts_its_images_in_one_job_once(world: World) -> None:
    shard = world.shard(3)
    again = QueuedShard.from_message("m-again", shard.message_body())
    result = world.run(shard, again)
    (job,) = result.jobs
    assert sorted(world.job_images(job)) == sorted(ref.key for ref in shard.images)
    assert not result.failed_message_ids


def test_a_job_that_failed_to_start_is_built_again_on_the_next_delivery(world: World) -> None:
    shard = world.shard(3)
    world.jobs.fail_next(TransientError("InternalFailure"))  # CreateTransformJob fails
    first = world.run(shard)
    assert first.failed_message_ids == {shard.message_id} and first.jobs == []
    # the images are PENDING in a job that does not exist: the next delivery builds again
    assert world.jobs.status(world.outcome(shard.images[0]).job_name or "") is None
    second = world.run(shard)
    assert len(second.jobs) == 1 and not second.failed_message_ids


def test_a_store_that_is_down_returns_every_shard(world: World) -> None:
    shards = [world.shard(2), world.shard(2)]
    world.store.fail_next(TransientError("DynamoDB unavailable"))
    result = world.run(*shards)
    assert result.failed_message_ids == {s.message_id for s in shards} and result.jobs == []


# -- one builder at a time -------------------------------------------------------------------


def test_a_builder_that_finds_the_lease_held_hands_its_shards_back_soon(world: World) -> None:
    # GIVEN another builder holds the lease for the rest of its run
    assert world.lease.acquire("other", world.clock(), world.clock() + timedelta(minutes=5))
    shard = world.shard(3)
    # WHEN a second builder gets shards
    result = world.run(shard)
    # THEN it starts nothing, records nothing, and its shards come back within a minute, not 30
    assert result.jobs == [] and world.jobs.jobs == {}
    assert result.failed_message_ids == {shard.message_id}
    assert result.retry_after_s is not None and result.retry_after_s <= 60
    assert all(world.store.outcome(ref.image_id) is None for ref in shard.images)


def test_the_lease_is_released_after_a_build_and_runs_out_if_a_builder_dies(world: World) -> None:
    world.max_jobs_in_flight = 10
    assert world.run(world.shard(2)).jobs  # a build takes and releases the lease
    assert world.run(world.shard(2)).jobs  # so the next one takes it again
    assert len(world.lease.taken) == 2
    # a builder that died holding the lease blocks the others only until its deadline
    assert world.lease.acquire("dead", world.clock(), world.clock() + timedelta(minutes=5))
    assert world.run(world.shard(1)).retry_after_s is not None
    world.clock.advance(5 * 60)
    assert world.run(world.shard(1)).jobs


def test_an_unreadable_lease_is_a_wait_not_a_build(world: World) -> None:
    world.lease.fail_next(TransientError("throttled"))
    shard = world.shard(2)
    result = world.run(shard)
    assert result.jobs == [] and result.failed_message_ids == {shard.message_id}


def test_two_builders_racing_never_exceed_the_cap_on_jobs_in_flight(world: World) -> None:
    """Two builders run at once (the event source's MaximumConcurrency is 2): each counts the jobs in
    flight and starts jobs; without the lease both would see room for two and start four."""
    import contextlib
    import threading

    world.max_jobs_in_flight = 2
    batches = [[world.shard(world.max_images_per_job) for _ in range(3)] for _ in range(2)]
    started = threading.Barrier(2)
    in_flight = world.book.in_flight

    def slow_count() -> list[str]:  # unguarded, both builders would count before either starts a job
        count = in_flight()
        with contextlib.suppress(threading.BrokenBarrierError):  # the other builder never counted
            started.wait(timeout=1)
        return count

    world.book.in_flight = slow_count  # type: ignore[method-assign]
    results: list[BuildResult] = []
    threads = [threading.Thread(target=lambda b=b: results.append(world.run(*b))) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(world.jobs.jobs) == 2  # the cap, not 4
    assert sorted(r.retry_after_s is not None for r in results) == [False, True]


@pytest.mark.parametrize(("ended", "taken"), [("Failed", True), ("Stopped", True), ("Completed", False), (None, False)])
def test_an_image_of_a_failed_job_is_taken_before_its_collector_records_the_retry(
    world: World, ended: str | None, taken: bool
) -> None:
    """A failed job's collector queues each unanswered image before it writes that it waits: a
    build in between finds the image still in the failed job, and takes it (a job that completed
    keeps it: its collector records the answer)."""
    shard = world.shard(1)
    (job,) = world.run(shard).jobs
    if ended:
        world.finish(job, ended)
    retried = QueuedShard.from_message("m-retry", replace(shard, attempt=2).message_body())
    result = world.run(retried)
    assert bool(result.jobs) is taken
    if taken:
        (second,) = result.jobs
        assert world.outcome(shard.images[0]).job_name == second


def test_a_job_is_an_item_written_before_it_starts_and_counted_in_flight(world: World) -> None:
    world.max_jobs_in_flight = 10
    first, second = world.shard(3), replace(world.shard(2), attempt=2)
    (job,) = world.run(first, second).jobs
    item = world.book.items[job]
    assert (item.status, item.images, item.attempt) == ("InProgress", 5, 2)
    assert item.shards == 2 and item.holder == world.lease.taken[-1]
    assert world.book.in_flight() == [job]
    world.finish(job, "Failed")  # its collector ends it
    assert world.book.in_flight() == [] and world.book.items[job].status == "Failed"


def test_a_job_sagemaker_refuses_is_not_started_and_does_not_count(world: World) -> None:
    world.jobs = MemoryTransformJobs(quota=0)
    world.run(world.shard(2))
    (item,) = world.book.items.values()
    assert item.status == "NotStarted" and world.book.in_flight() == []


@pytest.mark.parametrize("started", [False, True])
def test_a_job_left_starting_by_a_builder_that_stopped_is_settled_by_asking_sagemaker(
    world: World, started: bool
) -> None:
    # GIVEN a builder that stopped after writing its job and images, before CreateTransformJob answered
    world.max_jobs_in_flight = 1
    shard = world.shard(2)
    world.jobs.fail_next(TransientError("the builder stopped here"))
    world.run(shard)
    (name,) = world.book.items
    assert world.book.items[name].status == "Starting" and world.book.in_flight() == [name]
    if started:  # SageMaker did start it
        world.jobs.start(name, "s3://b/m.json", "s3://b/out/")
    # WHEN its shard comes back
    result = world.run(shard)
    # THEN SageMaker's answer settles the item: a job that never started no longer counts, and its
    # images get a new job; one that started counts, and keeps its images
    assert world.book.items[name].status == ("InProgress" if started else "NotStarted")
    if started:
        assert result.jobs == [] and world.book.in_flight() == [name]
        assert world.outcome(shard.images[0]).job_name == name
    else:
        (second,) = result.jobs
        assert world.book.in_flight() == [second] and world.outcome(shard.images[0]).job_name == second
