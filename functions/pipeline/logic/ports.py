"""What the domain logic needs from the outside world. Adapters in pipeline.adapters implement
these over boto3 clients; tests/fakes/ports.py implements them in memory for the unit tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pipeline.logic.jobs import JobEvent
from pipeline.logic.lifecycle import Change, StoredImage
from pipeline.logic.s3uri import S3Uri


@dataclass(frozen=True)
class ObjectData:
    data: bytes
    total_size: int  # the whole object's size, also when `data` is only its first bytes


class ObjectStore(Protocol):
    def read(self, bucket: str, key: str, etag: str, *, first_bytes: int | None = None) -> ObjectData:
        """The object's bytes (or its first bytes) if it still has this ETag.

        Raises RejectedImage if the object is gone and ObjectChanged if it was overwritten."""
        ...

    def put_json(self, bucket: str, key: str, doc: object) -> None: ...

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None: ...

    def put_many(self, files: Sequence[tuple[str, str, bytes, str]]) -> None:
        """Each (bucket, key, data, content type), several at once."""
        ...

    def get_if_exists(self, bucket: str, key: str) -> bytes | None: ...

    def get_many(self, uris: Sequence[S3Uri]) -> list[bytes | None]:
        """Each object's bytes (None for one that does not exist), several read at once."""
        ...

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under the prefix."""
        ...


class PredictionStore(Protocol):
    """Writes are atomic and conditional: each is checked against the record as it is when written,
    under the lifecycle table (lifecycle.py)."""

    def get_many(self, image_ids: Iterable[str]) -> dict[str, StoredImage]: ...

    def write(self, changes: Sequence[Change], now: datetime) -> list[bool]:
        """Each change where the table allows it (concurrently where the store can), in order. True
        where written."""
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


JOB_STARTING = "Starting"  # written before CreateTransformJob
JOB_NOT_STARTED = "NotStarted"  # SageMaker refused it, or has no such job
JOB_IN_FLIGHT = frozenset({JOB_STARTING, "InProgress", "Stopping"})  # the rest: SageMaker's TransformJobStatus
JOB_COLLECTED = "Transform Job Collected"  # the EventBridge detail-type a collected job is published under


@dataclass(frozen=True)
class JobItem:
    """A transform job as the pipeline keeps it: written before CreateTransformJob, its status then
    SageMaker's, set by the collector when the job ends."""

    name: str
    status: str
    holder: str  # the job builder's lease holder that wrote it
    shards: int = 0  # how many: not their names, so that the item's size is bounded (tests/unit/test_limits.py)
    images: int = 0
    attempt: int = 1  # the highest attempt of its shards
    failure_reason: str = ""


class JobBook(Protocol):
    """The pipeline's transform jobs, and which of them count against MaxTransformJobsInFlight."""

    def open(self, job: JobItem, now: datetime) -> None:
        """Write the job and count it in flight."""
        ...

    def update(self, name: str, status: str, now: datetime, reason: str = "", *, expected: str | None = None) -> bool:
        """Set a job's status, if it has an item (and, with `expected`, only while it has that status:
        False if not). A status not in JOB_IN_FLIGHT stops it counting."""
        ...

    def get_many(self, names: Iterable[str]) -> dict[str, JobItem]: ...

    def in_flight(self) -> list[str]:
        """The names of the jobs that count in flight (strongly consistent)."""
        ...

    def uncollected(self) -> list[str]:
        """The names of the jobs opened and not yet collected (nor refused by SageMaker)."""
        ...

    def collected(self, name: str, now: datetime) -> None:
        """Every image of the job has been dealt with: nothing more to collect. Its item (if it has one)
        is marked collected once, which publishes the job's "Transform Job Collected" event."""
        ...


class Endpoint(Protocol):
    name: str

    def invoke(self, body: bytes, content_type: str, accept: str = "application/json") -> bytes:
        """The model's answer (JSON Lines, a line a record, for a JSON Lines request). Raises
        RejectedImage (a 4xx from the model) or TransientError."""
        ...


class TransformJobLookup(Protocol):
    def describe(self, name: str) -> JobEvent | None:
        """The job as its state change event would give it, or None if there is no such job."""
        ...


class TransformJobs(Protocol):
    def status(self, name: str) -> str | None:
        """The job's TransformJobStatus (InProgress, Completed, Failed, ...), or None if there is no such job."""
        ...

    def start(self, name: str, manifest_uri: str, output_uri: str) -> None:
        """Start the job; succeeds quietly if a job of that name already exists. Raises NoCapacity
        when SageMaker refuses it for quota or throttling."""
        ...


class JobQueue(Protocol):
    def send(self, body: str) -> None:
        """Put one message on the queue that the job builder drains."""
        ...

    def send_many(self, bodies: Sequence[str]) -> None:
        """Put the messages on the queue, ten to a call and several calls at once."""
        ...


class Backlog(Protocol):
    def waiting(self) -> int:
        """Images waiting in the upload queue, as SQS counts them (approximately)."""
        ...
