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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

import answers
from pipeline.logic.errors import TransientError
from pipeline.logic.jobs import JobFiles, QueuedShard, index_of, shard_uri
from pipeline.logic.lifecycle import Change, Event, StoredImage, decide, state_of
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import JobBook, JobQueue, ObjectStore, PredictionStore
from pipeline.logic.s3uri import S3Uri

logger = Logger(child=True)

TERMINAL_JOB_STATES = ("Completed", "Failed", "Stopped")
# A shard's tries in transform jobs: once as ingested, then (if its job failed or was stopped without
# its answers) each unanswered image alone, twice. Still unanswered after that, an image is FAILED.
MAX_JOB_ATTEMPTS = 3


@dataclass(frozen=True)
class JobEvent:
    """The parts of a "SageMaker Transform Job State Change" event the collector uses."""

    name: str
    status: str
    failure_reason: str
    manifest_uri: str
    output_uri: str
    model_name: str

    @classmethod
    def from_detail(cls, detail: Mapping[str, Any]) -> JobEvent:
        try:
            return cls(
                name=detail["TransformJobName"],
                status=detail["TransformJobStatus"],
                failure_reason=detail.get("FailureReason") or "no reason given",
                manifest_uri=detail["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"],
                output_uri=detail["TransformOutput"]["S3OutputPath"],
                model_name=detail.get("ModelName", ""),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"the transform job event lacks {exc}") from exc


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

    def run(self, job: JobEvent) -> list[Outcome]:
        if job.status not in TERMINAL_JOB_STATES:
            logger.info("job not finished; nothing to collect", job_name=job.name, status=job.status)
            return []
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

        listed: list[str] | None = None  # the job's output folder, listed at most once
        changes: list[Change] = []
        base = Outcome(Status.PENDING, Mode.BATCH, job_name=job.name, model_name=job.model_name or None)
        for shard in shards:
            waiting = [r for r in shard.images if self._in_job(stored.get(r.image_id), r, job)]
            if not waiting:
                continue
            output = files.output_for(shard.uri.key)
            body = self.objects.get_if_exists(output.bucket, output.key)
            if body is None and job.status == "Completed":
                listed = self.objects.list_keys(files.output.bucket, files.output.key) if listed is None else listed
                body = self._listed_output(listed, output, job)
            found, broken = answers.loads_lines(body) if body is not None else ({}, [])
            if broken:
                logger.warning("unreadable output lines", job_name=job.name, output=str(output), lines=broken[:5])
            unanswered = [ref for ref in waiting if ref.key not in found]
            if unanswered and job.status != "Completed" and shard.attempt < MAX_JOB_ATTEMPTS:
                changes += self._retry_alone(job, shard, unanswered)
                waiting = [ref for ref in waiting if ref.key in found]
            for ref in waiting:
                outcome = self._outcome(job, shard, body, found.get(ref.key), broken, base)
                event = Event.JOB_FAILED if outcome.status is Status.FAILED else Event.JOB_ANSWERED
                changes.append(Change(ref, event, outcome, job=job.name))
        written = self.store.write(changes, self.clock())  # many writes at once: jobs are large
        outcomes = []
        for change, done in zip(changes, written, strict=True):
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

    def _retry_alone(self, job: JobEvent, shard: QueuedShard, unanswered: list[ImageRef]) -> list[Change]:
        """Queue each unanswered image of a failed job's shard again, alone in a shard of its own:
        SageMaker fails a job for one input file it cannot process and still processes the others,
        so alone, one bad image fails only itself. Queued before its record says so: a collector that
        stops in between runs again (EventBridge retries) and queues it once more, which the job
        builder takes once."""
        body = self.objects.get_if_exists(shard.uri.bucket, shard.uri.key)
        lines = {answers.loads_record(line)[0]: line for line in body.splitlines() if line.strip()} if body else {}
        attempt = shard.attempt + 1
        why = f"transform job {job.name} {job.status.lower()}: {job.failure_reason}"
        waiting = Outcome(
            Status.PENDING,
            Mode.BATCH,
            model_name=job.model_name or None,
            reason=f"waiting for a batch transform job: {why}; retried alone (attempt {attempt} of {MAX_JOB_ATTEMPTS})",
        )
        changes = []
        for ref in unanswered:
            line = lines.get(ref.key)
            if line is None:
                failed = Outcome(
                    Status.FAILED,
                    Mode.BATCH,
                    job_name=job.name,
                    model_name=job.model_name or None,
                    reason=f"{why}; its shard {shard.uri} is gone, so it cannot be retried: run make redrive",
                    error_code=f"Job{job.status}",
                )
                changes.append(Change(ref, Event.JOB_FAILED, failed, job=job.name))
                continue
            uri = shard_uri(self.shard_prefix, ref.bucket, started=self.clock(), nonce=uuid.uuid4().hex)
            self.objects.put_bytes(uri.bucket, uri.key, line + b"\n", answers.JSON_LINES)
            self.queue.send(QueuedShard(uri, (ref,), attempt=attempt).message_body())
            changes.append(Change(ref, Event.JOB_RETRIED, waiting, job=job.name))
        logger.warning(
            "images of a failed job queued again, each alone",
            job_name=job.name,
            shard=str(shard.uri),
            images=len(unanswered),
            attempt=attempt,
        )
        return changes

    def _listed_output(self, listed: list[str], expected: S3Uri, job: JobEvent) -> bytes | None:
        name = expected.key.rsplit("/", 1)[-1]
        found = [key for key in listed if key.rsplit("/", 1)[-1] == name]
        if len(found) != 1:
            return None
        logger.warning("output found under another name", job_name=job.name, expected=str(expected), found=found[0])
        return self.objects.get_if_exists(expected.bucket, found[0])

    @staticmethod
    def _in_job(image: StoredImage | None, ref: ImageRef, job: JobEvent) -> bool:
        if decide(state_of(image, ref, job.name), Event.JOB_ANSWERED) is None:
            logger.info("image no longer waits on this job", image_id=ref.image_id, job_name=job.name)
            return False
        return True

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
