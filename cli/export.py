"""Export the images people labelled as a training set, in the layout model/training reads.

    python -m cli.export --to data/reviewed                  # a folder
    python -m cli.export --to s3://my-bucket/reviewed/       # or S3, for launch.py train --extra-data
    python model/training/train.py ... --extra-train data/reviewed  # launch.py train --extra-data s3://...

Writes `<to>/train/<NNN.Breed_name>/<file>` (the dogImages layout, each image under the breed a person
gave it) and `<to>/labels.jsonl` (one line per exported image: its record, label, who and when).
train.py --extra-train adds these images to the training split only, never to validation or test.

Each image is read at the content its label is for (GetObject with If-Match on the labelled ETag): an
object uploaded again or deleted since is left out and reported, never exported with an old label.

The table and bucket come from --table/--bucket, PREDICTIONS_TABLE/IMAGES_BUCKET, or --stack's outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from botocore.exceptions import ClientError

from cli.query import stack_outputs
from infra.predictions import plain
from pipeline.adapters.review import Breed, ReviewStore


@dataclass(frozen=True)
class Exported:
    key: str
    path: str | None  # where the image went, relative to --to; None when left out
    why_not: str = ""


def file_name(item: dict[str, Any]) -> str:
    """The image's file in its breed folder: the key's name, after a digest of the key and ETag, so two
    keys with one name never collide and a re-export writes the same file."""
    digest = hashlib.sha256(f"{item['bucket']}/{item['key']}@{item['etag']}".encode()).hexdigest()[:12]
    name = PurePosixPath(item["key"]).name or "image"
    return f"{digest}_{name}"


def export(labels: Iterable[dict[str, Any]], s3: Any, write: Any) -> list[Exported]:
    """Copy each labelled image, at its labelled content, to train/<breed folder>/ through `write(path,
    data)`; then labels.jsonl."""
    done: list[Exported] = []
    lines: list[str] = []
    for item in labels:
        try:
            body = s3.get_object(Bucket=item["bucket"], Key=item["key"], IfMatch=f'"{item["etag"]}"')["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412"):
                done.append(Exported(item["key"], None, "uploaded again since it was labelled"))
                continue
            if code in ("NoSuchKey", "404"):
                done.append(Exported(item["key"], None, "deleted since it was labelled"))
                continue
            raise
        path = f"train/{Breed(item['given_label'], item['given_breed']).folder}/{file_name(item)}"
        write(path, body)
        lines.append(json.dumps({"file": path, **plain(item)}, ensure_ascii=False))
        done.append(Exported(item["key"], path))
    write("labels.jsonl", ("\n".join(lines) + "\n").encode() if lines else b"")
    return done


def writer(to: str, s3: Any) -> Any:
    """write(path, data) into a folder, or under an s3:// prefix."""
    if to.startswith("s3://"):
        bucket, _, prefix = to.removeprefix("s3://").partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        return lambda path, data: s3.put_object(Bucket=bucket, Key=prefix + path, Body=data)
    root = Path(to)

    def write(path: str, data: bytes) -> None:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    return write


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", required=True, help="a folder, or an s3:// prefix")
    parser.add_argument("--table", default=os.environ.get("PREDICTIONS_TABLE"), help="the predictions table")
    parser.add_argument("--stack", help="read the table from this CloudFormation stack's outputs")
    return parser


def main(args: argparse.Namespace, dynamodb: Any = None, s3: Any = None) -> int:
    import boto3

    if args.stack and not args.table:
        args.table = stack_outputs(boto3.client("cloudformation"), args.stack)["PredictionsTableName"]
    if not args.table:
        print("no table: give --table, set PREDICTIONS_TABLE, or name the stack with --stack", file=sys.stderr)
        return 2
    s3 = s3 or boto3.client("s3")
    labels = ReviewStore(dynamodb or boto3.client("dynamodb"), args.table).labelled()
    done = export(labels, s3, writer(args.to, s3))
    for item in done:
        if item.path is None:
            print(f"left out {item.key}: {item.why_not}", file=sys.stderr)
    exported = sum(item.path is not None for item in done)
    print(f"exported {exported} labelled image(s) to {args.to} (train/<NNN.Breed_name>/, labels.jsonl)")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
