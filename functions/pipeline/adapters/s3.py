"""S3 access for the pipeline: read an exact object version, write and read small JSON files."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.logic.errors import ObjectChanged, RejectedImage, TransientError
from pipeline.logic.ports import ObjectData

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Objects:
    def __init__(self, client: S3Client) -> None:
        self.client = client

    def read(self, bucket: str, key: str, etag: str, *, first_bytes: int | None = None) -> ObjectData:
        kwargs = {"Bucket": bucket, "Key": key, "IfMatch": f'"{etag}"'}
        if first_bytes is not None:
            kwargs["Range"] = f"bytes=0-{first_bytes - 1}"
        try:
            response = self.client.get_object(**kwargs)
            data = response["Body"].read()
        except ClientError as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "404"):
                raise RejectedImage("ObjectDeleted", "the object was deleted before it could be processed") from exc
            if code in ("PreconditionFailed", "412"):
                raise ObjectChanged(f"s3://{bucket}/{key} no longer has ETag {etag}") from exc
            if code == "InvalidRange":  # a ranged read of an empty object
                return ObjectData(b"", 0)
            raise TransientError(f"reading s3://{bucket}/{key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"reading s3://{bucket}/{key} failed: {exc}") from exc
        content_range = response.get("ContentRange")  # "bytes 0-65535/123456"
        total = int(content_range.rsplit("/", 1)[1]) if content_range else len(data)
        return ObjectData(data, total)

    def put_json(self, bucket: str, key: str, doc: object) -> None:
        try:
            self.client.put_object(
                Bucket=bucket, Key=key, Body=json.dumps(doc).encode(), ContentType="application/json"
            )
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"writing s3://{bucket}/{key} failed: {exc}") from exc

    def get_json(self, bucket: str, key: str) -> object:
        body = self.get_if_exists(bucket, key)
        if body is None:
            raise TransientError(f"s3://{bucket}/{key} does not exist")
        return json.loads(body)

    def get_if_exists(self, bucket: str, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise TransientError(f"reading s3://{bucket}/{key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"reading s3://{bucket}/{key} failed: {exc}") from exc
