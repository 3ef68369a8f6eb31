"""Every file in events/ (what `sam local invoke -e` sends) runs through its handler against moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

import answers
from devstack.aws.lambda_runtime import LambdaContext
from devstack.aws.transform import set_moto_status
from infra.template import declared_environment, load_template
from pipeline.adapters.dynamodb import DynamoJobBook, DynamoPredictions
from pipeline.handlers import build_jobs, collect, ingest
from pipeline.logic.jobs import JobFiles, QueuedShard
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import JobItem
from pipeline.logic.reclassify import REASON
from pipeline.logic.s3uri import S3Uri
from pipeline.logic.trial import TrialFiles, read_index
from tests.conftest import EVENTS, Aws, load_event
from tests.fakes.sagemaker_runtime import fake_prediction

IMAGES = EVENTS / "images"


def upload_fixture(aws: Aws, key: str, image: str) -> None:
    etag = aws.upload(key, (IMAGES / image).read_bytes())
    assert etag  # the events carry these files' real ETags


def pending_job(aws: Aws, event_name: str, images: dict[str, str], outputs: dict[str, answers.Answer]) -> None:
    """Leave the state a job of this event would have: its files, PENDING images and output lines."""
    detail = load_event(event_name)["detail"]
    store = DynamoPredictions(aws.clients["dynamodb"], aws.stack.names.table)
    refs = []
    for relative, image in images.items():
        data = (IMAGES / image).read_bytes()
        etag = aws.upload(f"incoming/{relative}", data)
        refs.append(
            ImageRef(aws.bucket, f"incoming/{relative}", etag, len(data), datetime(2026, 11, 21, 10, tzinfo=UTC))
        )
        in_job = Outcome(Status.PENDING, Mode.BATCH, job_name=detail["TransformJobName"])
        store.write([Change(refs[-1], Event.JOB_STARTED, in_job)], datetime.now(UTC))
    manifest = S3Uri.parse(detail["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"])
    job = JobFiles(
        detail["TransformJobName"],
        manifest,
        S3Uri(aws.bucket, "batch-input/"),
        S3Uri.parse(detail["TransformOutput"]["S3OutputPath"]),
    )
    shard = QueuedShard(S3Uri(aws.bucket, "batch-input/2026/11/21/s1.jsonl"), tuple(refs))
    s3 = aws.clients["s3"]
    s3.put_object(Bucket=aws.bucket, Key=job.manifest.key, Body=json.dumps(job.manifest_doc([shard])))
    s3.put_object(Bucket=aws.bucket, Key=job.index.key, Body=json.dumps(job.index_doc([shard])))
    if outputs:
        lines = "".join(answers.dumps_line(f"incoming/{relative}", a) + "\n" for relative, a in outputs.items())
        output = job.output_for(shard.uri.key)
        s3.put_object(Bucket=aws.bucket, Key=output.key, Body=lines.encode())


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


def check_reclassify_request(aws: Aws) -> None:
    """`make reclassify`'s request for an image classified before: the ingest function takes it back
    to waiting and queues it for a transform job (whatever the stack's mode)."""
    check_put(aws)
    response = ingest.lambda_handler(load_event("ingest_reclassify_request.json"), LambdaContext())
    assert response == {"batchItemFailures": []}
    item = aws.item("incoming/my dog (1).jpg")
    assert item is not None and (item["status"], item["mode"], item["reason"]) == ("PENDING", "batch", REASON)
    messages = aws.receive_event(aws.stack.job_queue_url)["Records"]  # the job builder's queue: its shard
    assert [ref.key for m in messages for ref in QueuedShard.from_message("m", m["body"]).images] == [item["key"]]


def check_trial_request(aws: Aws) -> None:
    """`make compare`'s request for an image classified before: the ingest function writes it into the
    trial's shards, in the flood path's format, and records nothing."""
    check_put(aws)
    before = aws.item("incoming/my dog (1).jpg")
    response = ingest.lambda_handler(load_event("ingest_trial_request.json"), LambdaContext())
    assert response == {"batchItemFailures": []}
    assert aws.item("incoming/my dog (1).jpg") == before
    s3, files = aws.clients["s3"], TrialFiles(aws.bucket, "20261205t120000-5d0e8b")
    (index,) = s3.list_objects_v2(Bucket=aws.bucket, Prefix=files.index.key)["Contents"]
    shard, keys, refused = read_index(s3.get_object(Bucket=aws.bucket, Key=index["Key"])["Body"].read())
    assert shard is not None and (keys, refused) == (["incoming/my dog (1).jpg"], {})
    (line,) = s3.get_object(Bucket=aws.bucket, Key=shard.key)["Body"].read().splitlines()
    assert answers.loads_record(line) == ("incoming/my dog (1).jpg", (IMAGES / "dog.jpg").read_bytes())


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


def check_sweep(aws: Aws) -> None:
    """A job whose end event never came: SageMaker says it completed, so the sweep collects it."""
    detail = load_event("collect_transform_completed.json")["detail"]
    pending_job(aws, "collect_transform_completed.json", {"dog.jpg": "dog.jpg"}, {"dog.jpg": fake_prediction(b"dog")})
    request = {key: detail[key] for key in ("TransformJobName", "ModelName", "TransformInput", "TransformOutput")}
    aws.clients["sagemaker"].create_transform_job(**request, TransformResources=detail["TransformResources"])
    set_moto_status(detail["TransformJobName"], "Completed")  # as the local stack's runner ends a job
    DynamoJobBook(aws.clients["dynamodb"], aws.stack.names.table).open(
        JobItem(detail["TransformJobName"], "InProgress", holder="builder", shards=1, images=1), datetime.now(UTC)
    )
    response = collect.lambda_handler(load_event("collect_sweep.json"), LambdaContext())
    assert response == {"checked": 1, "collected": [detail["TransformJobName"]], "recorded": 1}
    assert status(aws, "incoming/dog.jpg") == ("CLASSIFIED", None)


def check_build_jobs(aws: Aws) -> None:
    event = load_event("build_jobs_shards.json")
    shard = QueuedShard.from_message("m", event["Records"][0]["body"])
    for ref, image in zip(shard.images, ("dog.jpg", "terrier.jpg"), strict=True):
        assert aws.upload(ref.key, (IMAGES / image).read_bytes()) == ref.etag
    response = build_jobs.lambda_handler(event, LambdaContext(function_name="BuildJobsFunction"))
    assert response == {"batchItemFailures": []}
    (job,) = aws.clients["sagemaker"].list_transform_jobs()["TransformJobSummaries"]
    for ref in shard.images:
        item = aws.item(ref.key)
        assert item is not None and item["status"] == "PENDING" and item["job_name"] == job["TransformJobName"]


CASES: dict[str, Callable[[Aws], None]] = {
    "ingest_s3_put.json": check_put,
    "ingest_s3_test_event.json": check_test_event,
    "ingest_reclassify_request.json": check_reclassify_request,
    "ingest_trial_request.json": check_trial_request,
    "ingest_multi_record.json": check_multi_record,
    "build_jobs_shards.json": check_build_jobs,
    "collect_transform_completed.json": check_completed,
    "collect_transform_failed.json": check_failed,
    "collect_sweep.json": check_sweep,
}


def test_every_event_file_has_a_case() -> None:
    events = {p.name for p in EVENTS.glob("*.json")} - {"env.local.json"}
    assert events == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_event(aws: Aws, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With events/env.local.json's settings (not its endpoints), as `sam local invoke --env-vars` sends them."""
    for variables in json.loads((EVENTS / "env.local.json").read_text()).values():
        for key, value in variables.items():
            if not key.startswith("AWS_") and key != "INFERENCE_MODE":
                monkeypatch.setenv(key, value)
    CASES[name](aws)


def test_env_vars_file_names_functions_and_variables_of_the_template() -> None:
    """sam local invoke only overrides variables the template declares, for functions it has."""
    template = load_template()
    env_file = json.loads((EVENTS / "env.local.json").read_text())
    for function, variables in env_file.items():
        assert template["Resources"][function]["Type"] == "AWS::Serverless::Function"
        declared = set(declared_environment(function, template))
        assert set(variables) <= declared, set(variables) - declared
