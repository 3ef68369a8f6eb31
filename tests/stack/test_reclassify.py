"""A new model applied to the images already classified: `make reclassify` on the local stack. The
command only selects and sends small requests; the ingest function reads the images in "AWS"."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cli import reclassify
from devstack.aws.container import pack_model
from devstack.aws.stack import ARTIFACT_KEY, ARTIFACTS_BUCKET, Stack
from infra.predictions import Predictions
from tests.stack.conftest import StartStack, outcomes, upload, wait_until
from tests.stack.test_stack import Photos, photos
from tests.training import train_args

pytestmark = pytest.mark.slow  # trains a second model and starts the local stack


def records(stack: Stack, keys: list[str]) -> dict[str, dict[str, Any]]:
    return Predictions(stack.client("dynamodb", observer=True), stack.names.table).images(stack.names.bucket, keys)


def reclassify_args(stack: Stack) -> list[str]:
    """What `make stack` exports, as arguments."""
    environment = stack.user_environment()
    return ["--table", environment["PREDICTIONS_TABLE"], "--bucket", environment["IMAGES_BUCKET"],
            "--queue-url", environment["RECLASSIFY_QUEUE_URL"]]  # fmt: skip


class CallRecorder:
    """Every request a client sends, by service and operation, with the size of its body."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.largest: dict[str, int] = {}

    def watch(self, client: Any) -> Any:
        service = client.meta.service_model.service_name

        def before_call(model: Any, params: dict[str, Any], **_: Any) -> None:
            name = f"{service}:{model.name}"
            self.calls[name] += 1
            self.largest[name] = max(self.largest.get(name, 0), len(params.get("body") or b""))

        client.meta.events.register("before-call", before_call)
        return client


def classified_photos(stack: Stack, dataset: Path) -> tuple[Photos, dict[str, dict[str, Any]], str]:
    """The held-out photos uploaded and classified through the serverless endpoint by the serving model:
    the photos, their records by key, and the model's version."""
    good = photos(dataset)
    first = outcomes(stack, upload(stack, {key: data for key, (data, _) in good.items()}))
    assert {item["status"] for item in first.values()} == {"CLASSIFIED"} and len(first) == len(good)
    (version,) = {item["model_version"] for item in first.values()}
    return good, first, version


def other_model(dataset: Path, workdir: Path) -> Path:
    """A model.tar.gz of other weights than the serving model's: one epoch, another seed."""
    import train

    train.main(train.get_args_parser().parse_args(train_args(dataset, workdir / "v2", "--epochs", "1", "--seed", "7")))
    return pack_model(workdir / "v2" / "model", workdir / "v2.tar.gz")


def test_a_model_swap_then_reclassifying_records_the_new_models_answers(
    start_stack: StartStack, dataset: Path, tmp_path: Path
) -> None:
    # GIVEN photos classified through the serverless endpoint by the first model
    stack = start_stack(InferenceMode="serverless")
    good, first, old_version = classified_photos(stack, dataset)
    # WHEN a new model ships (other weights under the artifact the transform model reads)
    archive = other_model(dataset, tmp_path)
    stack.client("s3", observer=True).upload_file(str(archive), ARTIFACTS_BUCKET, ARTIFACT_KEY)
    # AND what the old model answered is classified again, by a run repeated at once (a duplicate),
    # with every call the command makes recorded (an S3 client at hand, should it want one)
    recorder = CallRecorder()
    clients = {name: recorder.watch(stack.client(name, observer=True)) for name in ("dynamodb", "sqs", "s3")}
    args = reclassify.get_args_parser().parse_args([*reclassify_args(stack), "--model-version", old_version])
    assert reclassify.main(args, clients) == 0
    assert reclassify.main(args, clients) == 0
    # THEN every image ends classified once more, by a transform job of the new model
    keys = sorted(good)

    def reclassified() -> bool:
        found = records(stack, keys)
        return all(item["status"] == "CLASSIFIED" and item["model_version"] != old_version for item in found.values())

    assert wait_until(reclassified, timeout_s=180)
    found = records(stack, keys)
    (new_version,) = {item["model_version"] for item in found.values()}
    assert new_version.startswith("sha256:") and new_version != old_version
    for key, item in found.items():
        assert (item["mode"], item["etag"]) == ("batch", first[key]["etag"]) and item["job_name"], item
    assert stack.runner is not None and sum(stack.runner.job_records.values()) >= len(keys)
    # AND no image passed through the caller: it scanned the table and sent small requests, nothing else
    assert set(recorder.calls) == {"dynamodb:Scan", "sqs:SendMessageBatch"}, recorder.calls
    sends = recorder.calls["sqs:SendMessageBatch"]
    assert sends == 2 * -(-len(keys) // reclassify.SEND_BATCH)  # ten a call, for each of the two runs
    assert recorder.largest["sqs:SendMessageBatch"] < reclassify.SEND_BATCH * 1_000  # vs the photos' tens of KB
    assert min(len(data) for data, _ in good.values()) > 1_000
    # AND the ingest function read them, under its own role (the stack's IAM check runs after the test)
    ingest_reads = stack.permissions().actions["IngestRole"]
    assert ingest_reads["s3:GetObject"] >= 2 * len(keys)  # once for the first answer, once again
    assert ingest_reads["sqs:DeleteMessage"] or ingest_reads["sqs:DeleteMessageBatch"]
    # AND nothing is left to classify again with the old version, nor waiting
    dry = reclassify.get_args_parser().parse_args(
        [*reclassify_args(stack), "--model-version", old_version, "--dry-run"]
    )
    selection = reclassify.Selection(stack.names.bucket, "incoming/", old_version)
    assert list(reclassify.to_reclassify(clients["dynamodb"], stack.names.table, selection)) == []
    assert reclassify.main(dry, clients) == 0
    queue_url = stack.user_environment()["RECLASSIFY_QUEUE_URL"]
    left = reclassify.progress(
        clients["sqs"], queue_url, clients["dynamodb"], stack.names.table, stack.names.bucket, "incoming/"
    )
    assert left.startswith("0 requests queued, 0 being taken; 0 images under"), left
