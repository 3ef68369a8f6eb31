"""Record the outcome of every image of a finished batch transform job: each shard's output has
one answer line per image, found by its record id (the image key).

A shard's output is looked up by name (`<output><shard name>.out`); AWS does not document the
names of a manifest's outputs, so one that is not there is looked for once more in a listing of
the job's output folder, by its file name, before its images are recorded NoOutput."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

import answers
from pipeline.logic.errors import TransientError
from pipeline.logic.jobs import JobFiles, index_of
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import ObjectStore, PredictionStore, StoredImage, may_settle
from pipeline.logic.s3uri import S3Uri

logger = Logger(child=True)

TERMINAL_JOB_STATES = ("Completed", "Failed", "Stopped")


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
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.objects = objects
        self.store = store
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
        stored = self.store.get_many(ref.image_id for shard in shards for ref in shard.images)

        listed: list[str] | None = None  # the job's output folder, listed at most once
        settled: list[tuple[StoredImage, Outcome]] = []
        base = Outcome(Status.PENDING, Mode.BATCH, job_name=job.name, model_name=job.model_name or None)
        for shard in shards:
            waiting = [stored[r.image_id] for r in shard.images if self._waits_on(stored.get(r.image_id), r, job)]
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
            settled += [(image, self._outcome(job, body, found.get(image.ref.key), broken, base)) for image in waiting]
        written = self.store.settle_many(settled, self.clock())  # many writes at once: jobs are large
        outcomes = []
        for (image, outcome), done in zip(settled, written, strict=True):
            logger.info(
                "image outcome", image_id=image.ref.image_id, status=outcome.status, reason=outcome.reason, written=done
            )
            if done:
                outcomes.append(outcome)
        return outcomes

    def _listed_output(self, listed: list[str], expected: S3Uri, job: JobEvent) -> bytes | None:
        name = expected.key.rsplit("/", 1)[-1]
        found = [key for key in listed if key.rsplit("/", 1)[-1] == name]
        if len(found) != 1:
            return None
        logger.warning("output found under another name", job_name=job.name, expected=str(expected), found=found[0])
        return self.objects.get_if_exists(expected.bucket, found[0])

    @staticmethod
    def _waits_on(image: StoredImage | None, ref: ImageRef, job: JobEvent) -> bool:
        if not may_settle(image, ref.etag, job.name):
            logger.info("image no longer waits on this job", image_id=ref.image_id, job_name=job.name)
            return False
        return True

    @staticmethod
    def _outcome(
        job: JobEvent, body: bytes | None, answer: answers.Answer | None, broken: list[str], base: Outcome
    ) -> Outcome:
        if answer is None:
            if job.status != "Completed":
                reason = f"transform job {job.name} {job.status.lower()}: {job.failure_reason}"
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
