"""Give a person's answer for an image: its breed, or the model's accepted.

    python -m cli.label 'incoming/my dog.jpg' --accept
    python -m cli.label 'incoming/my dog.jpg' --breed French_bulldog        # a breed of the answer's top 5
    python -m cli.label 'incoming/my dog.jpg' --breed 069.French_bulldog    # any breed, as its dataset folder
    python -m cli.label 'incoming/my dog.jpg' --accept --etag 3f2a9c...     # only if it is still that content

The label is for the content the record answers (its ETag): it is refused if the object in S3 has been
uploaded again since (its new answer is not recorded yet), if --etag names other content, or if the
record changed while labelling. It records who (the caller's identity, from STS) and when, takes the
image out of the review queue, and is never overwritten by a later model answer for the same content
(make reclassify); `python -m cli.query image KEY` shows both answers, and cli.export exports it.

The table and bucket come from --table/--bucket, PREDICTIONS_TABLE/IMAGES_BUCKET, or --stack's outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from cli.query import stack_outputs
from infra.predictions import Predictions, plain
from pipeline.adapters.review import LabelRefused, ReviewStore, choose_breed


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("key", help="the object key (e.g. 'incoming/my dog.jpg'), or s3://bucket/key")
    answer = parser.add_mutually_exclusive_group(required=True)
    answer.add_argument("--breed", help="the breed: a name or label of the answer's top 5, or NNN.Breed_name")
    answer.add_argument("--accept", action="store_true", help="the model's answer is right")
    parser.add_argument("--etag", help="label only if the record is still of this content (from the review list)")
    parser.add_argument("--table", default=os.environ.get("PREDICTIONS_TABLE"), help="the predictions table")
    parser.add_argument("--bucket", default=os.environ.get("IMAGES_BUCKET"), help="the images bucket")
    parser.add_argument("--stack", help="read table and bucket from this CloudFormation stack's outputs")
    return parser


def current_etag(s3: Any, bucket: str, key: str) -> str | None:
    """The ETag of the object now in S3 (quotes removed, as the records keep it), or None if it is gone."""
    from botocore.exceptions import ClientError

    try:
        return str(s3.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def label(args: argparse.Namespace, dynamodb: Any, s3: Any, sts: Any, now: datetime) -> dict[str, Any]:
    """Record the label; raises LabelRefused with what to do."""
    bucket, key = args.bucket, args.key
    if key.startswith("s3://"):
        bucket, _, key = key.removeprefix("s3://").partition("/")
    if not bucket:
        raise LabelRefused("no bucket: give --bucket, set IMAGES_BUCKET, or use s3://bucket/key")
    record = Predictions(dynamodb, args.table).image(bucket, key)
    if record is None:
        raise LabelRefused(f"s3://{bucket}/{key} has no record: nothing to label")
    if args.etag and args.etag != record["etag"]:
        raise LabelRefused(
            f"{key} is now recorded for other content (ETag {record['etag']}, not {args.etag}): list it again"
        )
    now_in_s3 = current_etag(s3, bucket, key)
    if now_in_s3 != record["etag"]:
        where = "deleted" if now_in_s3 is None else f"uploaded again (ETag {now_in_s3})"
        raise LabelRefused(f"{key} was {where} since this answer: label its new answer once it is recorded")
    breed = choose_breed(record, None if args.accept else args.breed)
    who = str(sts.get_caller_identity()["Arn"])
    labelled: dict[str, Any] = plain(ReviewStore(dynamodb, args.table).label(record, breed, who, now))
    return labelled


def main(args: argparse.Namespace, dynamodb: Any = None, s3: Any = None, sts: Any = None) -> int:
    import boto3

    if args.stack and not (args.table and args.bucket):
        outputs = stack_outputs(boto3.client("cloudformation"), args.stack)
        args.table = args.table or outputs["PredictionsTableName"]
        args.bucket = args.bucket or outputs["ImagesBucketName"]
    if not args.table:
        print("no table: give --table, set PREDICTIONS_TABLE, or name the stack with --stack", file=sys.stderr)
        return 2
    try:
        item = label(
            args,
            dynamodb or boto3.client("dynamodb"),
            s3 or boto3.client("s3"),
            sts or boto3.client("sts"),
            datetime.now(UTC),
        )
    except LabelRefused as exc:
        print(f"not labelled: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(item, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
