"""Query the predictions table: one image, one breed (newest first), everything rejected or failed, or
the review queue (answers under the confidence threshold, least confident first).

The same command works against AWS and the local stack: boto3 finds the local stack through the
AWS_ENDPOINT_URL that `make stack` prints, and AWS through your usual credentials.

    python -m cli.query image 'incoming/my dog.jpg'
    python -m cli.query breed Labrador_retriever --limit 20
    python -m cli.query problems --status REJECTED --output json
    python -m cli.query review --limit 20             # then: python -m cli.label KEY --breed ... | --accept

The table and bucket come from --table/--bucket, else PREDICTIONS_TABLE/IMAGES_BUCKET, else the
outputs of the CloudFormation stack named by --stack."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from infra.predictions import Predictions, plain
from pipeline.adapters.review import ReviewStore

PROBLEM_STATUSES = ("REJECTED", "FAILED")
COLUMNS = (
    ("image", 36),
    ("breed", 26),
    ("conf.", 6),
    ("status", 10),
    ("mode", 10),
    ("model", 26),
    ("updated", 20),
    ("reason", 0),
)


def model_cell(item: dict[str, Any]) -> str:
    """The network that answered: its precision and the first digits of its version (int8@3f2a9c0e)."""
    precision, version = str(item.get("model_precision", "")), str(item.get("model_version", ""))
    digits = version.partition(":")[2] or version
    return f"{precision}@{digits[:8]}" if precision and digits else precision or digits[:8]


REVIEW_COLUMNS = (("image", 36), ("breed", 26), ("conf.", 6), ("thr.", 5), ("etag", 12), ("top 5", 0))


def review_cell(item: dict[str, Any]) -> str:
    """Whether the answer waits for a person's review (under its threshold)."""
    return f"needs review (under {float(item['threshold']):.2f})" if "review" in item else ""


def human_cell(item: dict[str, Any]) -> str:
    """A person's answer for the record's content ("reviewed: <breed> by <who>"), or a label of older content."""
    human = item.get("human")
    if not human:
        return ""
    if human.get("etag") != item.get("etag"):
        return f"(label of earlier content: {human['given_breed']})"
    return f"reviewed: {human['given_breed']} by {str(human['labelled_by']).rsplit('/', 1)[-1]}"


def _fixed(columns: Sequence[tuple[str, int]], rows: Sequence[Sequence[str]]) -> str:
    def line(values: Sequence[str]) -> str:
        return "  ".join(
            (v if width == 0 else (v.rjust(width) if name in ("conf.", "thr.") else v[:width].ljust(width)))
            for (name, width), v in zip(columns, values, strict=True)
        ).rstrip()

    return "\n".join([line([name for name, _ in columns]), *(line(row) for row in rows)])


def _confidence(item: dict[str, Any], key: str = "confidence") -> str:
    return f"{float(item[key]):.2f}" if key in item else ""


def table(items: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table, one row per image."""
    rows = [
        [
            str(item.get("key", "")),
            str(item.get("breed", "")),
            _confidence(item),
            str(item.get("status", "")),
            str(item.get("mode", "")),
            model_cell(item),
            str(item.get("updated_at", ""))[:19].replace("T", " "),
            "; ".join(part for part in (review_cell(item), human_cell(item), str(item.get("reason", ""))[:70]) if part),
        ]
        for item in items
    ]
    return _fixed(COLUMNS, rows)


def review_table(items: Sequence[dict[str, Any]]) -> str:
    """The review queue: one row per image, with its top 5."""
    rows = [
        [
            str(item.get("key", "")),
            str(item.get("breed", "")),
            _confidence(item),
            _confidence(item, "threshold"),
            str(item.get("etag", ""))[:12],
            ", ".join(f"{c['label']}.{c['breed']} {float(c['probability']):.2f}" for c in item.get("top5", [])),
        ]
        for item in items
    ]
    return _fixed(REVIEW_COLUMNS, rows)


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    (description,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}


def stack_parameters(cloudformation: Any, stack: str) -> dict[str, str]:
    (description,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    return {p["ParameterKey"]: p["ParameterValue"] for p in description.get("Parameters", [])}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=os.environ.get("PREDICTIONS_TABLE"), help="the predictions table")
    parser.add_argument("--bucket", default=os.environ.get("IMAGES_BUCKET"), help="the images bucket")
    parser.add_argument("--stack", help="read table and bucket from this CloudFormation stack's outputs")
    parser.add_argument("--output", choices=["table", "json"], default="table")
    parser.add_argument("--limit", type=int, default=50, help="most images to list (breed, problems)")
    commands = parser.add_subparsers(dest="command", required=True)
    image = commands.add_parser("image", help="one image's outcome")
    image.add_argument("key", help="the object key (e.g. 'incoming/my dog.jpg'), or s3://bucket/key")
    breed = commands.add_parser("breed", help="images classified as a breed, newest first")
    breed.add_argument("breed", help="a class name as the model names it, e.g. Labrador_retriever")
    problems = commands.add_parser("problems", help="rejected and failed images, newest first")
    problems.add_argument("--status", choices=PROBLEM_STATUSES, help="only this status")
    commands.add_parser("review", help="answers under the confidence threshold, least confident first")
    return parser


def main(args: argparse.Namespace, dynamodb: Any = None, cloudformation: Any = None) -> int:
    import boto3

    if args.stack and not (args.table and args.bucket):
        outputs = stack_outputs(cloudformation or boto3.client("cloudformation"), args.stack)
        args.table = args.table or outputs["PredictionsTableName"]
        args.bucket = args.bucket or outputs["ImagesBucketName"]
    if not args.table:
        print("no table: give --table, set PREDICTIONS_TABLE, or name the stack with --stack", file=sys.stderr)
        return 2
    predictions = Predictions(dynamodb or boto3.client("dynamodb"), args.table)

    if args.command == "image":
        bucket, key = args.bucket, args.key
        if key.startswith("s3://"):
            bucket, _, key = key.removeprefix("s3://").partition("/")
        if not bucket:
            print("no bucket: give --bucket, set IMAGES_BUCKET, or use s3://bucket/key", file=sys.stderr)
            return 2
        item = predictions.image(bucket, key)
        if item is None:
            print(f"s3://{bucket}/{key} has no record (not uploaded under the input prefix, or not yet seen)",
                  file=sys.stderr)  # fmt: skip
            return 1
        labels = ReviewStore(predictions.dynamodb, args.table).labels([item["image_id"]])
        if item["image_id"] in labels:
            item["human"] = plain(labels[item["image_id"]])
        items = [item]
    elif args.command == "review":
        items = [plain(item) for item in ReviewStore(predictions.dynamodb, args.table).queue(args.limit)]
        print(json.dumps(items, indent=2, ensure_ascii=False) if args.output == "json" else review_table(items))
        if args.output == "table":
            print(f"{len(items)} to review; label one with: python -m cli.label KEY --breed NAME (or --accept)",
                  file=sys.stderr)  # fmt: skip
        return 0
    elif args.command == "breed":
        items = predictions.breed(args.breed, args.limit)
    else:
        items = predictions.problems([args.status] if args.status else PROBLEM_STATUSES, args.limit)

    print(json.dumps(items, indent=2, ensure_ascii=False) if args.output == "json" else table(items))
    if not items and args.command == "breed":
        print(f"no image is recorded as {args.breed!r}; breed names are the model's class names", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
