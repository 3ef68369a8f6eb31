"""Every file in events/ (what `sam local invoke -e` sends) runs through its handler against moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from devstack.lambda_runtime import LambdaContext
from devstack.template import declared_environment, load_template
from pipeline.adapters.dynamodb import DynamoPredictions
from pipeline.handlers import collect, ingest
from pipeline.logic import answers
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from tests.conftest import EVENTS, Aws, load_event
from tests.fakes.sagemaker_runtime import fake_prediction

IMAGES = EVENTS / "images"


def upload_fixture(aws: Aws, key: str, image: str) -> None:
    etag = aws.upload(key, (IMAGES / image).read_bytes())
    assert etag  # the events carry these files' real ETags


def pending_job(aws: Aws, event_name: str, images: dict[str, str], outputs: dict[str, answers.Answer]) -> None:
    """Leave the state a job of this event would have: a manifest, PENDING images and outputs."""
    detail = load_event(event_name)["detail"]
    job = detail["TransformJobName"]
    store = DynamoPredictions(aws.clients["dynamodb"], aws.stack.names.table)
    for relative, image in images.items():
        data = (IMAGES / image).read_bytes()
        etag = aws.upload(f"incoming/{relative}", data)
        ref = ImageRef(aws.bucket, f"incoming/{relative}", etag, len(data), datetime(2026, 11, 21, 10, tzinfo=UTC))
        store.record(ref, Outcome(Status.PENDING, Mode.BATCH, job_name=job), datetime.now(UTC))
    manifest = [{"prefix": f"s3://{aws.bucket}/incoming/"}, *images]
    aws.clients["s3"].put_object(Bucket=aws.bucket, Key=f"manifests/{job}.json", Body=json.dumps(manifest))
    for relative, answer in outputs.items():
        key = f"transform-output/{job}/{relative}.out"
        aws.clients["s3"].put_object(Bucket=aws.bucket, Key=key, Body=answers.dumps(answer))


def status(aws: Aws, key: str) -> tuple[str, str | None]:
    item = aws.item(key)
    assert item is not None, f"no record for {key}"
    return item["status"], item.get("error_code")


def check_put(aws: Aws) -> None:
    upload_fixture(aws, "incoming/my dog (1).jpg", "dog.jpg")
    assert ingest.lambda_handler(load_event("ingest_s3_put.json"), LambdaContext()) == {"batchItemFailures": []}
    assert status(aws, "incoming/my dog (1).jpg") == ("CLASSIFIED", None)
    item = aws.item("incoming/my dog (1).jpg")
    assert item is not None
    assert item["breed"] == fake_prediction((IMAGES / "dog.jpg").read_bytes()).class_name


def check_test_event(aws: Aws) -> None:
    assert ingest.lambda_handler(load_event("ingest_s3_test_event.json"), LambdaContext()) == {"batchItemFailures": []}
    assert aws.runtime.calls == []


def check_multi_record(aws: Aws) -> None:
    upload_fixture(aws, "incoming/café/terrier.jpg", "terrier.jpg")
    upload_fixture(aws, "incoming/puppy + friends.png", "puppy.png")
    upload_fixture(aws, "incoming/notes.jpg", "notes.jpg")
    # "incoming/deleted before processing.jpg" is never uploaded: deleted before processing
    assert ingest.lambda_handler(load_event("ingest_multi_record.json"), LambdaContext()) == {"batchItemFailures": []}
    assert status(aws, "incoming/café/terrier.jpg") == ("CLASSIFIED", None)
    assert status(aws, "incoming/puppy + friends.png") == ("CLASSIFIED", None)
    assert status(aws, "incoming/notes.jpg") == ("REJECTED", "NotAnImage")
    assert status(aws, "incoming/deleted before processing.jpg") == ("REJECTED", "ObjectDeleted")


def check_completed(aws: Aws) -> None:
    error = answers.ErrorRecord("InvalidImage", "cannot decode the image: image file is truncated")
    pending_job(
        aws,
        "collect_transform_completed.json",
        {"dog.jpg": "dog.jpg", "broken.jpg": "terrier.jpg"},
        {"dog.jpg": fake_prediction(b"dog"), "broken.jpg": error},
    )
    response = collect.lambda_handler(load_event("collect_transform_completed.json"), LambdaContext())
    assert response["recorded"] == 2
    assert status(aws, "incoming/dog.jpg") == ("CLASSIFIED", None)
    assert status(aws, "incoming/broken.jpg") == ("REJECTED", "InvalidImage")


def check_failed(aws: Aws) -> None:
    pending_job(aws, "collect_transform_failed.json", {"terrier.jpg": "terrier.jpg", "puppy.png": "puppy.png"}, {})
    response = collect.lambda_handler(load_event("collect_transform_failed.json"), LambdaContext())
    assert response["recorded"] == 2
    for key in ("incoming/terrier.jpg", "incoming/puppy.png"):
        assert status(aws, key) == ("FAILED", "JobFailed")
        assert "ClientError: See job logs" in aws.item(key)["reason"]  # type: ignore[index]


CASES: dict[str, Callable[[Aws], None]] = {
    "ingest_s3_put.json": check_put,
    "ingest_s3_test_event.json": check_test_event,
    "ingest_multi_record.json": check_multi_record,
    "collect_transform_completed.json": check_completed,
    "collect_transform_failed.json": check_failed,
}


def test_every_event_file_has_a_case() -> None:
    events = {p.name for p in EVENTS.glob("*.json")} - {"env.local.json"}
    assert events == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_event(aws: Aws, name: str) -> None:
    CASES[name](aws)


def test_env_vars_file_names_functions_and_variables_of_the_template() -> None:
    """sam local invoke only overrides variables the template declares, for functions it has."""
    template = load_template()
    env_file = json.loads((EVENTS / "env.local.json").read_text())
    for function, variables in env_file.items():
        assert template["Resources"][function]["Type"] == "AWS::Serverless::Function"
        declared = set(declared_environment(function, template))
        assert set(variables) <= declared, set(variables) - declared
