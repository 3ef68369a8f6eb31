"""Record the outcome of every image of a finished batch transform job."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from pipeline.logic.errors import RejectedImage, TransientError
from pipeline.logic.jobs import JobFiles
from pipeline.logic.outcomes import Mode, Outcome, Status, read_model_answer
from pipeline.logic.ports import ObjectStore, PredictionStore
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
        manifest_body = self.objects.get_if_exists(manifest.bucket, manifest.key)
        if manifest_body is None:
            raise TransientError(f"the manifest {manifest} of job {job.name} does not exist")
        files, keys = JobFiles.from_manifest(job.name, manifest, json.loads(manifest_body), job.output_uri)
        bucket = files.inputs.bucket
        stored = self.store.get_many(f"{bucket}/{key}" for key in keys)

        outcomes = []
        base = Outcome(Status.PENDING, Mode.BATCH, job_name=job.name, model_name=job.model_name or None)
        for key in keys:
            image = stored.get(f"{bucket}/{key}")
            if image is None or image.status is not Status.PENDING or image.job_name != job.name:
                logger.info("image no longer waits on this job", image_id=f"{bucket}/{key}", job_name=job.name)
                continue
            output = files.output_for(key)
            body = self.objects.get_if_exists(output.bucket, output.key)
            outcome = self._outcome(job, body, base)
            if self.store.settle_job_image(image, outcome, self.clock()):
                outcomes.append(outcome)
            logger.info("image outcome", image_id=image.ref.image_id, status=outcome.status, reason=outcome.reason)
        return outcomes

    @staticmethod
    def _outcome(job: JobEvent, body: bytes | None, base: Outcome) -> Outcome:
        if body is None:
            if job.status == "Completed":
                reason = f"transform job {job.name} completed but wrote no output for this image"
            else:
                reason = f"transform job {job.name} {job.status.lower()}: {job.failure_reason}"
            return replace(base, status=Status.FAILED, reason=reason, error_code=f"Job{job.status}")
        try:
            prediction = read_model_answer(body)
        except RejectedImage as exc:
            return replace(base, status=Status.REJECTED, reason=exc.reason, error_code=exc.code)
        except TransientError as exc:
            return replace(base, status=Status.FAILED, reason=str(exc), error_code="BadModelOutput")
        return replace(base, status=Status.CLASSIFIED, prediction=prediction)
