"""`make export-table` on the local stack: DynamoDB's export to S3 in AWS's layout, the Glue table the
template makes pointed at it, and every column docs/operations.md's three Athena queries read there, in
the rows they select."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from cli import export_table
from tests.conftest import EVENTS
from tests.stack.conftest import StartStack, outcomes, upload
from tests.stack.test_stack import photos

pytestmark = pytest.mark.slow  # starts the local stack

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def analytics_queries() -> list[str]:
    section = OPERATIONS.read_text().split("## Analytics", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def test_the_table_is_exported_in_dynamodbs_layout_and_the_queries_find_their_columns(
    start_stack: StartStack, dataset: Path
) -> None:
    # GIVEN a stack with an analytics database, and photos classified and a file rejected
    stack = start_stack(InferenceMode="serverless", AnalyticsDatabase="dogbreed")
    files = {key: data for key, (data, _) in list(photos(dataset).items())[:4]}
    files["incoming/notes.jpg"] = (EVENTS / "images" / "notes.jpg").read_bytes()
    found = outcomes(stack, upload(stack, files))
    assert {item["status"] for item in found.values()} == {"CLASSIFIED", "REJECTED"}
    # WHEN the table is exported
    environment = stack.user_environment()
    args = export_table.get_args_parser().parse_args(
        [
            "--table",
            environment["PREDICTIONS_TABLE"],
            "--bucket",
            environment["IMAGES_BUCKET"],
            "--database",
            environment["ANALYTICS_DATABASE"],
            "--timeout-min",
            "2",
        ]
    )
    clients = {name: stack.client(name, observer=True) for name in ("dynamodb", "glue")}
    out = io.StringIO()
    assert export_table.main(args, clients, out) == 0, out.getvalue()
    # THEN the export is where and as DynamoDB writes it: manifests, data files, an export ARN
    s3, bucket = stack.client("s3", observer=True), stack.names.bucket
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="analytics/exports/")["Contents"]]
    (folder,) = {re.sub(r"(AWSDynamoDB/[^/]+/).*", r"\1", key) for key in keys}
    export_id = folder.rstrip("/").rsplit("/", 1)[1]
    assert re.fullmatch(r"\d{14}-[0-9a-f]{8}", export_id), export_id
    summary = json.loads(s3.get_object(Bucket=bucket, Key=f"{folder}manifest-summary.json")["Body"].read())
    assert summary["exportArn"].endswith(f"/export/{export_id}") and summary["outputFormat"] == "DYNAMODB_JSON"
    manifest_files = s3.get_object(Bucket=bucket, Key=summary["manifestFilesS3Key"])["Body"].read()
    manifest = [json.loads(line) for line in manifest_files.splitlines()]
    assert f"{folder}_started" in keys and all(m["dataFileS3Key"].startswith(f"{folder}data/") for m in manifest)
    rows: list[dict[str, Any]] = []
    for entry in manifest:
        body = gzip.decompress(s3.get_object(Bucket=bucket, Key=entry["dataFileS3Key"])["Body"].read())
        rows += [json.loads(line)["Item"] for line in body.splitlines()]
    assert sum(m["itemCount"] for m in manifest) == len(rows) == summary["itemCount"]
    images = [row for row in rows if row.get("key", {}).get("S") in files]
    assert len(images) == len(files)
    # AND the Glue table reads this export's data folder
    table = clients["glue"].get_table(DatabaseName="dogbreed", Name=export_table.GLUE_TABLE)["Table"]
    assert table["StorageDescriptor"]["Location"] == f"s3://{bucket}/{folder}data/"
    (column,) = table["StorageDescriptor"]["Columns"]
    # AND every column each example query reads is in the table's schema and in the rows it selects
    queries = analytics_queries()
    assert len(queries) == 3
    for query in queries:
        used = set(re.findall(r"item\.(\w+)\.([sn])\b", query))
        statuses = re.findall(r"'([A-Z]+)'", query.split("WHERE", 1)[1].split("GROUP BY", 1)[0])
        selected = [row for row in images if row["status"]["S"] in statuses]
        assert statuses and selected, query
        for name, kind in used:
            assert f"{name}:struct<{kind}:string>" in column["Type"], (name, query)
            for row in selected:
                assert kind.upper() in row.get(name, {}), (name, row["key"], query)
