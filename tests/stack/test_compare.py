"""A candidate model compared with the serving one on the local stack (`make compare`): the command
samples and sends small requests, the ingest function shards the sample under its own role, a transform
job of the candidate answers into the trial's folder, and the report is printed. Nothing of the
candidate reaches the predictions table."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import answers
from cli import compare
from infra.predictions import Predictions, record
from pipeline.adapters.review import Breed, ReviewStore
from tests.stack.conftest import StartStack
from tests.stack.test_reclassify import classified_photos, other_model

pytestmark = pytest.mark.slow  # trains a second model and starts the local stack


class KeyRecorder:
    """Every request a client sends: its operation and the S3 key (or table, queue) it names."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def watch(self, client: Any) -> Any:
        service = client.meta.service_model.service_name

        def before_parameter_build(model: Any, params: dict[str, Any], **_: Any) -> None:  # the API's parameters
            self.calls.append((f"{service}:{model.name}", str(params.get("Key") or params.get("Prefix") or "")))

        client.meta.events.register("before-parameter-build", before_parameter_build)
        return client


def table_items(stack: Any) -> list[dict[str, Any]]:
    pages = stack.client("dynamodb", observer=True).get_paginator("scan").paginate(TableName=stack.names.table)
    return sorted((record(raw) for page in pages for raw in page["Items"]), key=lambda item: item["image_id"])


def test_a_candidate_is_compared_on_the_stacks_own_images_and_nothing_of_it_is_recorded(
    start_stack: StartStack, dataset: Path, tmp_path: Path
) -> None:
    # GIVEN photos classified through the serverless endpoint by the serving model, one of them labelled
    # by a person, and one deleted since it was classified
    stack = start_stack(InferenceMode="serverless")
    good, first, serving_version = classified_photos(stack, dataset)
    labelled_key, (_, true_breed) = next(iter(good.items()))
    (folder,) = [d.name for d in (dataset / "test").iterdir() if d.name[4:] == true_breed]
    reviews = ReviewStore(stack.client("dynamodb", observer=True), stack.names.table)
    reviews.label(first[labelled_key], Breed(folder[:3], true_breed), "arn:aws:iam::0:user/reviewer", datetime.now(UTC))
    deleted_key = sorted(good)[-1]
    stack.client("s3", observer=True).delete_object(Bucket=stack.names.bucket, Key=deleted_key)
    # AND a candidate: other weights, in the user's own bucket
    archive = other_model(dataset, tmp_path)
    owner = stack.client("s3", observer=True)
    owner.create_bucket(Bucket="my-models")
    owner.upload_file(str(archive), "my-models", "v2/model.tar.gz")
    before = table_items(stack)

    # WHEN the candidate is compared on every image, with every call of the command recorded
    recorder = KeyRecorder()
    names = ("dynamodb", "sqs", "s3", "sagemaker")
    clients = {name: recorder.watch(stack.client(name, observer=True)) for name in names}
    environment = stack.user_environment()
    flags = {"--table": "PREDICTIONS_TABLE", "--bucket": "IMAGES_BUCKET", "--queue-url": "RECLASSIFY_QUEUE_URL",
             "--model-name": "TRANSFORM_MODEL_NAME"}  # fmt: skip
    where = [part for flag, variable in flags.items() for part in (flag, environment[variable])]
    sample = ["--candidate", "s3://my-models/v2/model.tar.gz", "--sample", str(len(good)), "--timeout-min", "5"]
    args = compare.get_args_parser().parse_args([*sample, *where])
    out = io.StringIO()
    assert compare.main(args, clients, out) == 0, out.getvalue()
    printed = out.getvalue()
    print(printed)  # shown when the test fails

    # THEN it printed the cost first, then the report: every image compared but the deleted one, which
    # is named with its reason, and the labelled image judged for both models
    assert printed.index("estimated cost: $") < printed.index("trial ")
    assert f"compared {len(good) - 1} of {len(good)} sampled images" in printed, printed
    assert "agreement with the current answers: " in printed and "confidence: " in printed
    assert "on the 1 labelled images: current " in printed, printed
    assert f"not compared: {deleted_key}: ObjectDeleted: " in printed, printed
    # AND the report in the trial's folder holds the candidate's answers, by its own model version
    trial = next(line.split()[1].rstrip(":") for line in printed.splitlines() if line.startswith("trial "))
    s3 = stack.client("s3", observer=True)
    report = json.loads(s3.get_object(Bucket=stack.names.bucket, Key=f"trials/{trial}/report.json")["Body"].read())
    assert (report["sample"], report["compared"], report["labelled"]) == (len(good), len(good) - 1, 1)
    outputs = s3.list_objects_v2(Bucket=stack.names.bucket, Prefix=f"trials/{trial}/output/")["Contents"]
    candidate: dict[str, answers.Answer] = {}
    for entry in outputs:
        candidate |= answers.loads_lines(s3.get_object(Bucket=stack.names.bucket, Key=entry["Key"])["Body"].read())[0]
    assert set(candidate) == set(good) - {deleted_key}
    versions = {a.model_version for a in candidate.values() if isinstance(a, answers.Prediction)}
    assert len(versions) == 1 and versions != {serving_version}
    agreed = sum(
        isinstance(answer, answers.Prediction) and answer.label == first[key]["label"]
        for key, answer in candidate.items()
    )
    assert report["agreed"] == agreed
    # AND nothing of the candidate was recorded: the table is as it was, and the trial's model is gone
    assert table_items(stack) == before
    models = stack.client("sagemaker").list_models()["Models"]
    assert [m["ModelName"] for m in models if m["ModelName"].startswith("trial-")] == []
    assert (
        Predictions(stack.client("dynamodb", observer=True), stack.names.table).image(stack.names.bucket, labelled_key)[
            "model_version"
        ]
        == serving_version
    )
    # AND no image passed through the caller: its S3 calls are the trial's small files, and its reads of
    # the images bucket are the trial's index and output files
    s3_calls = Counter(op for op, _ in recorder.calls if op.startswith("s3:"))
    assert set(s3_calls) <= {"s3:CopyObject", "s3:ListObjectsV2", "s3:GetObject", "s3:PutObject"}, s3_calls
    for op, key in recorder.calls:
        if op.startswith("s3:"):
            assert key.startswith(f"trials/{trial}/"), (op, key)
    assert {op for op, _ in recorder.calls if op.startswith("sqs:")} == {"sqs:SendMessageBatch"}
    # AND the ingest function read the images and wrote the shards, under its own role (checked after the test)
    ingest = stack.permissions().actions["IngestRole"]
    assert ingest["s3:GetObject"] >= 2 * len(good) - 1
