"""Round the loop on the local stack: classify, review, label, export, train with the export, serve the
new model. Unsure answers go to the review queue under the threshold the artifact recommends; a
person's label comes back in the exported training set and in the next model's training data, and
survives the new model's answer for the same content."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import calibration
import pytest

from cli import export, label, query, reclassify
from devstack.aws.container import pack_model
from devstack.aws.iam import template_policies
from devstack.aws.stack import ARTIFACT_KEY, ARTIFACTS_BUCKET, Stack
from devstack.workloads.demo import unsure_photos
from infra.predictions import Predictions
from tests.stack.conftest import StartStack, outcomes, upload, wait_until
from tests.stack.test_reclassify import reclassify_args
from tests.stack.test_stack import photos
from tests.training import train_args

pytestmark = pytest.mark.slow  # trains a second model and starts the local stack

REVIEWER = "ReviewerPolicy"  # the reviewer's calls are checked against the template's ReviewerPolicy


def run(module: Any, *argv: str, **clients: Any) -> int:
    return int(module.main(module.get_args_parser().parse_args(argv), **clients))


def records(stack: Stack, keys: list[str]) -> dict[str, dict[str, Any]]:
    return Predictions(stack.client("dynamodb", observer=True), stack.names.table).images(stack.names.bucket, keys)


def test_classify_review_label_export_train_and_serve_the_new_model(
    start_stack: StartStack,
    dataset: Path,
    trained: tuple[Path, dict[str, object]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import train

    threshold = calibration.load(trained[0]).recommended_threshold
    # GIVEN held-out photos and mixes of every breed at once, classified through the endpoint
    stack = start_stack(InferenceMode="serverless")
    sure = {key: data for key, (data, _) in photos(dataset).items()}
    unsure = unsure_photos(trained[0], dataset, count=3)  # every breed at once
    first = outcomes(stack, upload(stack, {**sure, **unsure}))
    assert {item["status"] for item in first.values()} == {"CLASSIFIED"}
    assert {item["threshold"] for item in first.values()} == {threshold}  # the artifact's recommendation
    queued = {key for key, item in first.items() if item["confidence"] < threshold}
    assert all(("review" in item) is (key in queued) for key, item in first.items())
    assert len(queued) < len(first)  # confident answers are recorded as they are

    # THEN the review queue holds exactly the answers under the threshold, least confident first, and the
    # mixes are among them
    reviewer = {name: stack.client(name, identity=REVIEWER) for name in ("dynamodb", "s3", "sts")}
    local = ["--table", stack.names.table, "--bucket", stack.names.bucket]
    assert run(query, *local, "--output", "json", "review", dynamodb=reviewer["dynamodb"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {item["key"] for item in listed} == queued and set(unsure) <= queued
    assert [item["confidence"] for item in listed] == sorted(item["confidence"] for item in listed)

    # WHEN a person labels one of them with the breed of its answer's second candidate
    key = next(iter(unsure))
    (item,) = [i for i in listed if i["key"] == key]
    second = item["top5"][1]
    folder = f"{second['label']}.{second['breed']}"
    assert run(label, *local, key, "--breed", second["breed"], "--etag", item["etag"], **reviewer) == 0
    capsys.readouterr()
    # AND exports what people labelled, then trains the next model with it
    exported = tmp_path / "reviewed"
    assert run(export, "--table", stack.names.table, "--to", str(exported), **{
        "dynamodb": reviewer["dynamodb"], "s3": reviewer["s3"]}) == 0  # fmt: skip
    (image,) = [p for p in (exported / "train").rglob("*") if p.is_file()]
    assert image.parent.name == folder and image.read_bytes() == unsure[key]
    argv = train_args(dataset, tmp_path / "v2", "--epochs", "1", "--seed", "7", "--extra-train", str(exported))
    result = train.main(train.get_args_parser().parse_args(argv))
    assert result["extra_train_images"] == 1
    assert f"extra training images from {exported}: 1 ({folder}: 1)" in capsys.readouterr().out

    # AND the new model ships and answers the labelled image again (make reclassify)
    archive = pack_model(tmp_path / "v2" / "model", tmp_path / "v2.tar.gz")
    stack.client("s3", observer=True).upload_file(str(archive), ARTIFACTS_BUCKET, ARTIFACT_KEY)
    clients = {name: stack.client(name, observer=True) for name in ("dynamodb", "sqs")}
    old_version = first[key]["model_version"]
    args = [*reclassify_args(stack), "--model-version", old_version]
    assert reclassify.main(reclassify.get_args_parser().parse_args(args), clients) == 0

    def answered_again() -> bool:
        found = records(stack, [key])[key]
        return found["status"] == "CLASSIFIED" and found.get("model_version") != old_version

    # THEN the new model's answer is recorded, and the person's label stands beside it
    assert wait_until(answered_again, timeout_s=180)
    capsys.readouterr()
    assert run(query, *local, "--output", "json", "image", key, dynamodb=reviewer["dynamodb"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["status"] == "CLASSIFIED" and shown["human"]["given_breed"] == second["breed"]
    # (marked for review by the same rule on the flood path: its own threshold, from the new artifact)
    assert ("review" in shown) is (shown["confidence"] < shown["threshold"])
    assert shown["human"]["etag"] == shown["etag"] and shown["human"]["labelled_by"]
    assert run(query, *local, "--output", "json", "review", dynamodb=reviewer["dynamodb"]) == 0
    assert key not in {i["key"] for i in json.loads(capsys.readouterr().out)}
    # AND everything the reviewer did was allowed by the template's ReviewerPolicy (least privilege, by use)
    verdict = stack.permissions()
    assert verdict.actions["ReviewerPolicy"]["dynamodb:PutItem"] == 1  # the one label
    assert not [call for role, call in verdict.denied if role == "ReviewerPolicy"]
    statements = {s.sid for s in template_policies(stack.names, {}, "s3://artifacts/model.tar.gz")[REVIEWER].statements}
    assert verdict.used[REVIEWER] == statements  # and it needed every statement of the policy
