"""A new model applied to the images already classified: `make reclassify` on the local stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli import reclassify
from devstack.aws.container import pack_model
from devstack.aws.stack import ARTIFACT_KEY, ARTIFACTS_BUCKET, Stack
from infra.predictions import Predictions
from tests.stack.conftest import StartStack, outcomes, upload, wait_until
from tests.stack.test_stack import photos
from tests.training import train_args

pytestmark = pytest.mark.slow  # trains a second model and starts the local stack


def records(stack: Stack, keys: list[str]) -> dict[str, dict[str, Any]]:
    return Predictions(stack.client("dynamodb", observer=True), stack.names.table).images(stack.names.bucket, keys)


def test_a_model_swap_then_reclassifying_records_the_new_models_answers(
    start_stack: StartStack, dataset: Path, tmp_path: Path
) -> None:
    import train

    # GIVEN photos classified through the serverless endpoint by the first model
    stack = start_stack(InferenceMode="serverless")
    good = photos(dataset)
    first = outcomes(stack, upload(stack, {key: data for key, (data, _) in good.items()}))
    assert {item["status"] for item in first.values()} == {"CLASSIFIED"} and len(first) == len(good)
    (old_version,) = {item["model_version"] for item in first.values()}
    # WHEN a new model ships (other weights under the artifact the transform model reads)
    train.main(train.get_args_parser().parse_args(train_args(dataset, tmp_path / "v2", "--epochs", "1", "--seed", "7")))
    archive = pack_model(tmp_path / "v2" / "model", tmp_path / "v2.tar.gz")
    stack.client("s3", observer=True).upload_file(str(archive), ARTIFACTS_BUCKET, ARTIFACT_KEY)
    # AND what the old model answered is classified again, by a run repeated at once (a duplicate)
    clients = {
        name: stack.client(name, observer=True) for name in ("dynamodb", "s3", "sqs", "sagemaker-runtime", "lambda")
    }
    local = ["--local", "--bucket", stack.names.bucket]
    args = reclassify.get_args_parser().parse_args([*local, "--model-version", old_version])
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
    # AND nothing is left to classify again with the old version
    dry = reclassify.get_args_parser().parse_args([*local, "--model-version", old_version, "--dry-run"])
    selected = list(
        reclassify.to_reclassify(clients["dynamodb"], stack.names.table, stack.names.bucket, "incoming/", old_version)
    )
    assert selected == [] and reclassify.main(dry, clients) == 0
