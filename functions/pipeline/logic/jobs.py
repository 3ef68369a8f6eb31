"""Batch transform jobs: their names, and where their files live. The one owner of a job's S3
layout: the ingest function writes it, the collector reads it back."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.logic.outcomes import ImageRef
from pipeline.logic.s3uri import S3Uri

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
class JobFiles:
    """One job's files: a ManifestFile naming its images relative to the prefix they share, and an
    output folder where SageMaker writes the answer for `<inputs><relative>` to `<output><relative>.out`."""

    name: str
    manifest: S3Uri
    inputs: S3Uri
    output: S3Uri

    def relative(self, image_key: str) -> str:
        if not image_key.startswith(self.inputs.key):
            raise ValueError(f"key {image_key!r} is outside the input prefix {self.inputs.key!r}")
        return image_key[len(self.inputs.key) :]

    def manifest_doc(self, image_keys: Iterable[str]) -> list[object]:
        """The ManifestFile: the common prefix first, then each key relative to it."""
        return [{"prefix": str(self.inputs)}, *(self.relative(key) for key in image_keys)]

    def output_for(self, image_key: str) -> S3Uri:
        return self.output.join(f"{self.relative(image_key)}.out")

    @classmethod
    def from_manifest(cls, name: str, manifest: S3Uri, doc: object, output_uri: str) -> tuple[JobFiles, list[str]]:
        """A finished job's files and the image keys its manifest names (the inverse of manifest_doc)."""
        if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict) or "prefix" not in doc[0]:
            raise ValueError(f"manifest {manifest} does not start with {{'prefix': 's3://bucket/prefix/'}}")
        inputs = S3Uri.parse(str(doc[0]["prefix"]))
        if inputs.bucket != manifest.bucket:
            raise ValueError(f"manifest prefix {inputs} is not in bucket {manifest.bucket!r}")
        files = cls(name, manifest, inputs, S3Uri.parse(output_uri.rstrip("/") + "/"))
        return files, [inputs.key + str(relative) for relative in doc[1:]]


@dataclass(frozen=True)
class JobLayout:
    """How the pipeline names its jobs and where in the images bucket it puts their files."""

    job_prefix: str
    input_prefix: str
    manifest_prefix: str
    output_prefix: str

    def holds(self, image_key: str) -> bool:
        """Only images under the input prefix can join a job (a manifest names keys relative to it)."""
        return image_key.startswith(self.input_prefix)

    def new_job(self, bucket: str, images: Iterable[ImageRef], *, started: datetime, nonce: str) -> JobFiles:
        name = job_name(self.job_prefix, images, started=started, nonce=nonce)
        return JobFiles(
            name=name,
            manifest=S3Uri(bucket, f"{self.manifest_prefix}{name}.json"),
            inputs=S3Uri(bucket, self.input_prefix),
            output=S3Uri(bucket, f"{self.output_prefix}{name}/"),
        )
