"""Batch transform jobs: names, manifests, and reading their outputs back."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.logic.outcomes import ImageRef

MAX_JOB_NAME = 63
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_DIGEST_CHARS = 16


def job_name(prefix: str, images: Iterable[ImageRef], *, started: datetime, nonce: str) -> str:
    """A unique, readable name: `<prefix>-<UTC time>-<digest of the batch and a nonce>`.

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


@dataclass(frozen=True)
class JobLayout:
    """Where a job's manifest and outputs live. All images of a job are in one bucket."""

    bucket: str
    input_prefix: str
    manifest_prefix: str
    output_prefix: str

    def manifest_key(self, name: str) -> str:
        return f"{self.manifest_prefix}{name}.json"

    def output_uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.output_prefix}{name}/"

    def relative(self, image_key: str) -> str:
        if not image_key.startswith(self.input_prefix):
            raise ValueError(f"key {image_key!r} is outside the input prefix {self.input_prefix!r}")
        return image_key[len(self.input_prefix) :]

    def manifest(self, keys: Iterable[str]) -> list[object]:
        """A ManifestFile: the common prefix first, then each key relative to it."""
        return [{"prefix": f"s3://{self.bucket}/{self.input_prefix}"}, *(self.relative(k) for k in keys)]


def keys_from_manifest(manifest: list[object], bucket: str) -> list[str]:
    """The full object keys a manifest names (inverse of JobLayout.manifest)."""
    if not manifest or not isinstance(manifest[0], dict) or "prefix" not in manifest[0]:
        raise ValueError("a manifest starts with {'prefix': 's3://bucket/prefix/'}")
    uri = str(manifest[0]["prefix"])
    head = f"s3://{bucket}/"
    if not uri.startswith(head):
        raise ValueError(f"manifest prefix {uri!r} is not in bucket {bucket!r}")
    prefix = uri[len(head) :]
    return [prefix + str(rel) for rel in manifest[1:]]
