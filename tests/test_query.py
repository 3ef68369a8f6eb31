"""cli.query: one image, a breed newest first, the problems; table or JSON; table and bucket from
flags, the environment, or a CloudFormation stack's outputs. Records are written by the real ingest
handler (and the real table adapter for a FAILED one) on moto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from cli.query import get_args_parser, main
from devstack.aws.lambda_runtime import LambdaContext
from pipeline.adapters.dynamodb import DynamoPredictions
from pipeline.handlers.ingest import lambda_handler
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from tests.conftest import REPO, Aws
from tests.fakes.sagemaker_runtime import FAKE_PRECISION, FAKE_VERSION, fake_prediction
from tests.pipeline import images

PHOTO = images.jpeg(color=(10, 200, 30))
BREED = fake_prediction(PHOTO).class_name


@pytest.fixture
def function_env() -> dict[str, str]:
    return {"INFERENCE_MODE": "serverless"}


@pytest.fixture
def records(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """rex.jpg, then (later) rex-again.jpg of the same breed; notes.jpg rejected; lost.jpg failed."""
    for key, data in (("incoming/rex.jpg", PHOTO), ("incoming/rex-again.jpg", PHOTO), ("incoming/notes.jpg", b"hi")):
        aws.upload(key, data)
        lambda_handler(aws.receive_event(), LambdaContext(function_name="ingest"))
    ref = ImageRef(aws.bucket, "incoming/lost.jpg", "0" * 32, 10, datetime.now(UTC))
    failed = Outcome(Status.FAILED, Mode.BATCH, reason="transform job x failed: AlgorithmError", error_code="JobFailed")
    DynamoPredictions(aws.clients["dynamodb"], aws.stack.names.table).write(
        [Change(ref, Event.GAVE_UP, failed)], datetime.now(UTC)
    )
    monkeypatch.setenv("PREDICTIONS_TABLE", aws.stack.names.table)
    monkeypatch.setenv("IMAGES_BUCKET", aws.bucket)
    return aws


def query(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(get_args_parser().parse_args(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_one_image_as_a_table(records: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = query(capsys, "image", "incoming/rex.jpg")
    header, row = out.splitlines()
    assert code == 0 and header.split()[:6] == ["image", "breed", "conf.", "status", "mode", "model"]
    assert row.split()[:2] == ["incoming/rex.jpg", BREED] and "CLASSIFIED" in row and "serverless" in row
    # the network that answered: its precision and the first digits of its version
    assert row.split()[5] == f"{FAKE_PRECISION}@{FAKE_VERSION.removeprefix('sha256:')[:8]}"


def test_one_image_as_json_by_s3_uri(records: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = query(capsys, "--output", "json", "image", f"s3://{records.bucket}/incoming/rex.jpg")
    (item,) = json.loads(out)
    assert code == 0 and item["breed"] == BREED and item["confidence"] == pytest.approx(0.6)
    assert item["top5"][0]["breed"] == BREED
    assert (item["model_precision"], item["model_version"]) == (FAKE_PRECISION, FAKE_VERSION)


def test_a_breed_newest_first(records: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = query(capsys, "--output", "json", "breed", BREED)
    assert code == 0 and [item["key"] for item in json.loads(out)] == ["incoming/rex-again.jpg", "incoming/rex.jpg"]
    _, out, _ = query(capsys, "--output", "json", "--limit", "1", "breed", BREED)
    assert [item["key"] for item in json.loads(out)] == ["incoming/rex-again.jpg"]


def test_an_unknown_breed_lists_nothing_and_says_why(records: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = query(capsys, "breed", "Unicorn")
    assert code == 0 and len(out.splitlines()) == 1 and "class names" in err


def test_problems_rejected_and_failed_newest_first(records: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = query(capsys, "--output", "json", "problems")
    assert [(i["key"], i["status"]) for i in json.loads(out)] == [
        ("incoming/lost.jpg", "FAILED"),
        ("incoming/notes.jpg", "REJECTED"),
    ]
    _, out, _ = query(capsys, "--output", "json", "problems", "--status", "REJECTED")
    (item,) = json.loads(out)
    assert item["error_code"] == "NotAnImage" and item["reason"]


def test_an_image_without_a_record_is_an_error(records: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = query(capsys, "image", "incoming/never-uploaded.jpg")
    assert code == 1 and "has no record" in err


def test_no_table_is_a_usage_error(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PREDICTIONS_TABLE", raising=False)
    code, _, err = query(capsys, "problems")
    assert code == 2 and "--table" in err


def test_table_and_bucket_from_a_cloudformation_stack(
    records: Aws, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    monkeypatch.delenv("PREDICTIONS_TABLE")
    monkeypatch.delenv("IMAGES_BUCKET")
    outputs = {"PredictionsTableName": records.stack.names.table, "ImagesBucketName": records.bucket}
    body = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    boto3.client("cloudformation").create_stack(StackName="dogbreed", TemplateBody=json.dumps(body))
    code, out, _ = query(capsys, "--stack", "dogbreed", "--output", "json", "image", "incoming/rex.jpg")
    assert code == 0 and json.loads(out)[0]["status"] == "CLASSIFIED"


@pytest.mark.parametrize("command", ["query", "label", "export", "redrive", "reclassify", "preflight"])
def test_each_command_runs_from_the_repository_root_without_pythonpath(command: str) -> None:
    """As the README runs them: `.venv/bin/python -m cli.query ...` (cli/ puts functions/ on the path)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", f"cli.{command}", "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr
