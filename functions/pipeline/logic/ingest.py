"""Classify a batch of uploaded images: skip duplicates, reject bad input, then either call the
serverless endpoint per image or submit one batch transform job for the lot."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from pipeline.logic.errors import ObjectChanged, RejectedImage, TransientError
from pipeline.logic.images import HEADER_BYTES, inspect_image
from pipeline.logic.jobs import JobLayout
from pipeline.logic.outcomes import FINAL_STATUSES, ImageRef, Mode, Outcome, Status, read_model_answer
from pipeline.logic.ports import Endpoint, ObjectStore, PredictionStore, TransformJobs
from pipeline.logic.routing import RoutingPolicy

logger = Logger(child=True)

_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}


@dataclass(frozen=True)
class IngestRules:
    """What the ingest logic needs to know of its configuration."""

    routing: RoutingPolicy
    jobs: JobLayout
    model_name: str
    max_receive_count: int  # the queue's: the delivery on which a transient failure becomes FAILED


@dataclass
class IngestResult:
    failed_message_ids: set[str] = field(default_factory=set)
    outcomes: list[Outcome] = field(default_factory=list)
    duplicates: int = 0
    superseded: int = 0


class Ingest:
    def __init__(
        self,
        rules: IngestRules,
        objects: ObjectStore,
        store: PredictionStore,
        endpoint: Endpoint,
        transforms: TransformJobs,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rules = rules
        self.objects = objects
        self.store = store
        self.endpoint = endpoint
        self.transforms = transforms
        self.clock = clock

    def run(self, images: list[ImageRef]) -> IngestResult:
        result = IngestResult()
        fresh = self._without_duplicates(images, result)
        serverless, batch = self.rules.routing.route(fresh)
        for ref in serverless:
            self._classify_one(ref, result)
        if batch:
            self._submit_batch(batch, result)
        return result

    def _without_duplicates(self, images: list[ImageRef], result: IngestResult) -> list[ImageRef]:
        """Drop images whose content already has a final outcome or sits in a live job, and
        repeats of one object version within this batch."""
        stored = self.store.get_many({ref.image_id for ref in images})
        fresh: dict[tuple[str, str], ImageRef] = {}
        for ref in images:
            known = stored.get(ref.image_id)
            identity = (ref.image_id, ref.etag)
            if identity in fresh or (
                known and known.ref.etag == ref.etag and self._settled(known.status, known.job_name)
            ):
                result.duplicates += 1
                logger.info("duplicate event skipped", image_id=ref.image_id, etag=ref.etag)
                continue
            fresh[identity] = ref
        return list(fresh.values())

    def _settled(self, status: Status, job: str | None) -> bool:
        if status in FINAL_STATUSES:
            return True
        # PENDING in a job that exists: the collector records its outcome. PENDING in a job that
        # was never created (its submission failed) is submitted again.
        return status is Status.PENDING and job is not None and self.transforms.exists(job)

    # -- serverless -------------------------------------------------------------------------

    def _classify_one(self, ref: ImageRef, result: IngestResult) -> None:
        base = Outcome(
            Status.PENDING, Mode.SERVERLESS, endpoint_name=self.endpoint.name, model_name=self.rules.model_name
        )
        try:
            try:
                outcome = replace(base, status=Status.CLASSIFIED, **self._invoke(ref))
            except RejectedImage as exc:
                outcome = replace(base, status=Status.REJECTED, reason=exc.reason, error_code=exc.code)
            self._record(ref, outcome, result)
        except ObjectChanged:
            result.superseded += 1
            logger.info("object overwritten since this event; its newer event classifies it", image_id=ref.image_id)
        except TransientError as exc:
            self._transient_failure([ref], exc, result, base)

    def _invoke(self, ref: ImageRef) -> dict[str, Any]:
        # Never load more than the endpoint could take: an oversize object is judged by its header.
        max_bytes = self.rules.routing.max_bytes(Mode.SERVERLESS)
        whole = ref.size <= max_bytes
        obj = self.objects.read(ref.bucket, ref.key, ref.etag, first_bytes=None if whole else HEADER_BYTES)
        info = inspect_image(
            obj.data[:HEADER_BYTES],
            obj.total_size,
            max_bytes=max_bytes,
            max_pixels=self.rules.routing.max_image_pixels,
        )
        started = time.perf_counter()
        answer = self.endpoint.invoke(obj.data, _CONTENT_TYPES.get(info.format, "application/x-image"))
        elapsed_ms = (time.perf_counter() - started) * 1000
        return {"prediction": read_model_answer(answer), "inference_ms": round(elapsed_ms, 1)}

    # -- batch transform --------------------------------------------------------------------

    def _submit_batch(self, images: list[ImageRef], result: IngestResult) -> None:
        base = Outcome(Status.PENDING, Mode.BATCH, model_name=self.rules.model_name)
        accepted: list[ImageRef] = []
        for ref in images:
            try:
                self._check_for_batch(ref)
                accepted.append(ref)
            except RejectedImage as exc:
                outcome = replace(base, status=Status.REJECTED, reason=exc.reason, error_code=exc.code)
                try:
                    self._record(ref, outcome, result)
                except TransientError as store_exc:
                    self._transient_failure([ref], store_exc, result, base)
            except ObjectChanged:
                result.superseded += 1
            except TransientError as exc:
                self._transient_failure([ref], exc, result, base)
        for bucket in sorted({ref.bucket for ref in accepted}):
            self._start_job([ref for ref in accepted if ref.bucket == bucket], result)

    def _check_for_batch(self, ref: ImageRef) -> None:
        """Validate before the image enters a manifest: one bad object must not fail a whole job."""
        if not self.rules.jobs.holds(ref.key):
            raise RejectedImage(
                "OutsidePrefix", f"only objects under {self.rules.jobs.input_prefix!r} can join a transform job"
            )
        head = self.objects.read(ref.bucket, ref.key, ref.etag, first_bytes=HEADER_BYTES)
        inspect_image(
            head.data,
            head.total_size,
            max_bytes=self.rules.routing.max_bytes(Mode.BATCH),
            max_pixels=self.rules.routing.max_image_pixels,
        )

    def _start_job(self, images: list[ImageRef], result: IngestResult) -> None:
        job = self.rules.jobs.new_job(images[0].bucket, images, started=self.clock(), nonce=uuid.uuid4().hex)
        base = Outcome(Status.PENDING, Mode.BATCH, job_name=job.name, model_name=self.rules.model_name)
        try:
            # PENDING first: if the job then fails to start, a retry finds PENDING in a job that
            # does not exist and submits the image again; nothing waits on a job that never ran.
            pending = [ref for ref in images if self._record(ref, base, result)]
            if not pending:
                return
            self.objects.put_json(job.manifest.bucket, job.manifest.key, job.manifest_doc(r.key for r in pending))
            self.transforms.start(job.name, str(job.manifest), str(job.output))
        except TransientError as exc:
            self._transient_failure(images, exc, result, base)
            return
        logger.info("transform job submitted", job_name=job.name, images=len(pending))

    # -- recording --------------------------------------------------------------------------

    def _transient_failure(
        self, images: list[ImageRef], exc: TransientError, result: IngestResult, base: Outcome
    ) -> None:
        """Return the messages to the queue. On their last delivery also record FAILED, so the
        image has a visible outcome while its message waits in the DLQ for a redrive."""
        for ref in images:
            result.failed_message_ids.add(ref.message_id)
            last = ref.receive_count >= self.rules.max_receive_count
            logger.warning(
                "transient failure", image_id=ref.image_id, error=str(exc), receive_count=ref.receive_count, last=last
            )
            if last:
                reason = f"gave up after {ref.receive_count} deliveries: {exc}; the message is in the dead-letter queue"
                failed = replace(base, status=Status.FAILED, reason=reason, error_code="RetriesExhausted")
                try:
                    self._record(ref, failed, result)
                except TransientError as store_exc:  # the store is down too: the DLQ holds the message
                    logger.error("could not record FAILED", image_id=ref.image_id, error=str(store_exc))

    def _record(self, ref: ImageRef, outcome: Outcome, result: IngestResult) -> bool:
        written = self.store.record(ref, outcome, self.clock())
        if written and outcome.status is not Status.PENDING:
            result.outcomes.append(outcome)
        if not written:
            result.duplicates += 1
            logger.info("outcome not written: a final or newer record exists", image_id=ref.image_id)
        log = logger.warning if outcome.status in (Status.REJECTED, Status.FAILED) else logger.info
        log("image outcome", image_id=ref.image_id, status=outcome.status, reason=outcome.reason, written=written)
        return written
