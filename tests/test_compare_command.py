"""`make compare`'s pure parts (cli/compare.py): the stratified sample, the report, the cost estimate,
and the Scan that reads the records and the labels of their content from moto's DynamoDB."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

import answers
from cli import compare
from infra.predictions import Predictions
from infra.prices import load_prices
from pipeline.adapters.dynamodb import DynamoPredictions
from pipeline.adapters.review import Breed, ReviewStore
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.trial import TrialFiles
from tests.conftest import Aws


def item(n: int, breed: str, label: str = "001", confidence: float = 0.8) -> dict[str, Any]:
    return {"image_id": f"b/incoming/{breed}/{n}.jpg", "key": f"incoming/{breed}/{n}.jpg", "breed": breed,
            "label": label, "confidence": confidence, "etag": "e"}  # fmt: skip


def prediction(label: str, name: str, confidence: float) -> answers.Prediction:
    return answers.Prediction((answers.Candidate(label, name, confidence),), "int8", "sha256:candidate")


def test_the_sample_takes_every_breed_first_then_each_in_proportion() -> None:
    records = [item(n, "Beagle") for n in range(80)] + [item(n, "Akita") for n in range(18)]
    records += [item(0, "Otterhound"), item(1, "Otterhound")]
    sample = compare.stratified_sample(records, [], 50)
    counts = Counter(i["breed"] for i in sample)
    assert set(counts) == {"Beagle", "Akita", "Otterhound"}  # the rare breed is in
    assert counts["Beagle"] == pytest.approx(40, abs=2) and counts["Akita"] == pytest.approx(9, abs=2)
    assert compare.stratified_sample(records, [], 50) == sample  # the same seed, the same sample
    assert compare.stratified_sample(records, [], 50, seed="2") != sample
    assert len(compare.stratified_sample(records, [], 1000)) == len(records)  # all there is


def test_labelled_images_come_first_within_their_breed() -> None:
    records = [item(n, "Beagle") for n in range(100)]
    labelled = [records[97]["image_id"], records[42]["image_id"]]
    sample = compare.stratified_sample(records, labelled, 2)
    assert {i["image_id"] for i in sample} == set(labelled)


def test_the_report_counts_agreement_changes_confidence_and_accuracy_on_labels() -> None:
    sample = [item(0, "Beagle", "012", 0.9), item(1, "Beagle", "012", 0.8), item(2, "Akita", "004", 0.6),
              item(3, "Akita", "004", 0.7), item(4, "Akita", "004", 0.5)]  # fmt: skip
    candidate = {
        sample[0]["key"]: prediction("012", "Beagle", 0.95),
        sample[1]["key"]: prediction("099", "Harrier", 0.6),
        sample[2]["key"]: prediction("099", "Harrier", 0.7),
        sample[3]["key"]: answers.ErrorRecord("InvalidImage", "cannot decode"),
    }
    labels = {sample[1]["image_id"]: {"given_label": "099"}, sample[0]["image_id"]: {"given_label": "012"}}
    report = compare.compare(sample, candidate, {sample[4]["key"]: "ObjectDeleted: gone"}, labels)
    assert (report.sample, report.compared, report.agreed) == (5, 3, 1)
    assert [(c.breed, c.images, c.changed, c.to) for c in report.changed] == [
        ("Akita", 1, 1, "Harrier"),  # one of one: the larger share first among equal counts
        ("Beagle", 2, 1, "Harrier"),
    ]
    assert report.confidence_current == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    assert report.confidence_candidate == pytest.approx((0.95 + 0.6 + 0.7) / 3)
    assert report.confidence_shift_median == pytest.approx(0.05)
    assert (report.labelled, report.right_current, report.right_candidate) == (2, 1, 2)
    assert report.not_compared == {
        sample[3]["key"]: "the candidate refused it: InvalidImage: cannot decode",
        sample[4]["key"]: "ObjectDeleted: gone",
    }
    text = "\n".join(report.lines())
    assert "agreement with the current answers: 33.3% (1 the same breed)" in text
    assert "on the 2 labelled images: current 50.0% right, candidate 100.0%" in text


def test_the_estimate_is_mostly_the_jobs_start_up_and_grows_with_the_sample() -> None:
    prices = load_prices()
    small = compare.estimate(prices, 1000, "ml.c6i.xlarge", 1, 512, 100)
    large = compare.estimate(prices, 100_000, "ml.c6i.xlarge", 1, 512, 100)
    start_up = prices["transform_startup_seconds"] * prices["transform_instance_per_hour"]["ml.c6i.xlarge"] / 3600
    assert small["transform"] > start_up and small["transform"] > 3 * sum(
        v for k, v in small.items() if k != "transform"
    )
    assert all(large[k] > small[k] for k in small)
    assert compare.estimate(prices, 1000, "ml.c6i.xlarge", 2, 512, 100)["transform"] > small["transform"]


def test_the_scan_returns_classified_records_and_only_the_labels_of_their_content(aws: Aws) -> None:
    store = DynamoPredictions(aws.clients["dynamodb"], aws.stack.names.table)
    now = datetime.now(UTC)
    refs = [ImageRef(aws.bucket, f"incoming/{n}.jpg", f"etag{n}", 10, now) for n in range(3)]
    top = (answers.Candidate("012", "Beagle", 0.9),)
    outcome = Outcome(Status.CLASSIFIED, Mode.SERVERLESS, answers.Prediction(top, "int8", "sha256:v1"))
    rejected = Outcome(Status.REJECTED, Mode.SERVERLESS, reason="not an image", error_code="InvalidImage")
    store.write([Change(refs[0], Event.ANSWERED, outcome), Change(refs[1], Event.ANSWERED, outcome),
                 Change(refs[2], Event.ANSWERED, rejected)], now)  # fmt: skip
    reviews = ReviewStore(aws.clients["dynamodb"], aws.stack.names.table)
    predictions = Predictions(aws.clients["dynamodb"], aws.stack.names.table)
    for ref in refs[:2]:
        reviews.label(predictions.image(aws.bucket, ref.key) or {}, Breed("012", "Beagle"), "me", now)
    # the second image uploaded again since: its label is of older content
    newer = ImageRef(aws.bucket, refs[1].key, "etag-new", 10, now)
    assert store.write([Change(newer, Event.ANSWERED, outcome)], now) == [True]
    records, labels = compare.scan(aws.clients["dynamodb"], aws.stack.names.table, aws.bucket, "incoming/")
    assert sorted(r["key"] for r in records) == ["incoming/0.jpg", "incoming/1.jpg"]
    assert set(labels) == {refs[0].image_id}


def test_a_sample_the_ingest_function_could_take_none_of_is_reported_without_a_job(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every sampled image deleted since it was classified: the report names each with why, and no
    candidate model or transform job is made."""
    store = DynamoPredictions(aws.clients["dynamodb"], aws.stack.names.table)
    now = datetime.now(UTC)
    top = (answers.Candidate("012", "Beagle", 0.9),)
    outcome = Outcome(Status.CLASSIFIED, Mode.SERVERLESS, answers.Prediction(top, "int8", "sha256:v1"))
    refs = [ImageRef(aws.bucket, f"incoming/{n}.jpg", f"etag{n}", 10, now) for n in range(2)]
    store.write([Change(ref, Event.ANSWERED, outcome) for ref in refs], now)
    s3 = aws.clients["s3"]
    s3.put_object(Bucket=aws.bucket, Key="models/v2.tar.gz", Body=b"a candidate")
    files = TrialFiles(aws.bucket, "20261205t000000-abcdef")
    monkeypatch.setattr(compare, "new_trial_id", lambda now: files.trial)
    # what the ingest function writes when it can read none of them
    index = {"shard": None, "images": [], "refused": {r.key: "ObjectDeleted: the object was deleted" for r in refs}}
    s3.put_object(Bucket=aws.bucket, Key=files.index.join("x.json").key, Body=json.dumps(index).encode())
    argv = ["--candidate", f"s3://{aws.bucket}/models/v2.tar.gz", "--table", aws.stack.names.table,
            "--bucket", aws.bucket, "--queue-url", aws.stack.reclassify_queue_url, "--model-name", "none"]  # fmt: skip
    clients = {name: aws.clients[name] for name in ("dynamodb", "sqs", "s3", "sagemaker")}
    out = io.StringIO()
    assert compare.main(compare.get_args_parser().parse_args(argv), clients, out) == 0
    printed = out.getvalue()
    assert "compared 0 of 2 sampled images" in printed
    assert all(f"not compared: {r.key}: ObjectDeleted" in printed for r in refs)
    assert aws.clients["sagemaker"].list_transform_jobs()["TransformJobSummaries"] == []
