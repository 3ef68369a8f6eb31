"""Record the outcome of every image of a finished batch transform job: each shard's output has
one answer line per image, found by its record id (the image key).

A shard's output is looked up by name (`<output><shard name>.out`); AWS does not document the
names of a manifest's outputs, so one that is not there is looked for once more in a listing of
the job's output folder, by its file name, before its images are recorded NoOutput.

A job that failed or was stopped strands nothing: the images of a shard without answers go back to
the job queue, each alone in a new shard (attempt + 1), and are FAILED only when still unanswered
after MAX_JOB_ATTEMPTS. Every write follows the lifecycle table: only images still in this job.
The job's item (JobBook) gets the job's end before anything else, so it stops counting in flight."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

from aws_lambda_powertools import Logger

import answers
from pipeline.logic.deadline import Deadline, Pace
from pipeline.logic.errors import TransientError
from pipeline.logic.ingest import SHARD_MAX_BYTES
from pipeline.logic.jobs import TERMINAL_JOB_STATES, JobEvent, JobFiles, QueuedShard, index_of, shard_uri
from pipeline.logic.lifecycle import Change, Event, StoredImage, decide, state_of
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import JobBook, JobQueue, ObjectStore, PredictionStore
from pipeline.logic.s3uri import S3Uri

logger = Logger(child=True)

# A shard's tries in transform jobs: once as ingested, then (if its job failed or was stopped without
# its answers) each unanswered image alone, twice. Still unanswered after that, an image is FAILED.
MAX_JOB_ATTEMPTS = 3
# A failed job's images are queued again a group at a time (retry_groups): files written at once, ten
# messages a call. tests/unit/test_limits.py checks a group's worst time against the collector's timeout.
RETRY_GROUP_IMAGES = 100
RETRY_GROUP_BYTES = 32_000_000
# A chunk, the collector's piece of work between two looks at its deadline: at most SHARDS_AT_ONCE
# shards read at once (a job of retried images has one shard per image) of CHUNK_IMAGES images, and
# at most CHUNK_BYTES of a failed job's shard files in memory (one shard at least).
SHARDS_AT_ONCE = 64
CHUNK_IMAGES = 2_000
CHUNK_BYTES = 64_000_000

T = TypeVar("T")
Waiting = tuple[QueuedShard, list[ImageRef]]  # a shard, and its images still in the job


def shard_bytes(shard: QueuedShard) -> int:
    """At most how large a shard's file is: each line is an image's bytes (or its smaller, downsized
    copy) in base64, its key and some JSON; a shard is cut at SHARD_MAX_BYTES."""
    lines = sum(answers.record_size(ref.size, ref.key) for ref in shard.images)
    return min(lines, SHARD_MAX_BYTES)


def bounded(items: Sequence[T], *limits: tuple[Callable[[T], int], int]) -> list[list[T]]:
    """The items in order, in groups within every (measure, most) limit; a group has one item at least."""
    groups: list[list[T]] = []
    totals = [0] * len(limits)
    for item in items:
        sizes = [measure(item) for measure, _ in limits]
        if not groups or any(t + s > most for t, s, (_, most) in zip(totals, sizes, limits, strict=True)):
            groups.append([])
            totals = [0] * len(limits)
        groups[-1].append(item)
        totals = [t + s for t, s in zip(totals, sizes, strict=True)]
    return groups


def shard_chunks(waiting: list[Waiting], *, failed: bool) -> list[list[Waiting]]:
    """The shards in chunks (see SHARDS_AT_ONCE). A failed job's shard files are read to queue their
    images again, so its chunks are bounded by their bytes too."""
    return bounded(
        waiting,
        (lambda _: 1, SHARDS_AT_ONCE),
        (lambda shard_refs: len(shard_refs[1]), CHUNK_IMAGES),
        (lambda shard_refs: shard_bytes(shard_refs[0]) if failed else 0, CHUNK_BYTES),
    )


def retry_groups(refs: list[ImageRef], lines: Mapping[str, bytes]) -> list[list[ImageRef]]:
    """The images to queue again, in groups of at most RETRY_GROUP_IMAGES images and
    RETRY_GROUP_BYTES of record lines: a piece of the collector's work between two looks at its deadline."""
    return bounded(refs, (lambda _: 1, RETRY_GROUP_IMAGES), (lambda ref: len(lines[ref.key]), RETRY_GROUP_BYTES))


@dataclass
class _Chunk:
    """What a chunk of shards leaves to do: final records, and images to queue again alone."""

    changes: list[Change] = field(default_factory=list)
    retries: list[tuple[ImageRef, int]] = field(default_factory=list)  # (image, its next attempt)
    lines: dict[str, bytes] = field(default_factory=dict)  # the retried images' record lines, by key


class Collect:
    def __init__(
        self,
        objects: ObjectStore,
        store: PredictionStore,
        queue: JobQueue,
        shard_prefix: str,
        jobs: JobBook,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.objects = objects
        self.store = store
        self.queue = queue
        self.jobs = jobs
        self.shard_prefix = shard_prefix
        self.clock = clock

    def run(self, job: JobEvent, deadline: Deadline | None = None, pace: Pace | None = None) -> list[Outcome]:
        """Record every image of the job, SHARDS_AT_ONCE shards at a time (their files read at
        once, their records written as each chunk is done). Past the deadline it stops between two
        pieces of work and leaves the job uncollected: the sweep (sweep.py) runs it again, and what
        was recorded is not done twice (the lifecycle table skips images no longer in this job)."""
        if job.status not in TERMINAL_JOB_STATES:
            logger.info("job not finished; nothing to collect", job_name=job.name, status=job.status)
            return []
        deadline = deadline or Deadline.never()
        pace = pace or Pace()  # the invocation's, shared by the collections of a sweep
        manifest = S3Uri.parse(job.manifest_uri)
        index = index_of(manifest)
        index_body = self.objects.get_if_exists(index.bucket, index.key)
        if index_body is None:
            raise TransientError(f"the index {index} of job {job.name} does not exist")
        files, shards = JobFiles.from_index(job.name, manifest, json.loads(index_body), job.output_uri)
        # The job's item first: a builder that gets one of its images queued again below must find
        # the job ended, or it would leave the image to a job that answers nothing more.
        self.jobs.update(job.name, job.status, self.clock(), job.failure_reason if job.status != "Completed" else "")
        stored = self.store.get_many(ref.image_id for shard in shards for ref in shard.images)
        waiting = [
            (shard, refs)
            for shard in shards
            if (refs := [r for r in shard.images if self._in_job(stored.get(r.image_id), r, job)])
        ]
        left = sum(len(shard.images) for shard in shards) - sum(len(refs) for _, refs in waiting)
        if left:  # collected already (a continued collection), or newer content, or in a newer job
            logger.info("images no longer wait on this job", job_name=job.name, images=left)
        listing: dict[str, list[str]] = {}  # the job's output folder, listed at most once
        outcomes: list[Outcome] = []
        done = 0
        for chunk in shard_chunks(waiting, failed=job.status != "Completed"):
            started = self.clock()
            if not pace.allows(started, deadline, "chunk"):
                logger.warning(
                    "out of time: the next sweep collects the rest",
                    job_name=job.name,
                    shards_left=len(waiting) - done,
                )
                return outcomes
            todo = self._read_chunk(job, files, chunk, listing)
            outcomes += self._write(todo.changes)
            pace.took("chunk", started, self.clock())
            if not self._retry_alone(job, todo, deadline, pace):
                return outcomes
            done += len(chunk)
        self.jobs.collected(job.name, self.clock())
        return outcomes

    def _read_chunk(
        self,
        job: JobEvent,
        files: JobFiles,
        chunk: list[Waiting],
        listing: dict[str, list[str]],
    ) -> _Chunk:
        """The chunk's outputs (and a failed job's shards) read at once; each image's record, or its retry."""
        outputs = self.objects.get_many([files.output_for(shard.uri.key) for shard, _ in chunk])
        todo = _Chunk()
        retried: list[QueuedShard] = []
        base = Outcome(Status.PENDING, Mode.BATCH, job_name=job.name, model_name=job.model_name or None)
        for (shard, waiting), body in zip(chunk, outputs, strict=True):
            if body is None and job.status == "Completed":
                if "keys" not in listing:
                    listing["keys"] = self.objects.list_keys(files.output.bucket, files.output.key)
                body = self._listed_output(listing["keys"], files.output_for(shard.uri.key), job)
            found, broken = answers.loads_lines(body) if body is not None else ({}, [])
            if broken:
                logger.warning("unreadable output lines", job_name=job.name, shard=str(shard.uri), lines=broken[:5])
            if job.status != "Completed" and shard.attempt < MAX_JOB_ATTEMPTS:
                todo.retries += [(ref, shard.attempt + 1) for ref in waiting if ref.key not in found]
                retried.append(shard)
                waiting = [ref for ref in waiting if ref.key in found]
            for ref in waiting:
                outcome = self._outcome(job, shard, body, found.get(ref.key), broken, base)
                event = Event.JOB_FAILED if outcome.status is Status.FAILED else Event.JOB_ANSWERED
                todo.changes.append(Change(ref, event, outcome, job=job.name))
        if todo.retries:
            bodies = self.objects.get_many([shard.uri for shard in retried])
            for body in bodies:
                for line in (body or b"").splitlines():
                    if line.strip():
                        todo.lines[answers.loads_record(line)[0]] = line
            for ref, _ in todo.retries:  # its shard is gone (the lifecycle rule): nothing to retry from
                if ref.key not in todo.lines:
                    todo.changes.append(Change(ref, Event.JOB_FAILED, self._gone(job, ref), job=job.name))
            todo.retries = [(ref, attempt) for ref, attempt in todo.retries if ref.key in todo.lines]
        return todo

    def _write(self, changes: list[Change]) -> list[Outcome]:
        """The changes (many at once: jobs are large); the final outcomes written."""
        outcomes = []
        for change, done in zip(changes, self.store.write(changes, self.clock()), strict=True):
            outcome = change.outcome
            logger.info(
                "image outcome",
                image_id=change.ref.image_id,
                status=outcome.status,
                reason=outcome.reason,
                written=done,
            )
            if done and outcome.status is not Status.PENDING:
                outcomes.append(outcome)
        return outcomes

    def _retry_alone(self, job: JobEvent, todo: _Chunk, deadline: Deadline, pace: Pace) -> bool:
        """Queue each unanswered image of a failed job again, alone in a shard of its own:
        SageMaker fails a job for one input file it cannot process and still processes the others,
        so alone, one bad image fails only itself. A group of images at a time: their files written
        at once, their messages sent ten to a call, then their records. Queued before its record
        says so: a collector that stops in between runs again (EventBridge retries, or the sweep)
        and queues it once more, which the job builder takes once. Past the deadline the rest wait
        for the next collection; True if none is left."""
        why = f"transform job {job.name} {job.status.lower()}: {job.failure_reason}"
        attempts = {ref.image_id: attempt for ref, attempt in todo.retries}
        refs = [ref for ref, _ in todo.retries]
        queued = 0
        for group in retry_groups(refs, todo.lines):
            started = self.clock()
            if not pace.allows(started, deadline, "group"):
                break
            files, messages, changes = [], [], []
            for ref in group:
                attempt = attempts[ref.image_id]
                uri = shard_uri(self.shard_prefix, ref.bucket, started=self.clock(), nonce=uuid.uuid4().hex)
                files.append((uri.bucket, uri.key, todo.lines[ref.key] + b"\n", answers.JSON_LINES))
                messages.append(QueuedShard(uri, (ref,), attempt=attempt).message_body())
                reason = (
                    f"waiting for a batch transform job: {why}; retried alone (attempt {attempt} of {MAX_JOB_ATTEMPTS})"
                )
                waiting = Outcome(Status.PENDING, Mode.BATCH, model_name=job.model_name or None, reason=reason)
                changes.append(Change(ref, Event.JOB_RETRIED, waiting, job=job.name))
            self.objects.put_many(files)
            self.queue.send_many(messages)
            self._write(changes)
            queued += len(group)
            pace.took("group", started, self.clock())
        if refs:
            logger.warning(
                "images of a failed job queued again, each alone",
                job_name=job.name,
                images=queued,
                left_for_the_next_collection=len(refs) - queued,
            )
        return queued == len(refs)

    @staticmethod
    def _gone(job: JobEvent, ref: ImageRef) -> Outcome:
        return Outcome(
            Status.FAILED,
            Mode.BATCH,
            job_name=job.name,
            model_name=job.model_name or None,
            reason=f"transform job {job.name} {job.status.lower()}: {job.failure_reason}; its shard is gone, "
            "so it cannot be retried: run make redrive",
            error_code=f"Job{job.status}",
        )

    def _listed_output(self, listed: list[str], expected: S3Uri, job: JobEvent) -> bytes | None:
        name = expected.key.rsplit("/", 1)[-1]
        found = [key for key in listed if key.rsplit("/", 1)[-1] == name]
        if len(found) != 1:
            return None
        logger.warning("output found under another name", job_name=job.name, expected=str(expected), found=found[0])
        return self.objects.get_if_exists(expected.bucket, found[0])

    @staticmethod
    def _in_job(image: StoredImage | None, ref: ImageRef, job: JobEvent) -> bool:
        return decide(state_of(image, ref, job.name), Event.JOB_ANSWERED) is not None

    @staticmethod
    def _outcome(
        job: JobEvent,
        shard: QueuedShard,
        body: bytes | None,
        answer: answers.Answer | None,
        broken: list[str],
        base: Outcome,
    ) -> Outcome:
        if answer is None:
            if job.status != "Completed":
                reason = (
                    f"transform job {job.name} {job.status.lower()}: {job.failure_reason} "
                    f"(attempt {shard.attempt} of {MAX_JOB_ATTEMPTS}); run make redrive to try again"
                )
                return replace(base, status=Status.FAILED, reason=reason, error_code=f"Job{job.status}")
            if body is None:
                reason = f"transform job {job.name} completed but wrote no output for this image's shard"
                return replace(base, status=Status.FAILED, reason=reason, error_code="NoOutput")
            reason = f"transform job {job.name} wrote no answer line for this image"
            if broken:
                reason += f" ({len(broken)} unreadable lines, the first {broken[0]})"
            return replace(base, status=Status.FAILED, reason=reason, error_code="NoAnswerLine")
        if isinstance(answer, answers.ErrorRecord):
            return replace(base, status=Status.REJECTED, reason=answer.message, error_code=answer.code)
        return replace(base, status=Status.CLASSIFIED, prediction=answer)
