"""S3 access for the pipeline: read an exact object version, write files (several at once), read a small object.

A missing key reads as 404 only to a caller S3 lets list the bucket; to others it is 403, like a
refusal. The roles' ListBucket grants are limited by s3:prefix, and whether S3 counts those for this
is not documented, so a 403 is settled by listing the key itself: absent means missing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.adapters.aws_errors import ACCESS_DENIED, NOT_FOUND, PRECONDITION_FAILED, AwsError, aws_call
from pipeline.adapters.concurrent import concurrently
from pipeline.logic.errors import ObjectChanged, RejectedImage
from pipeline.logic.ports import ObjectData
from pipeline.logic.s3uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class S3Objects:
    def __init__(self, client: S3Client) -> None:
        self.client = client

    def read(self, bucket: str, key: str, etag: str, *, first_bytes: int | None = None) -> ObjectData:
        try:
            with aws_call(f"reading s3://{bucket}/{key}"):
                if first_bytes is not None:
                    byte_range = f"bytes=0-{first_bytes - 1}"
                    response = self.client.get_object(Bucket=bucket, Key=key, IfMatch=f'"{etag}"', Range=byte_range)
                else:
                    response = self.client.get_object(Bucket=bucket, Key=key, IfMatch=f'"{etag}"')
                data = response["Body"].read()
        except AwsError as exc:
            if self._missing(bucket, key, exc):
                raise RejectedImage("ObjectDeleted", "the object was deleted before it could be processed") from exc
            if exc.code in PRECONDITION_FAILED:
                raise ObjectChanged(f"s3://{bucket}/{key} no longer has ETag {etag}") from exc
            if exc.code == "InvalidRange":  # a ranged read of an empty object
                return ObjectData(b"", 0)
            raise
        content_range = response.get("ContentRange")  # "bytes 0-65535/123456"
        total = int(content_range.rsplit("/", 1)[1]) if content_range else len(data)
        return ObjectData(data, total)

    def put_json(self, bucket: str, key: str, doc: object) -> None:
        with aws_call(f"writing s3://{bucket}/{key}"):
            self.client.put_object(
                Bucket=bucket, Key=key, Body=json.dumps(doc).encode(), ContentType="application/json"
            )

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        with aws_call(f"writing s3://{bucket}/{key}"):
            self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def put_many(self, files: Sequence[tuple[str, str, bytes, str]]) -> None:
        concurrently(lambda file: self.put_bytes(*file), files)

    def get_if_exists(self, bucket: str, key: str) -> bytes | None:
        try:
            with aws_call(f"reading s3://{bucket}/{key}"):
                return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except AwsError as exc:
            if self._missing(bucket, key, exc):
                return None
            raise

    def get_many(self, uris: Sequence[S3Uri]) -> list[bytes | None]:
        return concurrently(lambda uri: self.get_if_exists(uri.bucket, uri.key), uris)

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        with aws_call(f"listing s3://{bucket}/{prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def _missing(self, bucket: str, key: str, exc: AwsError) -> bool:
        """Whether a failed read failed because the key does not exist."""
        if exc.code in NOT_FOUND:
            return True
        if exc.code not in ACCESS_DENIED:
            return False
        with aws_call(f"listing s3://{bucket}/{key} after a refused read"):
            listed = self.client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        # the key itself sorts first among the keys it prefixes
        return not any(item["Key"] == key for item in listed.get("Contents", []))
