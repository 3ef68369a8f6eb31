"""moto's DynamoDB export to S3 (ExportTableToPointInTime), writing what DynamoDB writes.

moto 5 writes one data file under a folder of its own and no manifest, and names the export
`<table ARN>/import/<id>`. DynamoDB (developer guide, "DynamoDB table export output format") writes,
under `<prefix>/AWSDynamoDB/<ExportId>/`: `_started` first, the data files `data/<name>.json.gz` (one
`{"Item": {...}}` per line, in DynamoDB JSON), then `manifest-files.json` (a line per data file) and
`manifest-summary.json`; the export's ARN is `<table ARN>/export/<ExportId>`. The patch writes that
layout (one data file: a local table is one partition). The refusal of a table without point-in-time
recovery is moto's own.

The local stack (devstack/aws/stack.py) applies it.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

DATA_SUFFIX = ".json.gz"


def export_id() -> str:
    """As DynamoDB's: 14 digits of milliseconds, a hyphen, 8 hex digits."""
    return f"{int(time.time() * 1000):014d}-{uuid.uuid4().hex[:8]}"


def patch() -> None:
    """Make moto's table exports write DynamoDB's layout (idempotent)."""
    from moto.core.utils import gzip_compress
    from moto.dynamodb.models.table_export import TableExport

    if getattr(TableExport, "writes_dynamodb_layout", False):
        return
    init = TableExport.__init__

    def init_as_dynamodb(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.export_id = export_id()
        self.arn = f"{self.table.table_arn}/export/{self.export_id}"
        self.started = datetime.now(UTC)

    def backup_to_s3(self: Any, s3_backend: Any) -> None:
        from moto.dynamodb.models.utilities import dynamo_json_dump

        folder = f"{self.s3_prefix.rstrip('/')}/AWSDynamoDB/{self.export_id}/".lstrip("/")

        def put(key: str, body: bytes) -> Any:
            return s3_backend.put_object(bucket_name=self.s3_bucket, key_name=key, value=body)

        put(f"{folder}_started", b"")
        lines = []
        for item in self.table.all_items():
            line = dynamo_json_dump(item.to_json(root_attr_name="Item"))
            lines.append(line + "\n")
            self.processed_bytes += len(line)
            self.item_count += 1
        data_key = f"{folder}data/{uuid.uuid4().hex[:26]}{DATA_SUFFIX}"
        content = gzip_compress("".join(lines).encode())
        stored = put(data_key, content)
        files_line = {
            "itemCount": self.item_count,
            "md5Checksum": hashlib.md5(content).hexdigest(),  # noqa: S324 - S3's checksum, not security
            "etag": str(stored.etag).strip('"'),
            "dataFileS3Key": data_key,
        }
        put(f"{folder}manifest-files.json", (json.dumps(files_line) + "\n").encode())
        summary = {
            "version": "2020-06-30",
            "exportArn": self.arn,
            "startTime": self.started.isoformat(),
            "endTime": datetime.now(UTC).isoformat(),
            "tableArn": self.table.table_arn,
            "exportTime": self.started.isoformat(),
            "s3Bucket": self.s3_bucket,
            "s3Prefix": self.s3_prefix,
            "s3SseAlgorithm": "AES256",
            "manifestFilesS3Key": f"{folder}manifest-files.json",
            "billedSizeBytes": self.processed_bytes,
            "itemCount": self.item_count,
            "outputFormat": "DYNAMODB_JSON",
        }
        put(f"{folder}manifest-summary.json", json.dumps(summary).encode())
        self.status = "COMPLETED"

    TableExport.__init__ = init_as_dynamodb  # type: ignore[method-assign]
    TableExport._backup_to_s3_file = backup_to_s3  # type: ignore[method-assign]
    TableExport.writes_dynamodb_layout = True  # type: ignore[attr-defined]
