"""Gather queued shards into few large transform jobs, within the cap on jobs in flight.

The job queue's event source hands the builder everything queued over its batching window. The
builder drops images that no longer wait (a final outcome, newer content, or a job that holds
them), fails images that waited too long, and packs the rest into jobs of at most
MaxImagesPerJob images. It starts as many jobs as the cap on jobs in flight allows; the other
shards go back to the queue and wait, their images PENDING with the reason. SageMaker refusing a
job for quota or throttling (NoCapacity) is a wait too, never a spent retry.

One builder runs at a time: the cap on jobs in flight is counted and used under a lease (a
conditional write held for one build), since the job queue's event source may run two. A builder
that finds the lease held hands its shards back to come again in LEASE_BUSY_RETRY_S."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from aws_lambda_powertools import Logger

from pipeline.logic.errors import NoCapacity, TransientError
from pipeline.logic.jobs import JobLayout, QueuedShard
from pipeline.logic.lifecycle import Change, Event, StoredImage, decide, state_of
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import (
    JOB_IN_FLIGHT,
    JOB_NOT_STARTED,
    JOB_STARTING,
    BuilderLease,
    JobBook,
    JobItem,
    ObjectStore,
    PredictionStore,
    TransformJobs,
)

logger = Logger(child=True)

LEASE_BUSY_RETRY_S = 60  # when another builder holds the lease: about one build, far below the queue's 30 min
LONGEST_BUILD = timedelta(minutes=15)  # Lambda's longest run: the lease of a build with no deadline given
DEAD_JOB_STATES = frozenset({JOB_NOT_STARTED, "Failed", "Stopped"})  # a job in these records no more answers


@dataclass(frozen=True)
class BuildRules:
    jobs: JobLayout
    model_name: str
    max_images_per_job: int
    max_jobs_in_flight: int
    max_wait: timedelta  # from upload (or a request to classify again): an image still waiting after this is FAILED


@dataclass
class BuildResult:
    failed_message_ids: set[str] = field(default_factory=set)  # shards that wait for another try
    outcomes: list[Outcome] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    waiting: int = 0  # images left waiting for capacity
    in_flight: int | None = None  # the pipeline's jobs running when this build ended (None: not known)
    retry_after_s: int | None = None  # set when the failed shards should come back sooner than the queue's timeout


class BuildJobs:
    def __init__(
        self,
        rules: BuildRules,
        objects: ObjectStore,
        store: PredictionStore,
        transforms: TransformJobs,
        jobs: JobBook,
        lease: BuilderLease,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rules = rules
        self.objects = objects
        self.store = store
        self.transforms = transforms
        self.jobs = jobs
        self.lease = lease
        self.clock = clock

    def run(self, shards: list[QueuedShard], *, deadline: datetime | None = None) -> BuildResult:
        """Build jobs from the shards under the lease, held until `deadline` (the invocation's end)
        at most."""
        holder, now = uuid.uuid4().hex, self.clock()
        try:
            taken = self.lease.acquire(holder, now, deadline or now + LONGEST_BUILD)
        except TransientError as exc:
            taken = False
            logger.warning("cannot take the job builder's lease", error=str(exc))
        if not taken:
            logger.info("another job builder is running; the shards come back soon", shards=len(shards))
            return BuildResult({shard.message_id for shard in shards}, retry_after_s=LEASE_BUSY_RETRY_S)
        try:
            return self._build(shards, holder)
        finally:
            try:
                self.lease.release(holder, self.clock())
            except TransientError as exc:  # the lease runs out at the deadline anyway
                logger.warning("cannot release the job builder's lease", error=str(exc))

    def _build(self, shards: list[QueuedShard], holder: str) -> BuildResult:
        result = BuildResult()
        held: dict[str, str] = {}  # image id -> the job it sits in that this build replaces
        try:
            capacity = self.rules.max_jobs_in_flight - self._in_flight()
            live = self._still_waiting(shards, held, result)
        except TransientError as exc:
            logger.warning("cannot build jobs now; the shards wait", error=str(exc))
            result.failed_message_ids.update(shard.message_id for shard in shards)
            return result
        groups = self._group(live)
        for number, group in enumerate(groups):
            if capacity <= 0:
                self._wait(groups[number:], f"{self.rules.max_jobs_in_flight} transform jobs in flight", held, result)
                break
            try:
                self._start_job(group, holder, held, result)
                capacity -= 1
            except NoCapacity as exc:
                self._wait(groups[number:], f"SageMaker has no capacity for another job ({exc})", held, result)
                break
            except TransientError as exc:  # it may have started: its item stays Starting (see _in_flight)
                logger.warning("job not started; its shards wait", error=str(exc))
                result.failed_message_ids.update(shard.message_id for shard in group)
        result.in_flight = self.rules.max_jobs_in_flight - capacity
        return result

    def _in_flight(self) -> int:
        """The jobs that count against the cap, from the job items. A job still Starting was left by
        a builder that stopped between writing it and hearing from CreateTransformJob (this build
        holds the lease, so no other builder is starting one): SageMaker says what became of it."""
        names = self.jobs.in_flight()
        for job in self.jobs.get_many(names).values():
            if job.status == JOB_STARTING:
                status = self.transforms.status(job.name) or JOB_NOT_STARTED
                self.jobs.update(job.name, status, self.clock(), expected=JOB_STARTING)
                logger.warning("a job left starting is settled", job_name=job.name, status=status)
                if status not in JOB_IN_FLIGHT:
                    names.remove(job.name)
        return len(names)

    def _still_waiting(self, shards: list[QueuedShard], held: dict[str, str], result: BuildResult) -> list[QueuedShard]:
        """Each shard with only the images the lifecycle table lets a job take; shards with none
        are done. An image that waited longer than max_wait is FAILED."""
        stored = self.store.get_many(ref.image_id for shard in shards for ref in shard.images)
        now = self.clock()
        live: list[QueuedShard] = []
        seen: set[tuple[str, str]] = set()  # a shard queued twice (a redelivered upload) counts once
        named = {r.job_name for r in stored.values() if r.job_name and r.status is Status.PENDING}
        items = self.jobs.get_many(named)  # one lookup for every job the images name
        for shard in shards:
            waiting = []
            for ref in shard.images:
                record = stored.get(ref.image_id)
                dead = self._dead_job(record, items)
                if (ref.image_id, ref.etag) in seen or decide(state_of(record, ref, dead), Event.JOB_STARTED) is None:
                    continue
                seen.add((ref.image_id, ref.etag))
                if dead is not None:
                    held[ref.image_id] = dead
                if now - ref.waiting_since > self.rules.max_wait:
                    self._give_up(ref, dead, now, result)
                else:
                    waiting.append(ref)
            if waiting:
                live.append(replace(shard, images=tuple(waiting)))
        return live

    def _dead_job(self, record: StoredImage | None, items: dict[str, JobItem]) -> str | None:
        """The job the image's record names, if that job will record nothing more for it: it never
        started, or it failed or was stopped (its collector queues the unanswered images again, and
        may not have written that yet). This build replaces it; a job that runs or completed keeps
        its images. A job without an item (started before job items existed) is asked of SageMaker."""
        if record is None or record.job_name is None or record.status is not Status.PENDING:
            return None
        job = items.get(record.job_name)
        if job is None:
            status = self.transforms.status(record.job_name)
            job = items[record.job_name] = JobItem(record.job_name, status or JOB_NOT_STARTED, holder="")
        return record.job_name if job.status in DEAD_JOB_STATES else None

    def _give_up(self, ref: ImageRef, dead: str | None, now: datetime, result: BuildResult) -> None:
        waited = (now - ref.waiting_since).total_seconds() / 60
        outcome = Outcome(
            Status.FAILED,
            Mode.BATCH,
            model_name=self.rules.model_name,
            error_code="WaitedTooLong",
            reason=f"waited {waited:.0f} min for a batch transform job, over the "
            f"{self.rules.max_wait.total_seconds() / 60:.0f}-min maximum (MaxBatchWaitMinutes); upload it again",
        )
        if self.store.write([Change(ref, Event.WAITED_TOO_LONG, outcome, job=dead)], now)[0]:
            result.outcomes.append(outcome)
        logger.warning("image outcome", image_id=ref.image_id, status=outcome.status, reason=outcome.reason)

    def _group(self, shards: list[QueuedShard]) -> list[list[QueuedShard]]:
        """Whole shards, oldest first, into jobs of at most max_images_per_job images (a shard
        larger than that is a job of its own), one bucket per job."""
        groups: list[list[QueuedShard]] = []
        ordered = sorted(shards, key=lambda s: (s.uri.bucket, min(ref.uploaded_at for ref in s.images)))
        for shard in ordered:
            current = groups[-1] if groups else None
            if (
                current
                and current[0].uri.bucket == shard.uri.bucket
                and sum(len(s.images) for s in current) + len(shard.images) <= self.rules.max_images_per_job
            ):
                current.append(shard)
            else:
                groups.append([shard])
        return groups

    def _start_job(self, shards: list[QueuedShard], holder: str, held: dict[str, str], result: BuildResult) -> None:
        job = self.rules.jobs.new_job(shards[0].uri.bucket, shards, started=self.clock(), nonce=uuid.uuid4().hex)
        base = Outcome(Status.PENDING, Mode.BATCH, job_name=job.name, model_name=self.rules.model_name)
        refs = [ref for shard in shards for ref in shard.images]
        # The job's item and its images first: if it then fails to start, the next build finds the
        # item still Starting, asks SageMaker, and replaces a job that never ran.
        item = JobItem(
            job.name,
            JOB_STARTING,
            holder,
            shards=len(shards),
            images=len(refs),
            attempt=max(shard.attempt for shard in shards),
        )
        self.jobs.open(item, self.clock())
        self.store.write(
            [Change(ref, Event.JOB_STARTED, base, job=held.get(ref.image_id)) for ref in refs], self.clock()
        )
        held.update((ref.image_id, job.name) for ref in refs)
        self.objects.put_json(job.index.bucket, job.index.key, job.index_doc(shards))
        self.objects.put_json(job.manifest.bucket, job.manifest.key, job.manifest_doc(shards))
        try:
            self.transforms.start(job.name, str(job.manifest), str(job.output))
        except NoCapacity:
            self.jobs.update(job.name, JOB_NOT_STARTED, self.clock(), "refused for capacity", expected=JOB_STARTING)
            raise
        self.jobs.update(job.name, "InProgress", self.clock(), expected=JOB_STARTING)  # unless it ended already
        result.jobs.append(job.name)
        logger.info("transform job started", job_name=job.name, shards=len(shards), images=len(refs))

    def _wait(self, groups: list[list[QueuedShard]], why: str, held: dict[str, str], result: BuildResult) -> None:
        """Back to the queue: the shards come back after its visibility timeout. Their images say
        why they wait."""
        reason = f"waiting for a batch transform job: {why}"
        waiting = Outcome(Status.PENDING, Mode.BATCH, model_name=self.rules.model_name, reason=reason)
        shards = [shard for group in groups for shard in group]
        refs = [ref for shard in shards for ref in shard.images]
        result.failed_message_ids.update(shard.message_id for shard in shards)
        result.waiting += len(refs)
        try:
            self.store.write(
                [Change(ref, Event.WAITS, waiting, job=held.get(ref.image_id)) for ref in refs], self.clock()
            )
        except TransientError as exc:  # the reason is only informative; the shards wait anyway
            logger.warning("could not record the wait", images=len(refs), error=str(exc))
        logger.info("shards wait", shards=len(shards), reason=reason)
