"""Batch transform jobs: their names, and where their files live. The one owner of a job's S3
layout: the ingest function writes shards, the job builder writes a job's manifest and index, the
collector reads them back.

- A shard is a JSON Lines file of images (answers.dumps_record, the image key as record id),
  written by the ingest function and announced on the job queue by one message (QueuedShard).
- A job reads a ManifestFile naming its shards; SageMaker splits them by line and sends many
  records per request. Its index names, for each shard, the images on its lines.
- SageMaker writes the answers for `<inputs><relative>` to `<output><relative>.out`, a line each.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pipeline.logic.errors import MalformedMessage
from pipeline.logic.outcomes import ImageRef
from pipeline.logic.s3uri import S3Uri

TERMINAL_JOB_STATES = ("Completed", "Failed", "Stopped")
MAX_JOB_NAME = 63
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_DIGEST_CHARS = 16


def job_name(prefix: str, images: Iterable[ImageRef], *, started: datetime, nonce: str) -> str:
    """A unique, readable name: `<prefix>-<UTC time>-<digest of the images and a nonce>`.

    Names are unique per account and region forever, so each submission gets a fresh one (the
    nonce); a submission retried within one call reuses its name and SageMaker refuses a second
    job. Whether an image already sits in a job is decided from its PENDING record, not the name.
    """
    digest = hashlib.sha256(nonce.encode())
    for identity in sorted(f"{ref.bucket}\0{ref.key}\0{ref.etag}" for ref in images):
        digest.update(b"\n" + identity.encode())
    name = f"{prefix}-{started.astimezone(UTC):%Y%m%d%H%M%S}-{digest.hexdigest()[:_DIGEST_CHARS]}"
    if len(name) > MAX_JOB_NAME or not _JOB_NAME.match(name):
        raise ValueError(f"transform job name {name!r} is invalid: keep the job prefix short and alphanumeric")
    return name


def _ref_to_json(ref: ImageRef) -> dict[str, Any]:
    doc = {
        "bucket": ref.bucket,
        "key": ref.key,
        "etag": ref.etag,
        "size": ref.size,
        "uploaded_at": ref.uploaded_at.astimezone(UTC).isoformat(),
    }
    return doc | ({"requested_at": ref.requested_at.astimezone(UTC).isoformat()} if ref.requested_at else {})


def _ref_from_json(doc: dict[str, Any]) -> ImageRef:
    requested = doc.get("requested_at")
    return ImageRef(
        bucket=str(doc["bucket"]),
        key=str(doc["key"]),
        etag=str(doc["etag"]),
        size=int(doc["size"]),
        uploaded_at=datetime.fromisoformat(str(doc["uploaded_at"])),
        requested_at=datetime.fromisoformat(str(requested)) if requested else None,
    )


def ref_json_size(ref: ImageRef) -> int:
    """The bytes an image adds to a shard's message."""
    return len(json.dumps(_ref_to_json(ref), ensure_ascii=False).encode()) + 2


@dataclass(frozen=True)
class QueuedShard:
    """A shard waiting for a transform job: its file, and its images in line order (each line's
    record id is the image key). One message of the job queue."""

    uri: S3Uri
    images: tuple[ImageRef, ...]
    message_id: str = ""
    receive_count: int = 1
    attempt: int = 1  # the transform jobs it is in: 1 as ingested, more once its images are retried alone

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"shard": str(self.uri), "images": [_ref_to_json(ref) for ref in self.images]}
        return doc | ({"attempt": self.attempt} if self.attempt > 1 else {})

    def message_body(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)

    @classmethod
    def from_json(cls, doc: object) -> QueuedShard:
        if not isinstance(doc, dict):
            raise ValueError("a shard is a JSON object")
        images = tuple(_ref_from_json(ref) for ref in doc["images"])
        return cls(S3Uri.parse(str(doc["shard"])), images, attempt=int(doc.get("attempt", 1)))

    @classmethod
    def from_message(cls, message_id: str, body: str, receive_count: int = 1) -> QueuedShard:
        try:
            shard = cls.from_json(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedMessage(f"message {message_id} does not announce a shard: {exc!r}") from exc
        images = tuple(replace(ref, message_id=message_id, receive_count=receive_count) for ref in shard.images)
        return replace(shard, images=images, message_id=message_id, receive_count=receive_count)


@dataclass(frozen=True)
class JobEvent:
    """The parts of a "SageMaker Transform Job State Change" event the collector uses. The event's
    detail is DescribeTransformJob's answer, so a job looked up reads the same way."""

    name: str
    status: str
    failure_reason: str
    manifest_uri: str
    output_uri: str
    model_name: str
    ended_at: datetime | None = None  # TransformEndTime, once it ended

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
                ended_at=_moment(detail.get("TransformEndTime")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"the transform job event lacks {exc}") from exc


def _moment(value: object) -> datetime | None:
    """A time as SageMaker's events (milliseconds since the epoch) or boto3 (datetime) give it."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class JobFiles:
    """One job's files: the ManifestFile naming its shards relative to the prefix they share, the
    index of the images on each shard's lines, and the output folder."""

    name: str
    manifest: S3Uri
    inputs: S3Uri
    output: S3Uri

    @property
    def index(self) -> S3Uri:
        return index_of(self.manifest)

    def relative(self, shard_key: str) -> str:
        if not shard_key.startswith(self.inputs.key):
            raise ValueError(f"key {shard_key!r} is outside the input prefix {self.inputs.key!r}")
        return shard_key[len(self.inputs.key) :]

    def manifest_doc(self, shards: Iterable[QueuedShard]) -> list[object]:
        """The ManifestFile: the common prefix first, then each shard's key relative to it."""
        return [{"prefix": str(self.inputs)}, *(self.relative(shard.uri.key) for shard in shards)]

    def index_doc(self, shards: Iterable[QueuedShard]) -> dict[str, Any]:
        return {"job": self.name, "prefix": str(self.inputs), "shards": [shard.to_json() for shard in shards]}

    def output_for(self, shard_key: str) -> S3Uri:
        return self.output.join(f"{self.relative(shard_key)}.out")

    @classmethod
    def from_index(cls, name: str, manifest: S3Uri, doc: object, output_uri: str) -> tuple[JobFiles, list[QueuedShard]]:
        """A finished job's files and its shards (the inverse of index_doc)."""
        try:
            if not isinstance(doc, dict):
                raise TypeError("the index is not a JSON object")
            inputs = S3Uri.parse(str(doc["prefix"]))
            shards = [QueuedShard.from_json(shard) for shard in doc["shards"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the index {index_of(manifest)} of job {name} is malformed: {exc!r}") from exc
        return cls(name, manifest, inputs, S3Uri.parse(output_uri.rstrip("/") + "/")), shards


def shard_uri(shard_prefix: str, bucket: str, *, started: datetime, nonce: str) -> S3Uri:
    """Where the ingest function writes a new shard: flat under the prefix (no sub-folders), so
    the name of its output has one reading (collect.py)."""
    return S3Uri(bucket, f"{shard_prefix}{started.astimezone(UTC):%Y%m%dT%H%M%S}-{nonce}.jsonl")


def index_of(manifest: S3Uri) -> S3Uri:
    """Where a job's index lives: beside its manifest."""
    return S3Uri(manifest.bucket, manifest.key.removesuffix(".json") + ".images.json")


@dataclass(frozen=True)
class JobLayout:
    """How the pipeline names its jobs and where in the images bucket it puts their files."""

    job_prefix: str
    shard_prefix: str
    manifest_prefix: str
    output_prefix: str

    def new_job(self, bucket: str, shards: Sequence[QueuedShard], *, started: datetime, nonce: str) -> JobFiles:
        name = job_name(self.job_prefix, [ref for s in shards for ref in s.images], started=started, nonce=nonce)
        return JobFiles(
            name=name,
            manifest=S3Uri(bucket, f"{self.manifest_prefix}{name}.json"),
            inputs=S3Uri(bucket, self.shard_prefix),
            output=S3Uri(bucket, f"{self.output_prefix}{name}/"),
        )
