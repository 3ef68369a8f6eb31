"""s3://bucket/key locations, as SageMaker's job requests and events carry them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str  # may be a prefix ending in "/"

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        bucket, slash, key = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not bucket or not slash:
            raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def join(self, relative: str) -> S3Uri:
        return S3Uri(self.bucket, self.key + relative)
