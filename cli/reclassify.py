"""Classify images again with the current model, by the flood path (batch transform).

    make reclassify ARGS="--stack dogbreed --prefix incoming/2026/"
    make reclassify ARGS="--stack dogbreed --model-version sha256:3f2a9c0e1b7d4a65 --dry-run"
    make reclassify ARGS="--local"                       (against `make stack`)

After a new model ships, earlier records keep the old model's answer. This selects the CLASSIFIED
images under --prefix (only those answered by --model-version, if given), records each waiting again
(the lifecycle table's "to classify again"), and runs the ingest function's own flood path over them
with the ingest function's own settings: each image is checked, written into a shard and queued for
the job builder, whose transform jobs run the current model; the collector records each answer with
its `model_version`. Images a stopped run left waiting (PENDING, with the reason below) are selected
again, so a run is safe to repeat. The selection is a Scan of the table: it reads every item once.

The settings are the deployed ingest function's environment (--stack, read with
lambda:GetFunctionConfiguration), or the local stack's (--local: its functions answer the same call, and
the bucket is IMAGES_BUCKET, which `make stack` prints).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from cli.query import stack_outputs
from infra.predictions import record
from pipeline.adapters.dynamodb import DynamoPredictions
from pipeline.adapters.s3 import S3Objects
from pipeline.adapters.sagemaker import ServerlessEndpoint
from pipeline.adapters.sqs import SqsJobQueue
from pipeline.config import IngestSettings
from pipeline.logic.ingest import Ingest
from pipeline.logic.outcomes import ImageRef
from pipeline.logic.reclassify import REASON, Reclassify, flood_path

CLIENTS = ("dynamodb", "s3", "sqs", "sagemaker-runtime", "cloudformation", "lambda")


def ingest_environment(args: argparse.Namespace, clients: dict[str, Any]) -> dict[str, str]:
    """The ingest function's environment, as lambda:GetFunctionConfiguration gives it: the deployed
    stack's function, or the local stack's (which names its functions by their logical ids)."""
    name = "IngestFunction"
    if not args.local:
        resource = clients["cloudformation"].describe_stack_resource(StackName=args.stack, LogicalResourceId=name)
        name = resource["StackResourceDetail"]["PhysicalResourceId"]
    return dict(clients["lambda"].get_function_configuration(FunctionName=name)["Environment"]["Variables"])


def to_reclassify(dynamodb: Any, table: str, bucket: str, prefix: str, model_version: str | None) -> Iterator[ImageRef]:
    """The CLASSIFIED images of the bucket under the prefix (answered by model_version, if given), and
    those an earlier run left waiting."""
    classified = "#status = :classified" + (" AND model_version = :version" if model_version else "")
    left_waiting = "#status = :pending AND reason = :reason"
    values = {
        ":id": {"S": f"{bucket}/{prefix}"},
        ":classified": {"S": "CLASSIFIED"},
        ":pending": {"S": "PENDING"},
        ":reason": {"S": REASON},
        **({":version": {"S": model_version}} if model_version else {}),
    }
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression=f"begins_with(image_id, :id) AND (({classified}) OR ({left_waiting}))",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues=values,
    )
    for page in pages:
        for raw in page["Items"]:
            item = record(raw)
            uploaded_at = datetime.fromisoformat(str(item["uploaded_at"]).replace("Z", "+00:00"))
            yield ImageRef(item["bucket"], item["key"], item["etag"], int(item["size"]), uploaded_at)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="the deployed stack (its outputs and its ingest function's settings)")
    where.add_argument("--local", action="store_true", help="the local stack (make stack and its exported variables)")
    parser.add_argument("--bucket", default=os.environ.get("IMAGES_BUCKET"), help="with --local: the images bucket")
    parser.add_argument("--prefix", default="incoming/", help="only keys under this prefix")
    parser.add_argument("--model-version", help="only images answered by this model_version (sha256:...)")
    parser.add_argument("--dry-run", action="store_true", help="count what would be classified again, change nothing")
    return parser


def main(args: argparse.Namespace, clients: dict[str, Any] | None = None) -> int:
    import boto3

    clients = clients or {name: boto3.client(name) for name in CLIENTS}
    settings = IngestSettings.from_env(ingest_environment(args, clients))
    if args.local:
        if not args.bucket:
            print("no bucket: give --bucket or set IMAGES_BUCKET (make stack prints it)", file=sys.stderr)
            return 2
        bucket = args.bucket
    else:
        bucket = stack_outputs(clients["cloudformation"], args.stack)["ImagesBucketName"]
    images = to_reclassify(clients["dynamodb"], settings.table_name, bucket, args.prefix, args.model_version)
    if args.dry_run:
        count = sum(1 for _ in images)
        print(f"{count} images under s3://{bucket}/{args.prefix} would be classified again")
        return 0
    store = DynamoPredictions(clients["dynamodb"], settings.table_name)
    ingest = Ingest(
        rules=flood_path(settings.rules),
        objects=S3Objects(clients["s3"]),
        store=store,
        endpoint=ServerlessEndpoint(clients["sagemaker-runtime"], settings.endpoint_name),
        queue=SqsJobQueue(clients["sqs"], settings.job_queue_url),
    )
    result = Reclassify(store, ingest).run(images)
    print(
        f"{result.selected} selected under s3://{bucket}/{args.prefix}: {result.queued} queued for transform jobs, "
        f"{len(result.outcomes)} recorded now (deleted or unreadable since), {result.skipped} skipped "
        f"(overwritten or in a job since), {result.left_waiting} left waiting (run again to queue them)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
