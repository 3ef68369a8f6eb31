"""What the domain logic needs from the outside world. Adapters in pipeline.adapters implement
these over boto3 clients; tests/fakes/ports.py implements them in memory for the unit tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pipeline.logic.outcomes import FINAL_STATUSES, ImageRef, Outcome, Status


@dataclass(frozen=True)
class ObjectData:
    data: bytes
    total_size: int  # the whole object's size, also when `data` is only its first bytes


@dataclass(frozen=True)
class StoredImage:
    """The record an image has now."""

    ref: ImageRef
    status: Status
    job_name: str | None = None


class ObjectStore(Protocol):
    def read(self, bucket: str, key: str, etag: str, *, first_bytes: int | None = None) -> ObjectData:
        """The object's bytes (or its first bytes) if it still has this ETag.

        Raises RejectedImage if the object is gone and ObjectChanged if it was overwritten."""
        ...

    def put_json(self, bucket: str, key: str, doc: object) -> None: ...

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None: ...

    def get_if_exists(self, bucket: str, key: str) -> bytes | None: ...

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under the prefix."""
        ...


def may_record(stored: StoredImage | None, ref: ImageRef) -> bool:
    """PredictionStore.record's rule: write unless the image already has a final outcome for this
    content, or a record of newer content."""
    if stored is None:
        return True
    if stored.ref.etag == ref.etag:
        return stored.status not in FINAL_STATUSES
    return stored.ref.uploaded_at <= ref.uploaded_at


def may_settle(stored: StoredImage | None, etag: str, job_name: str | None) -> bool:
    """PredictionStore.settle_job_image's rule: only a PENDING record of this job and content."""
    return (
        stored is not None
        and stored.status is Status.PENDING
        and stored.job_name == job_name
        and stored.ref.etag == etag
    )


class PredictionStore(Protocol):
    """Writes are atomic and conditional: the rule is checked against the record as it is when written."""

    def get_many(self, image_ids: Iterable[str]) -> dict[str, StoredImage]: ...

    def record(self, ref: ImageRef, outcome: Outcome, now: datetime) -> bool:
        """Write the outcome if may_record allows it. True if written."""
        ...

    def record_many(self, refs: Sequence[ImageRef], outcome: Outcome, now: datetime) -> list[bool]:
        """record() for each image (concurrently where the store can), in order."""
        ...

    def settle_job_image(self, stored: StoredImage, outcome: Outcome, now: datetime) -> bool:
        """Replace a PENDING record of the outcome's job with the outcome, if may_settle allows it.
        True if written."""
        ...

    def settle_many(self, settled: Sequence[tuple[StoredImage, Outcome]], now: datetime) -> list[bool]:
        """settle_job_image() for each pair (concurrently where the store can), in order."""
        ...


@dataclass(frozen=True)
class Lease:
    """Who holds the job builder's lease, and until when."""

    holder: str
    expires_at: datetime


def may_take_lease(current: Lease | None, now: datetime) -> bool:
    """BuilderLease.acquire's rule: nobody holds it, or the holder's lease has run out."""
    return current is None or current.expires_at <= now


class BuilderLease(Protocol):
    """One job builder at a time: a conditional write on one item, held for one build."""

    def acquire(self, holder: str, now: datetime, expires_at: datetime) -> bool:
        """Take the lease if may_take_lease allows it (atomically). True if taken."""
        ...

    def release(self, holder: str, now: datetime) -> None:
        """End the lease now, if this holder still has it."""
        ...


class Endpoint(Protocol):
    name: str

    def invoke(self, body: bytes, content_type: str) -> bytes:
        """The model's answer. Raises RejectedImage (a 4xx from the model) or TransientError."""
        ...


class TransformJobs(Protocol):
    def exists(self, name: str) -> bool: ...

    def in_flight(self) -> int:
        """How many of the pipeline's jobs are running (InProgress or Stopping)."""
        ...

    def start(self, name: str, manifest_uri: str, output_uri: str) -> None:
        """Start the job; succeeds quietly if a job of that name already exists. Raises NoCapacity
        when SageMaker refuses it for quota or throttling."""
        ...


class JobQueue(Protocol):
    def send(self, body: str) -> None:
        """Put one message on the queue that the job builder drains."""
        ...
