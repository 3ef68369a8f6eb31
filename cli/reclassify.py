"""Classify images again with the current model, inside AWS, by the flood path (batch transform).

    make reclassify ARGS="--stack dogbreed --model-version sha256:3f2a9c0e1b7d4a65 --dry-run"
    make reclassify ARGS="--stack dogbreed --model-version sha256:3f2a9c0e1b7d4a65"
    make reclassify ARGS="--stack dogbreed --prefix incoming/2026/ --uploaded-since 2026-11-01"
    make reclassify ARGS="--stack dogbreed --inventory s3://inventory/dogbreed-images/daily/2026-12-05T01-00Z/manifest.json"
    make reclassify ARGS="--stack dogbreed --progress"          (what is left)
    make reclassify                                             (against `make stack`, its exported variables)

After a new model ships, earlier records keep the old model's answer. This selects the CLASSIFIED
images under --prefix (answered by --model-version, uploaded in [--uploaded-since, --uploaded-until),
if given), and those an earlier request left waiting, and sends one request per image to the stack's
reclassify queue: about 200 bytes (bucket, key, ETag, size, upload time), ten a SendMessageBatch. No
image passes through the machine that runs this. The ingest function takes the requests from there,
under its own role: it records each image waiting ("to classify again" in the lifecycle table),
checks it, writes it into a shard and queues it for the job builder, whose transform jobs run the
current model; the collector records each answer with its `model_version`.

The selection is a Scan of the table (it reads every item once; only the five attributes a request
needs come back), or, with --inventory, an S3 Inventory report of the images bucket (CSV, with the
optional fields Size, LastModifiedDate and ETag): its manifest.json and its lists, which name keys,
never image bytes; every object under --prefix (and in the time range) is requested, and the ingest
function takes only those classified at that content (--model-version needs the table: not with it).

Stopped and run again, it is safe: an image requested twice is queued twice and the job builder keeps
one; an image classified again meanwhile no longer matches --model-version.

The table, bucket and queue come from --table/--bucket/--queue-url, else PREDICTIONS_TABLE,
IMAGES_BUCKET and RECLASSIFY_QUEUE_URL (which `make stack` prints), else --stack's outputs.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any
from urllib.parse import unquote_plus

from cli.query import stack_outputs
from infra.predictions import record
from pipeline.adapters.dynamodb import record_ref, timestamp
from pipeline.logic.notifications import reclassify_request
from pipeline.logic.outcomes import ImageRef
from pipeline.logic.reclassify import REASON
from pipeline.logic.s3uri import S3Uri

SEND_BATCH = 10  # SQS takes at most 10 messages a SendMessageBatch
PROGRESS_EVERY = 10_000  # requests between two progress lines
REQUEST_ATTRIBUTES = ("bucket", "key", "etag", "size", "uploaded_at")  # what a request needs of a record


@dataclass(frozen=True)
class Selection:
    bucket: str
    prefix: str = "incoming/"
    model_version: str | None = None
    uploaded_since: datetime | None = None
    uploaded_until: datetime | None = None

    def scan_filter(self) -> tuple[str, dict[str, Any]]:
        """The Scan's FilterExpression and values: classified images that match, or left waiting."""
        classified = ["#status = :classified"]
        values: dict[str, Any] = {
            ":id": {"S": f"{self.bucket}/{self.prefix}"},
            ":classified": {"S": "CLASSIFIED"},
            ":pending": {"S": "PENDING"},
            ":reason": {"S": REASON},
        }
        if self.model_version:
            classified.append("model_version = :version")
            values[":version"] = {"S": self.model_version}
        if self.uploaded_since:
            classified.append("uploaded_at >= :since")
            values[":since"] = {"S": timestamp(self.uploaded_since)}
        if self.uploaded_until:
            classified.append("uploaded_at < :until")
            values[":until"] = {"S": timestamp(self.uploaded_until)}
        left_waiting = "#status = :pending AND reason = :reason"
        return f"begins_with(image_id, :id) AND (({' AND '.join(classified)}) OR ({left_waiting}))", values


def to_reclassify(dynamodb: Any, table: str, selection: Selection) -> Iterator[ImageRef]:
    """The selected images, as their records name them."""
    expression, values = selection.scan_filter()
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression=expression,
        ExpressionAttributeNames={"#status": "status", **{f"#{name}": name for name in REQUEST_ATTRIBUTES}},
        ExpressionAttributeValues=values,
        ProjectionExpression=", ".join(f"#{name}" for name in REQUEST_ATTRIBUTES),  # some are reserved words
    )
    for page in pages:
        for raw in page["Items"]:
            yield record_ref(record(raw))


INVENTORY_FIELDS = ("Bucket", "Key", "Size", "LastModifiedDate", "ETag")  # what a request needs of a row


class InventoryRefused(ValueError):
    """An inventory report this command cannot read; the message says what to change."""


def from_inventory(s3: Any, manifest: S3Uri, selection: Selection) -> Iterator[ImageRef]:
    """The images an S3 Inventory report lists in the selection's bucket, under its prefix and in its
    time range (S3 User Guide, "Amazon S3 Inventory": manifest.json names the CSV lists and their
    columns; a CSV list's keys are URL-encoded). Delete markers and noncurrent versions are left out."""
    doc = json.loads(s3.get_object(Bucket=manifest.bucket, Key=manifest.key)["Body"].read())
    if doc.get("fileFormat") != "CSV":
        raise InventoryRefused(f"{manifest} is a {doc.get('fileFormat')} inventory: give a CSV one")
    columns = [name.strip() for name in str(doc.get("fileSchema", "")).split(",")]
    missing = [name for name in INVENTORY_FIELDS if name not in columns]
    if missing:
        raise InventoryRefused(f"{manifest} lacks {', '.join(missing)}: add them to the inventory's fields")
    if selection.model_version:
        raise InventoryRefused("an inventory knows no model version: select by --model-version without it")
    return _listed(s3, manifest.bucket, [str(f["key"]) for f in doc["files"]], columns, selection)


def _listed(s3: Any, bucket: str, lists: list[str], columns: list[str], selection: Selection) -> Iterator[ImageRef]:
    for list_key in lists:
        body = gzip.decompress(s3.get_object(Bucket=bucket, Key=list_key)["Body"].read())
        for values in csv.reader(io.StringIO(body.decode())):
            row = dict(zip(columns, values, strict=True))
            key = unquote_plus(row["Key"])
            if row.get("IsDeleteMarker") == "true" or row.get("IsLatest") == "false":
                continue
            if row["Bucket"] != selection.bucket or not key.startswith(selection.prefix):
                continue
            uploaded_at = datetime.fromisoformat(row["LastModifiedDate"].replace("Z", "+00:00"))
            if (selection.uploaded_since and uploaded_at < selection.uploaded_since) or (
                selection.uploaded_until and uploaded_at >= selection.uploaded_until
            ):
                continue
            yield ImageRef(row["Bucket"], key, row["ETag"].strip('"'), int(row["Size"]), uploaded_at)


def send_requests(sqs: Any, queue_url: str, bodies: Iterable[str], out: Any = sys.stdout) -> tuple[int, int]:
    """Each request a message, ten a call; what SQS refuses is sent again once. (sent, refused)"""
    sent = refused = 0
    iterator = iter(bodies)
    while batch := list(islice(iterator, SEND_BATCH)):
        entries = [{"Id": str(n), "MessageBody": body} for n, body in enumerate(batch)]
        for _ in range(2):
            failed = {f["Id"] for f in sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])}
            sent += len(entries) - len(failed)
            entries = [entry for entry in entries if entry["Id"] in failed]
            if not entries:
                break
        refused += len(entries)
        if sent and sent % PROGRESS_EVERY < len(batch):
            print(f"  {sent:,} requests sent", file=out, flush=True)
    return sent, refused


def progress(sqs: Any, queue_url: str, dynamodb: Any, table: str, bucket: str, prefix: str) -> str:
    """What is left: requests the ingest function has not taken yet, and images recorded waiting."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    waiting = 0
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=table,
        Select="COUNT",
        FilterExpression="begins_with(image_id, :id) AND #status = :pending AND reason = :reason",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={
            ":id": {"S": f"{bucket}/{prefix}"},
            ":pending": {"S": "PENDING"},
            ":reason": {"S": REASON},
        },
    ):
        waiting += page["Count"]
    return (
        f"{int(attributes['ApproximateNumberOfMessages']):,} requests queued, "
        f"{int(attributes['ApproximateNumberOfMessagesNotVisible']):,} being taken; "
        f"{waiting:,} images under s3://{bucket}/{prefix} waiting for a transform job"
    )


def moment(text: str) -> datetime:
    """An ISO 8601 date or time; without a zone, UTC."""
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", help="read table, bucket and queue from this CloudFormation stack's outputs")
    parser.add_argument("--table", default=os.environ.get("PREDICTIONS_TABLE"), help="the predictions table")
    parser.add_argument("--bucket", default=os.environ.get("IMAGES_BUCKET"), help="the images bucket")
    parser.add_argument("--queue-url", default=os.environ.get("RECLASSIFY_QUEUE_URL"), help="the reclassify queue")
    parser.add_argument("--prefix", default="incoming/", help="only keys under this prefix")
    parser.add_argument("--model-version", help="only images answered by this model_version (sha256:...)")
    parser.add_argument("--uploaded-since", type=moment, help="only images uploaded at or after (ISO 8601, UTC)")
    parser.add_argument("--uploaded-until", type=moment, help="only images uploaded before (ISO 8601, UTC)")
    parser.add_argument("--inventory", type=S3Uri.parse, help="select from this S3 Inventory manifest.json (s3://...)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="count what would be classified again, send nothing")
    what.add_argument("--progress", action="store_true", help="what is left of the requests sent, send nothing")
    return parser


def main(args: argparse.Namespace, clients: dict[str, Any] | None = None) -> int:
    import boto3

    clients = clients or {name: boto3.client(name) for name in ("dynamodb", "sqs", "s3", "cloudformation")}
    table, bucket, queue_url = args.table, args.bucket, args.queue_url
    if args.stack:
        outputs = stack_outputs(clients["cloudformation"], args.stack)
        table, bucket = table or outputs["PredictionsTableName"], bucket or outputs["ImagesBucketName"]
        queue_url = queue_url or outputs["ReclassifyQueueUrl"]
    if not (table and bucket and queue_url):
        print("give --stack, or --table, --bucket and --queue-url (make stack prints their variables)", file=sys.stderr)
        return 2
    if args.progress:
        print(progress(clients["sqs"], queue_url, clients["dynamodb"], table, bucket, args.prefix))
        return 0
    selection = Selection(bucket, args.prefix, args.model_version, args.uploaded_since, args.uploaded_until)
    if args.inventory:
        try:
            images = from_inventory(clients["s3"], args.inventory, selection)
        except InventoryRefused as exc:
            print(exc, file=sys.stderr)
            return 2
    else:
        images = to_reclassify(clients["dynamodb"], table, selection)
    if args.dry_run:
        count = sum(1 for _ in images)
        print(f"{count:,} images under s3://{bucket}/{args.prefix} would be classified again")
        return 0
    sent, refused = send_requests(clients["sqs"], queue_url, map(reclassify_request, images))
    print(
        f"{sent:,} images under s3://{bucket}/{args.prefix} sent to be classified again; "
        "follow them with --progress (the ingest function takes them two batches at a time)"
    )
    if refused:
        print(f"{refused:,} requests refused by SQS twice: run the same command again to send them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
