"""In-memory implementations of the ports in pipeline/logic/ports.py, for the unit tests.

They keep the adapters' contracts (tests/pipeline/test_store_contract.py runs the same cases against
MemoryPredictions and the DynamoDB adapter), and let a test script faults: each fake raises the
TransientError queued with `fail_next`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import answers
from pipeline.logic.errors import NoCapacity, ObjectChanged, RejectedImage, TransientError
from pipeline.logic.jobs import JobEvent
from pipeline.logic.lifecycle import Change, StoredImage
from pipeline.logic.outcomes import ImageRef, Outcome
from pipeline.logic.ports import JOB_IN_FLIGHT, JOB_NOT_STARTED, JobItem, Lease, ObjectData, may_take_lease
from pipeline.logic.s3uri import S3Uri
from tests.fakes.sagemaker_runtime import model_answer, records_answer


class Faults:
    def __init__(self) -> None:
        self._queued: deque[TransientError | None] = deque()

    def fail_next(self, *errors: TransientError | None) -> None:
        """Queue one outcome per coming call: an error to raise, or None to let the call through."""
        self._queued.extend(errors)

    def check(self) -> None:
        error = self._queued.popleft() if self._queued else None
        if error is not None:
            raise error


class MemoryObjects(Faults):
    """A bucket store whose ETags are MD5 digests, as S3's are for simple uploads."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[tuple[str, str], bytes] = {}

    def put(self, bucket: str, key: str, data: bytes) -> str:
        self.objects[bucket, key] = data
        return hashlib.md5(data).hexdigest()  # noqa: S324 - S3's ETag, not security

    def delete(self, bucket: str, key: str) -> None:
        del self.objects[bucket, key]

    def read(self, bucket: str, key: str, etag: str, *, first_bytes: int | None = None) -> ObjectData:
        self.check()
        if (bucket, key) not in self.objects:
            raise RejectedImage("ObjectDeleted", "the object was deleted before it could be processed")
        data = self.objects[bucket, key]
        if hashlib.md5(data).hexdigest() != etag:  # noqa: S324
            raise ObjectChanged(f"s3://{bucket}/{key} no longer has ETag {etag}")
        return ObjectData(data if first_bytes is None else data[:first_bytes], len(data))

    def put_json(self, bucket: str, key: str, doc: object) -> None:
        self.check()
        self.objects[bucket, key] = json.dumps(doc).encode()

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        self.check()
        self.objects[bucket, key] = data

    def put_many(self, files: Sequence[tuple[str, str, bytes, str]]) -> None:
        for file in files:
            self.put_bytes(*file)

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        self.check()
        return sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))

    def get_if_exists(self, bucket: str, key: str) -> bytes | None:
        self.check()
        return self.objects.get((bucket, key))

    def get_many(self, uris: Sequence[S3Uri]) -> list[bytes | None]:
        return [self.get_if_exists(uri.bucket, uri.key) for uri in uris]


@dataclass(frozen=True)
class Record:
    ref: ImageRef
    outcome: Outcome
    written_at: datetime

    @property
    def stored(self) -> StoredImage:
        return StoredImage(self.ref, self.outcome.status, self.outcome.job_name)


class MemoryPredictions(Faults):
    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, Record] = {}
        self.writes = 0

    def get_many(self, image_ids: Iterable[str]) -> dict[str, StoredImage]:
        self.check()
        return {i: self.records[i].stored for i in image_ids if i in self.records}

    def write(self, changes: Sequence[Change], now: datetime) -> list[bool]:
        written = []
        for change in changes:
            self.check()
            allowed = change.allowed(self._stored(change.ref.image_id))  # the lifecycle table itself
            written.append(self._write(change.ref, change.outcome, now, allowed))
        return written

    def outcome(self, image_id: str) -> Outcome | None:
        record = self.records.get(image_id)
        return record.outcome if record else None

    def _stored(self, image_id: str) -> StoredImage | None:
        record = self.records.get(image_id)
        return record.stored if record else None

    def _write(self, ref: ImageRef, outcome: Outcome, now: datetime, allowed: bool) -> bool:
        if allowed:
            self.records[ref.image_id] = Record(ref, outcome, now)
            self.writes += 1
        return allowed


class MemoryLease(Faults):
    """The builder's lease under ports.may_take_lease, atomic under a lock as DynamoDB's write is."""

    def __init__(self) -> None:
        super().__init__()
        self.lease: Lease | None = None
        self.taken: list[str] = []  # holders, in the order they took it
        self._lock = threading.Lock()

    def acquire(self, holder: str, now: datetime, expires_at: datetime) -> bool:
        self.check()
        with self._lock:
            if not may_take_lease(self.lease, now):
                return False
            self.lease = Lease(holder, expires_at)
            self.taken.append(holder)
            return True

    def release(self, holder: str, now: datetime) -> None:
        with self._lock:
            if self.lease is not None and self.lease.holder == holder:
                self.lease = Lease(holder, now)


class FakeEndpoint(Faults):
    """Answers as the model handler does (tests/fakes/sagemaker_runtime.model_answer): a bad image
    is refused, as the endpoint adapter reports a 4xx ModelError."""

    def __init__(self, name: str = "dogbreed-serverless") -> None:
        super().__init__()
        self.name = name
        self.calls: list[str] = []  # content types, one per call

    def invoke(self, body: bytes, content_type: str, accept: str = "application/json") -> bytes:
        self.calls.append(content_type)
        self.check()
        if content_type == answers.JSON_LINES:
            return records_answer(body).encode()
        _, answer = model_answer(body, content_type)
        if isinstance(answer, answers.ErrorRecord):
            raise RejectedImage(answer.code, answer.message)
        return answers.dumps(answer).encode()


@dataclass
class Job:
    name: str
    manifest_uri: str
    output_uri: str
    ended_at: datetime | None = None


class MemoryTransformJobs(Faults):
    """Jobs run until `finish` is called. With a quota, a job beyond it is refused as SageMaker
    refuses it (NoCapacity, from ResourceLimitExceeded)."""

    def __init__(self, quota: int | None = None) -> None:
        super().__init__()
        self.jobs: dict[str, Job] = {}
        self.finished: dict[str, str] = {}  # job name -> how it ended
        self.quota = quota

    def status(self, name: str) -> str | None:
        if name not in self.jobs:
            return None
        return self.finished.get(name, "InProgress")

    def describe(self, name: str) -> JobEvent | None:
        self.check()
        job = self.jobs.get(name)
        if job is None:
            return None
        detail = {
            "TransformJobName": name,
            "TransformJobStatus": self.finished.get(name, "InProgress"),
            "FailureReason": "AlgorithmError: the model container answered 500" if name in self.finished else None,
            "ModelName": "dogbreed-resnet18",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": job.manifest_uri}}},
            "TransformOutput": {"S3OutputPath": job.output_uri},
            "TransformEndTime": job.ended_at,
        }
        return JobEvent.from_detail(detail)

    def start(self, name: str, manifest_uri: str, output_uri: str) -> None:
        self.check()
        if name in self.jobs:
            return
        if self.quota is not None and len(self.jobs.keys() - self.finished.keys()) >= self.quota:
            raise NoCapacity("ResourceLimitExceeded: the account's transform instance quota is used up")
        self.jobs[name] = Job(name, manifest_uri, output_uri)

    def finish(self, *names: str, status: str = "Completed", at: datetime | None = None) -> None:
        for name in names or list(self.jobs):
            self.finished[name] = status
            self.jobs[name].ended_at = at


class MemoryJobBook(Faults):
    """Job items and the set of jobs in flight, as DynamoJobBook keeps them."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, JobItem] = {}
        self.flying: set[str] = set()
        self.not_collected: set[str] = set()

    def open(self, job: JobItem, now: datetime) -> None:
        self.check()
        self.items[job.name] = job
        self.flying.add(job.name)
        self.not_collected.add(job.name)

    def update(self, name: str, status: str, now: datetime, reason: str = "", *, expected: str | None = None) -> bool:
        self.check()
        job = self.items.get(name)
        if job is not None:
            if expected is not None and job.status != expected:
                return False
            self.items[name] = dataclasses.replace(job, status=status, failure_reason=reason)
        elif expected is not None:
            return False
        if status not in JOB_IN_FLIGHT:
            self.flying.discard(name)
        if status == JOB_NOT_STARTED:
            self.not_collected.discard(name)
        return True

    def get_many(self, names: Iterable[str]) -> dict[str, JobItem]:
        self.check()
        return {name: self.items[name] for name in names if name in self.items}

    def in_flight(self) -> list[str]:
        self.check()
        return sorted(self.flying)

    def uncollected(self) -> list[str]:
        self.check()
        return sorted(self.not_collected)

    def collected(self, name: str, now: datetime) -> None:
        self.check()
        self.not_collected.discard(name)


class MemoryJobQueue(Faults):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def send(self, body: str) -> None:
        self.check()
        self.messages.append(body)

    def send_many(self, bodies: Sequence[str]) -> None:
        self.check()
        self.messages += bodies
