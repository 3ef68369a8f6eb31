"""Export the predictions table to S3 for analytics, and point the Athena (Glue) table at the export.

    make export-table ARGS="--stack dogbreed"            # export, wait, point the Glue table at it
    make export-table ARGS="--stack dogbreed --no-wait"  # start it; a later run points the table

DynamoDB's export to S3 (ExportTableToPointInTime, the table has point-in-time recovery) reads no
capacity and writes, under s3://<images bucket>/analytics/exports/AWSDynamoDB/<ExportId>/, manifests
and data/*.json.gz: one line per item, {"Item": {<attribute>: {"S"|"N": ...}}}. With the stack's
optional AnalyticsDatabase parameter, the template makes a Glue database and its table `predictions`
over that format; this command points the table at the newest completed export's data/ folder, so
Athena reads one whole snapshot (docs/operations.md, "Analytics", has three example queries).

The table and bucket come from --table/--bucket, PREDICTIONS_TABLE/IMAGES_BUCKET, or --stack's outputs;
the database from --database, ANALYTICS_DATABASE, or --stack's AnalyticsDatabaseName (none: export only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from cli.query import stack_outputs
from pipeline.logic.s3uri import S3Uri

EXPORT_PREFIX = "analytics/exports/"
GLUE_TABLE = "predictions"  # template.yaml: PredictionsExportTable
# What UpdateTable's TableInput takes of GetTable's answer (the rest is read-only).
TABLE_INPUT_KEYS = ("Name", "Description", "Owner", "Retention", "StorageDescriptor", "PartitionKeys",
                    "TableType", "Parameters")  # fmt: skip


class ExportFailed(Exception):
    """The export did not complete; the message says why."""


def start_export(dynamodb: Any, table: str, bucket: str) -> str:
    table_arn = dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    description = dynamodb.export_table_to_point_in_time(
        TableArn=table_arn, S3Bucket=bucket, S3Prefix=EXPORT_PREFIX, ExportFormat="DYNAMODB_JSON"
    )["ExportDescription"]
    return str(description["ExportArn"])


def wait(dynamodb: Any, export_arn: str, timeout_s: float, out: Any, poll_s: float = 10.0) -> dict[str, Any]:
    """The export's description once it ended; raises ExportFailed if it failed or runs past the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        description = dynamodb.describe_export(ExportArn=export_arn)["ExportDescription"]
        status = description["ExportStatus"]
        if status == "COMPLETED":
            return dict(description)
        if status == "FAILED":
            raise ExportFailed(f"{description.get('FailureCode')}: {description.get('FailureMessage')}")
        if time.monotonic() > deadline:
            raise ExportFailed(f"still {status} after {timeout_s:.0f} s: run the command again to point the table")
        print(f"  export {status.lower()} ...", file=out, flush=True)
        time.sleep(poll_s)


def data_folder(description: dict[str, Any]) -> S3Uri:
    """Where an export's data files are: <prefix>AWSDynamoDB/<ExportId>/data/ (its ARN ends in /export/<ExportId>)."""
    export_id = str(description["ExportArn"]).rsplit("/export/", 1)[1]
    prefix = str(description.get("S3Prefix") or "").rstrip("/")
    return S3Uri(description["S3Bucket"], f"{prefix}/AWSDynamoDB/{export_id}/data/".lstrip("/"))


def newest_completed(dynamodb: Any, table_arn: str) -> dict[str, Any] | None:
    """The newest completed export of the table under EXPORT_PREFIX, or None."""
    found = []
    request: dict[str, Any] = {"TableArn": table_arn}
    while True:
        page = dynamodb.list_exports(**request)
        for summary in page.get("ExportSummaries", []):
            if summary.get("ExportStatus") == "COMPLETED":
                described = dynamodb.describe_export(ExportArn=summary["ExportArn"])["ExportDescription"]
                if str(described.get("S3Prefix", "")).startswith(EXPORT_PREFIX.rstrip("/")):
                    found.append(described)
        if not page.get("NextToken"):
            break
        request["NextToken"] = page["NextToken"]
    return max(found, key=lambda d: d.get("ExportTime") or d.get("StartTime"), default=None)


def point_table(glue: Any, database: str, location: S3Uri) -> None:
    """The Glue table `predictions` of the database reads the export at `location` (UpdateTable)."""
    table = glue.get_table(DatabaseName=database, Name=GLUE_TABLE)["Table"]
    table_input = {key: table[key] for key in TABLE_INPUT_KEYS if key in table}
    table_input["StorageDescriptor"] = {**table_input["StorageDescriptor"], "Location": str(location)}
    glue.update_table(DatabaseName=database, TableInput=table_input)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", help="read table, bucket and database from this CloudFormation stack's outputs")
    parser.add_argument("--table", default=os.environ.get("PREDICTIONS_TABLE"), help="the predictions table")
    parser.add_argument("--bucket", default=os.environ.get("IMAGES_BUCKET"), help="the images bucket")
    parser.add_argument("--database", default=os.environ.get("ANALYTICS_DATABASE"), help="the Glue database")
    parser.add_argument("--no-wait", action="store_true", help="start the export and return")
    parser.add_argument("--timeout-min", type=float, default=120, help="longest wait for the export")
    return parser


def main(args: argparse.Namespace, clients: dict[str, Any] | None = None, out: Any = sys.stdout) -> int:
    import boto3

    clients = clients or {name: boto3.client(name) for name in ("dynamodb", "glue", "cloudformation")}
    table, bucket, database = args.table, args.bucket, args.database
    if args.stack:
        outputs = stack_outputs(clients["cloudformation"], args.stack)
        table, bucket = table or outputs["PredictionsTableName"], bucket or outputs["ImagesBucketName"]
        database = database or outputs.get("AnalyticsDatabaseName")
    if not (table and bucket):
        print("give --stack, or --table and --bucket (make stack prints their variables)", file=sys.stderr)
        return 2
    dynamodb = clients["dynamodb"]
    export_arn = start_export(dynamodb, table, bucket)
    print(f"export {export_arn} started, to s3://{bucket}/{EXPORT_PREFIX}", file=out, flush=True)
    if args.no_wait:
        return 0
    try:
        description = wait(dynamodb, export_arn, args.timeout_min * 60, out)
    except ExportFailed as exc:
        print(f"export {export_arn} failed: {exc}", file=sys.stderr)
        return 1
    newest = newest_completed(dynamodb, description["TableArn"]) or description
    location = data_folder(newest)
    print(f"export completed: {description.get('ItemCount', '?')} items in {data_folder(description)}", file=out)
    if database:
        point_table(clients["glue"], database, location)
        print(f"Athena table {database}.{GLUE_TABLE} now reads {location}", file=out)
    else:
        print("no AnalyticsDatabase: deploy with one for the Athena table (docs/operations.md, Analytics)", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
