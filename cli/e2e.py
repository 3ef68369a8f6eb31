"""`make e2e`: the acceptance run for any stack. Upload a fixed corpus (photos, a 25 MB phone photo,
files that are not images, keys with spaces and unicode), wait for every outcome, print each one
against what was expected, delete what it uploaded. Run it after every deploy.

    make e2e STACK=dogbreed                 # a deployed stack: bucket and table from its outputs
    make e2e                                # the local stack, started for the run (CI runs this)
    python -m cli.e2e --bucket B --table T  # any stack, e.g. the one `make stack` keeps up

Exit 0 when every upload got its expected outcome within --deadline, else 1. The uploads go under
incoming/e2e-<time>/, so a run never touches anything else; their records stay in the table (they
say what this run saw), the objects are deleted."""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.predictions import Predictions

EVENT_IMAGES = Path(__file__).resolve().parents[1] / "events" / "images"


@dataclass(frozen=True)
class Case:
    name: str  # the key under the run's prefix: odd on purpose
    data: bytes
    status: str  # the outcome expected
    error_code: str | None = None  # for a REJECTED one


def phone_photo(width: int = 8000, height: int = 6000) -> bytes:
    """A 48-megapixel photo of about 25 MB, as a phone saves one: noise, JPEG quality 95."""
    from PIL import Image

    noise = Image.effect_noise((width // 3, height // 3), 64).convert("RGB").resize((width, height))
    out = io.BytesIO()
    noise.save(out, format="JPEG", quality=95)
    return out.getvalue()


def corpus() -> list[Case]:
    dog, terrier, puppy = (EVENT_IMAGES / name for name in ("dog.jpg", "terrier.jpg", "puppy.png"))
    bomb = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (100_000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    return [
        Case("dog.jpg", dog.read_bytes(), "CLASSIFIED"),
        Case("my terrier (1).jpg", terrier.read_bytes(), "CLASSIFIED"),
        Case("café/püppy + friends.png", puppy.read_bytes(), "CLASSIFIED"),
        Case("phone/IMG_0001.JPG", phone_photo(), "CLASSIFIED"),  # over both modes' request limits: downsized
        Case("notes.jpg", (EVENT_IMAGES / "notes.jpg").read_bytes(), "REJECTED", "NotAnImage"),
        Case("empty.jpg", b"", "REJECTED", "EmptyObject"),
        Case("bomb.png", bomb, "REJECTED", "DecompressionBomb"),
        Case("truncated.jpg", dog.read_bytes()[:600], "REJECTED", None),  # its header reads; its pixels do not
    ]


@dataclass(frozen=True)
class Seen:
    case: Case
    record: Mapping[str, Any] | None

    @property
    def ok(self) -> bool:
        if self.record is None or self.record["status"] != self.case.status:
            return False
        return self.case.error_code is None or self.record.get("error_code") == self.case.error_code


def run(
    s3: Any,
    predictions: Predictions,
    bucket: str,
    *,
    deadline_s: float,
    prefix: str | None = None,
    say: Callable[[str], None] = print,
) -> list[Seen]:
    """Upload the corpus, wait until each has a final outcome for the content uploaded or the
    deadline passes, delete the uploads; what each got."""
    prefix = prefix or f"incoming/e2e-{time.strftime('%Y%m%dT%H%M%S')}/"
    cases = corpus()
    etags = {}
    for case in cases:
        etags[prefix + case.name] = s3.put_object(Bucket=bucket, Key=prefix + case.name, Body=case.data)["ETag"].strip(
            '"'
        )
    say(f"uploaded {len(cases)} files under s3://{bucket}/{prefix}; waiting up to {deadline_s:.0f} s")
    found: dict[str, Mapping[str, Any]] = {}
    ends = time.monotonic() + deadline_s
    try:
        while len(found) < len(cases) and time.monotonic() < ends:
            missing = [key for key in etags if key not in found]
            for key, item in predictions.images(bucket, missing).items():
                if item["etag"] == etags[key] and item["status"] != "PENDING":
                    found[key] = item
            time.sleep(2)
    finally:
        for key in etags:
            s3.delete_object(Bucket=bucket, Key=key)
    return [Seen(case, found.get(prefix + case.name)) for case in cases]


def report(seen: list[Seen]) -> str:
    lines = [f"{'':2}  {'upload':<28} {'expected':<30} {'got':<30} mode"]
    for item in seen:
        expected = " ".join(filter(None, (item.case.status, item.case.error_code)))
        record = item.record or {}
        got = " ".join(filter(None, (record.get("status", "no outcome"), record.get("error_code")))) or "no outcome"
        mark = "ok" if item.ok else "NO"
        lines.append(f"{mark:2}  {item.case.name:<28} {expected:<30} {got:<30} {record.get('mode', '')}")
    failed = sum(not item.ok for item in seen)
    lines.append(f"{len(seen) - failed} of {len(seen)} as expected")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", help="read bucket and table from this CloudFormation stack's outputs")
    parser.add_argument("--bucket", default=os.environ.get("IMAGES_BUCKET"))
    parser.add_argument("--table", default=os.environ.get("PREDICTIONS_TABLE"))
    parser.add_argument(
        "--deadline",
        type=float,
        default=1800,
        help="seconds to wait for every outcome (a batch transform job takes minutes to start on AWS)",
    )
    return parser


def main(args: argparse.Namespace) -> int:
    import boto3

    from cli.query import stack_outputs

    if args.stack:
        outputs = stack_outputs(boto3.client("cloudformation"), args.stack)
        args.bucket, args.table = outputs["ImagesBucketName"], outputs["PredictionsTableName"]
    if not (args.bucket and args.table):
        print(
            "no stack: give --stack, or --bucket and --table (or IMAGES_BUCKET and PREDICTIONS_TABLE)", file=sys.stderr
        )
        return 2
    seen = run(
        boto3.client("s3"), Predictions(boto3.client("dynamodb"), args.table), args.bucket, deadline_s=args.deadline
    )
    print(report(seen))
    return 0 if all(item.ok for item in seen) else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
