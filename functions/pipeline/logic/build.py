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
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import BuilderLease, ObjectStore, PredictionStore, StoredImage, TransformJobs, may_record

logger = Logger(child=True)

LEASE_BUSY_RETRY_S = 60  # when another builder holds the lease: about one build, far below the queue's 30 min
LONGEST_BUILD = timedelta(minutes=15)  # Lambda's longest run: the lease of a build with no deadline given


@dataclass(frozen=True)
class BuildRules:
    jobs: JobLayout
    model_name: str
    max_images_per_job: int
    max_jobs_in_flight: int
    max_wait: timedelta  # from upload: an image still waiting after this is FAILED


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
        lease: BuilderLease,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rules = rules
        self.objects = objects
        self.store = store
        self.transforms = transforms
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
            return self._build(shards)
        finally:
            try:
                self.lease.release(holder, self.clock())
            except TransientError as exc:  # the lease runs out at the deadline anyway
                logger.warning("cannot release the job builder's lease", error=str(exc))

    def _build(self, shards: list[QueuedShard]) -> BuildResult:
        result = BuildResult()
        try:
            live = self._still_waiting(shards, result)
            capacity = self.rules.max_jobs_in_flight - self.transforms.in_flight()
        except TransientError as exc:
            logger.warning("cannot build jobs now; the shards wait", error=str(exc))
            result.failed_message_ids.update(shard.message_id for shard in shards)
            return result
        groups = self._group(live)
        for number, group in enumerate(groups):
            if capacity <= 0:
                self._wait(groups[number:], f"{self.rules.max_jobs_in_flight} transform jobs in flight", result)
                break
            try:
                self._start_job(group, result)
                capacity -= 1
            except NoCapacity as exc:
                self._wait(groups[number:], f"SageMaker has no capacity for another job ({exc})", result)
                break
            except TransientError as exc:
                logger.warning("job not started; its shards wait", error=str(exc))
                result.failed_message_ids.update(shard.message_id for shard in group)
        result.in_flight = self.rules.max_jobs_in_flight - capacity
        return result

    def _still_waiting(self, shards: list[QueuedShard], result: BuildResult) -> list[QueuedShard]:
        """Each shard with only the images still waiting for a job; shards with none are done.
        An image that waited longer than max_wait is FAILED."""
        stored = self.store.get_many(ref.image_id for shard in shards for ref in shard.images)
        now = self.clock()
        live: list[QueuedShard] = []
        seen: set[tuple[str, str]] = set()  # a shard queued twice (a redelivered upload) counts once
        jobs: dict[str, bool] = {}  # job name -> it exists (looked up once per build)
        for shard in shards:
            waiting = []
            for ref in shard.images:
                if (ref.image_id, ref.etag) in seen or not self._waits(stored.get(ref.image_id), ref, jobs):
                    continue
                seen.add((ref.image_id, ref.etag))
                if now - ref.uploaded_at > self.rules.max_wait:
                    self._give_up(ref, now, result)
                else:
                    waiting.append(ref)
            if waiting:
                live.append(replace(shard, images=tuple(waiting)))
        return live

    def _waits(self, stored: StoredImage | None, ref: ImageRef, jobs: dict[str, bool]) -> bool:
        if not may_record(stored, ref):
            return False  # a final outcome for this content, or newer content
        if stored is None or stored.ref.etag != ref.etag or stored.status is not Status.PENDING or not stored.job_name:
            return True
        if stored.job_name not in jobs:
            jobs[stored.job_name] = self.transforms.exists(stored.job_name)
        return not jobs[stored.job_name]  # a job that exists records it

    def _give_up(self, ref: ImageRef, now: datetime, result: BuildResult) -> None:
        waited = (now - ref.uploaded_at).total_seconds() / 60
        outcome = Outcome(
            Status.FAILED,
            Mode.BATCH,
            model_name=self.rules.model_name,
            error_code="WaitedTooLong",
            reason=f"waited {waited:.0f} min for a batch transform job, over the "
            f"{self.rules.max_wait.total_seconds() / 60:.0f}-min maximum (MaxBatchWaitMinutes); upload it again",
        )
        if self.store.record(ref, outcome, now):
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

    def _start_job(self, shards: list[QueuedShard], result: BuildResult) -> None:
        job = self.rules.jobs.new_job(shards[0].uri.bucket, shards, started=self.clock(), nonce=uuid.uuid4().hex)
        base = Outcome(Status.PENDING, Mode.BATCH, job_name=job.name, model_name=self.rules.model_name)
        # PENDING in the job first: if it then fails to start, the next try finds PENDING in a job
        # that does not exist and builds again; nothing waits on a job that never ran.
        self.store.record_many([ref for shard in shards for ref in shard.images], base, self.clock())
        self.objects.put_json(job.index.bucket, job.index.key, job.index_doc(shards))
        self.objects.put_json(job.manifest.bucket, job.manifest.key, job.manifest_doc(shards))
        self.transforms.start(job.name, str(job.manifest), str(job.output))
        result.jobs.append(job.name)
        images = sum(len(shard.images) for shard in shards)
        logger.info("transform job started", job_name=job.name, shards=len(shards), images=images)

    def _wait(self, groups: list[list[QueuedShard]], why: str, result: BuildResult) -> None:
        """Back to the queue: the shards come back after its visibility timeout. Their images say
        why they wait."""
        reason = f"waiting for a batch transform job: {why}"
        waiting = Outcome(Status.PENDING, Mode.BATCH, model_name=self.rules.model_name, reason=reason)
        shards = [shard for group in groups for shard in group]
        refs = [ref for shard in shards for ref in shard.images]
        result.failed_message_ids.update(shard.message_id for shard in shards)
        result.waiting += len(refs)
        try:
            self.store.record_many(refs, waiting, self.clock())
        except TransientError as exc:  # the reason is only informative; the shards wait anyway
            logger.warning("could not record the wait", images=len(refs), error=str(exc))
        logger.info("shards wait for capacity", shards=len(result.failed_message_ids), reason=reason)
