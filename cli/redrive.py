"""Try FAILED images again, in every mode.

    make redrive ARGS="--stack dogbreed --prefix incoming/2026/ --since 2026-12-01T00:00"
    make redrive ARGS="--stack dogbreed --dry-run"

Each FAILED image (under --prefix, recorded FAILED at or after --since) is copied onto itself in S3,
with its metadata and a `redriven-at` mark. S3 then notifies an ObjectCreated:Copy event, which takes
the path an upload takes: the ingest function routes it by the stack's mode and records its new
outcome. Safe to repeat: an image no longer FAILED is not listed, and the event of a second copy of
content classified meanwhile is skipped as a duplicate (a copy keeps the ETag of an object uploaded
in one part; one uploaded in parts gets a new ETag, so it is classified once more). An object deleted
or overwritten since is reported, not copied.

The table and bucket come from --table/--bucket, PREDICTIONS_TABLE/IMAGES_BUCKET, or --stack's outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from cli.query import stack_outputs
from infra.predictions import Predictions


@dataclass(frozen=True)
class Redriven:
    key: str
    outcome: str  # "copied", "would copy" (dry run), or why not


def failed_images(predictions: Predictions, bucket: str, prefix: str, since: str) -> Iterator[str]:
    """Keys of the bucket's FAILED images under the prefix, recorded FAILED at or after `since`."""
    condition, values = "problem_status = :failed", {":failed": {"S": "FAILED"}}
    if since:  # the index sorts by updated_at (ISO 8601, so string order is time order)
        condition, values = f"{condition} AND updated_at >= :since", {**values, ":since": {"S": since}}
    pages = predictions.dynamodb.get_paginator("query").paginate(
        TableName=predictions.table,
        IndexName="by-problem",
        KeyConditionExpression=condition,
        ExpressionAttributeValues=values,
    )
    for page in pages:
        for item in page["Items"]:
            if item["bucket"]["S"] == bucket and item["key"]["S"].startswith(prefix):
                yield item["key"]["S"]


def redrive(s3: Any, bucket: str, key: str, now: datetime, *, dry_run: bool) -> Redriven:
    """Copy the object onto itself, which S3 notifies as a new ObjectCreated:Copy event."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return Redriven(key, "deleted since: nothing to classify")
        raise
    if dry_run:
        return Redriven(key, "would copy")
    try:
        s3.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": bucket, "Key": key},
            CopySourceIfMatch=head["ETag"],  # the content we looked at, not an upload since
            MetadataDirective="REPLACE",  # S3 copies an object onto itself only when something changes
            Metadata={**head.get("Metadata", {}), "redriven-at": now.strftime("%Y-%m-%dT%H:%M:%SZ")},
            ContentType=head.get("ContentType", "binary/octet-stream"),
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("PreconditionFailed", "412"):
            return Redriven(key, "overwritten since: its own event classifies it")
        raise
    return Redriven(key, "copied")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=os.environ.get("PREDICTIONS_TABLE"), help="the predictions table")
    parser.add_argument("--bucket", default=os.environ.get("IMAGES_BUCKET"), help="the images bucket")
    parser.add_argument("--stack", help="read table and bucket from this CloudFormation stack's outputs")
    parser.add_argument("--prefix", default="incoming/", help="only keys under this prefix")
    parser.add_argument("--since", default="", help="only images recorded FAILED at or after this UTC time (ISO 8601)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be tried again, copy nothing")
    return parser


def main(args: argparse.Namespace, clients: dict[str, Any] | None = None) -> int:
    import boto3

    clients = clients or {name: boto3.client(name) for name in ("dynamodb", "s3", "cloudformation")}
    if args.stack and not (args.table and args.bucket):
        outputs = stack_outputs(clients["cloudformation"], args.stack)
        args.table = args.table or outputs["PredictionsTableName"]
        args.bucket = args.bucket or outputs["ImagesBucketName"]
    if not (args.table and args.bucket):
        print("no table or bucket: give --table and --bucket, set them in the environment, or --stack", file=sys.stderr)
        return 2
    predictions = Predictions(clients["dynamodb"], args.table)
    now = datetime.now(UTC)
    results = [
        redrive(clients["s3"], args.bucket, key, now, dry_run=args.dry_run)
        for key in failed_images(predictions, args.bucket, args.prefix, args.since)
    ]
    for result in results:
        print(f"{result.outcome:<12} s3://{args.bucket}/{result.key}")
    copied = sum(r.outcome in ("copied", "would copy") for r in results)
    verb = "would be tried again" if args.dry_run else "tried again (new events sent)"
    print(f"{copied} of {len(results)} FAILED images {verb}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
