"""The review queue, labels and the export (functions/pipeline/adapters/review.py, cli.query review,
cli.label, cli.export) on moto's DynamoDB and S3 with the table template.yaml declares. Records are
written by the real table adapter, as every mode and the reclassify path write them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import answers
from cli import export, label, query
from pipeline.adapters.dynamodb import REVIEW_SHARDS, DynamoPredictions, review_key
from pipeline.adapters.review import LabelRefused, ReviewStore, choose_breed
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from tests.conftest import Aws
from tests.pipeline import images

THRESHOLD = 0.7


def prediction(confidence: float, threshold: float | None = THRESHOLD) -> answers.Prediction:
    top5 = (
        answers.Candidate("069", "French_bulldog", confidence),
        answers.Candidate("040", "Boston_terrier", round((1 - confidence) * 0.6, 6)),
        answers.Candidate("012", "Beagle", round((1 - confidence) * 0.4, 6)),
    )
    return answers.Prediction(top5, "int8", "sha256:0123456789abcdef", threshold, 0.2 if threshold else None)


def classify(aws: Aws, key: str, confidence: float, *, mode: Mode = Mode.SERVERLESS, etag: str | None = None) -> str:
    """Upload `key` and record the model's answer for it, as the ingest function or the collector does."""
    etag = etag or aws.upload(key, images.jpeg(color=(int(confidence * 255), 20, 30)))
    ref = ImageRef(aws.bucket, key, etag, 100, datetime.now(UTC))
    outcome = Outcome(Status.CLASSIFIED, mode, prediction(confidence))
    store = DynamoPredictions(aws.clients["dynamodb"], aws.stack.names.table)
    assert store.write([Change(ref, Event.ANSWERED, outcome)], datetime.now(UTC)) == [True]
    return etag


def review_store(aws: Aws) -> ReviewStore:
    return ReviewStore(aws.clients["dynamodb"], aws.stack.names.table)


def record(aws: Aws, key: str) -> dict[str, Any]:
    found = query.Predictions(aws.clients["dynamodb"], aws.stack.names.table).image(aws.bucket, key)
    assert found is not None
    return found


def test_only_answers_under_the_threshold_are_queued_least_confident_first(aws: Aws) -> None:
    confidences = {f"incoming/dog-{n}.jpg": c for n, c in enumerate([0.65, 0.9, 0.31, 0.55, 0.69, 0.2, 0.99, 0.4])}
    for key, confidence in confidences.items():
        classify(aws, key, confidence, mode=Mode.BATCH if confidence > 0.5 else Mode.SERVERLESS)
    queue = review_store(aws).queue(limit=100)
    unsure = sorted((c, k) for k, c in confidences.items() if c < THRESHOLD)
    assert [(float(i["confidence"]), i["key"]) for i in queue] == unsure
    assert len({i["review"] for i in queue}) > 1  # spread over the shards, merged in order
    assert [i["key"] for i in review_store(aws).queue(limit=3)] == [k for _, k in unsure[:3]]
    sure = record(aws, "incoming/dog-1.jpg")
    assert "review" not in sure and sure["threshold"] == THRESHOLD


def test_an_answer_without_a_threshold_is_never_queued(aws: Aws) -> None:
    etag = aws.upload("incoming/a.jpg", images.jpeg())
    ref = ImageRef(aws.bucket, "incoming/a.jpg", etag, 100, datetime.now(UTC))
    outcome = Outcome(Status.CLASSIFIED, Mode.SERVERLESS, prediction(0.05, threshold=None))
    DynamoPredictions(aws.clients["dynamodb"], aws.stack.names.table).write(
        [Change(ref, Event.ANSWERED, outcome)], datetime.now(UTC)
    )
    assert review_store(aws).queue(limit=10) == []


def test_review_shards_are_stable_and_all_used() -> None:
    keys = {review_key(f"bucket/incoming/{n}.jpg") for n in range(200)}
    assert keys == {f"needs-review#{n}" for n in range(REVIEW_SHARDS)}
    assert review_key("bucket/incoming/1.jpg") == review_key("bucket/incoming/1.jpg")


def test_a_label_leaves_the_queue_and_survives_the_next_model_answer(aws: Aws) -> None:
    etag = classify(aws, "incoming/rex.jpg", 0.4)
    classify(aws, "incoming/max.jpg", 0.5)
    store = review_store(aws)
    labelled = store.label(record(aws, "incoming/rex.jpg"), choose_breed(record(aws, "incoming/rex.jpg"), "Beagle"),
                           "arn:aws:sts::123456789012:assumed-role/Reviewer/ana", datetime.now(UTC))  # fmt: skip
    assert (labelled["given_label"], labelled["given_breed"], labelled["verdict"], labelled["etag"]) == (
        "012", "Beagle", "corrected", etag)  # fmt: skip
    assert [i["key"] for i in store.queue(limit=10)] == ["incoming/max.jpg"]
    assert "review" not in record(aws, "incoming/rex.jpg")

    # make reclassify: the same content answered again by a model, unsure again: the label stays, and the
    # image does not come back to the queue
    aws.clients["dynamodb"].delete_item(  # (the reclassify path first takes it back to waiting)
        TableName=aws.stack.names.table, Key={"image_id": {"S": f"{aws.bucket}/incoming/rex.jpg"}}
    )
    classify(aws, "incoming/rex.jpg", 0.3, etag=etag)
    assert "review" in record(aws, "incoming/rex.jpg")
    assert [i["key"] for i in store.queue(limit=10)] == ["incoming/max.jpg"]
    assert store.labels([f"{aws.bucket}/incoming/rex.jpg"])[f"{aws.bucket}/incoming/rex.jpg"]["given_breed"] == "Beagle"
    assert [i["key"] for i in store.labelled()] == ["incoming/rex.jpg"]


def test_a_label_is_refused_for_content_that_changed_meanwhile(aws: Aws) -> None:
    classify(aws, "incoming/rex.jpg", 0.4)
    seen = record(aws, "incoming/rex.jpg")
    classify(aws, "incoming/rex.jpg", 0.35)  # uploaded again and answered before the person's label
    with pytest.raises(LabelRefused, match="changed since it was read"):
        review_store(aws).label(seen, choose_breed(seen, None), "someone", datetime.now(UTC))
    assert review_store(aws).labels([seen["image_id"]]) == {}  # the transaction wrote nothing


def test_a_breed_is_one_of_the_top5_or_a_dataset_folder() -> None:
    item = {"label": "069", "breed": "French_bulldog", "top5": [
        {"label": "069", "breed": "French_bulldog"}, {"label": "040", "breed": "Boston_terrier"}]}  # fmt: skip
    assert choose_breed(item, None).folder == "069.French_bulldog"
    assert choose_breed(item, "Boston_terrier").folder == choose_breed(item, "040").folder == "040.Boston_terrier"
    assert choose_breed(item, "101.Maltese").folder == "101.Maltese"
    with pytest.raises(LabelRefused, match=r"NNN\.Breed_name"):
        choose_breed(item, "Maltese")


# -- the commands -----------------------------------------------------------------------------------


class Sts:
    def get_caller_identity(self) -> dict[str, str]:
        return {"Arn": "arn:aws:sts::123456789012:assumed-role/Reviewer/ana"}


def run(module: Any, capsys: pytest.CaptureFixture[str], *argv: str, **clients: Any) -> tuple[int, str, str]:
    code = module.main(module.get_args_parser().parse_args(argv), **clients)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def reviewed(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Aws:
    monkeypatch.setenv("PREDICTIONS_TABLE", aws.stack.names.table)
    monkeypatch.setenv("IMAGES_BUCKET", aws.bucket)
    classify(aws, "incoming/rex.jpg", 0.42)
    classify(aws, "incoming/sure.jpg", 0.95)
    classify(aws, "incoming/dir/max.jpg", 0.6)
    return aws


def test_the_review_command_lists_the_queue_with_each_top5(reviewed: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(query, capsys, "review")
    header, *rows = out.splitlines()
    assert code == 0 and header.split()[:5] == ["image", "breed", "conf.", "thr.", "etag"]
    assert [row.split()[0] for row in rows] == ["incoming/rex.jpg", "incoming/dir/max.jpg"]
    assert "069.French_bulldog 0.42, 040.Boston_terrier 0.35" in rows[0] and "cli.label" in err
    code, out, _ = run(query, capsys, "--output", "json", "review")
    items = json.loads(out)
    assert [i["confidence"] for i in items] == [0.42, 0.6] and len(items[0]["top5"]) == 3


def test_label_accepts_or_corrects_and_query_shows_both_answers(
    reviewed: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(label, capsys, "incoming/rex.jpg", "--breed", "Beagle", s3=reviewed.clients["s3"], sts=Sts())
    item = json.loads(out)
    assert code == 0 and (item["given_breed"], item["labelled_by"].endswith("/ana"), item["model_breed"]) == (
        "Beagle", True, "French_bulldog")  # fmt: skip
    code, out, _ = run(query, capsys, "--output", "json", "image", "incoming/rex.jpg")
    (shown,) = json.loads(out)
    assert (shown["breed"], shown["human"]["given_breed"]) == ("French_bulldog", "Beagle")
    _, out, _ = run(query, capsys, "image", "incoming/rex.jpg")
    assert "reviewed: Beagle by ana" in out
    _, out, _ = run(query, capsys, "--output", "json", "breed", "Beagle")
    assert json.loads(out) == []  # a label is no model answer: the by-breed index does not list it
    etag = reviewed.item("incoming/dir/max.jpg")["etag"]  # type: ignore[index]
    code, out, _ = run(label, capsys, "incoming/dir/max.jpg", "--accept", "--etag", etag, s3=reviewed.clients["s3"],
                       sts=Sts())  # fmt: skip
    assert code == 0 and json.loads(out)["verdict"] == "accepted"
    _, out, _ = run(query, capsys, "--output", "json", "review")
    assert json.loads(out) == []


def test_label_refuses_a_reupload_another_etag_and_an_unknown_breed(
    reviewed: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = reviewed.clients["s3"]
    code, _, err = run(label, capsys, "incoming/rex.jpg", "--accept", "--etag", "0" * 32, s3=s3, sts=Sts())
    assert code == 1 and "other content" in err
    code, _, err = run(label, capsys, "incoming/rex.jpg", "--breed", "Unicorn", s3=s3, sts=Sts())
    assert code == 1 and "NNN.Breed_name" in err
    reviewed.upload("incoming/rex.jpg", images.jpeg(color=(1, 2, 3)))  # its new answer is not recorded yet
    code, _, err = run(label, capsys, "incoming/rex.jpg", "--accept", s3=s3, sts=Sts())
    assert code == 1 and "uploaded again" in err
    code, _, err = run(label, capsys, "incoming/nothing.jpg", "--accept", s3=s3, sts=Sts())
    assert code == 1 and "no record" in err
    assert ReviewStore(reviewed.clients["dynamodb"], reviewed.stack.names.table).labels(
        [f"{reviewed.bucket}/incoming/rex.jpg"]) == {}  # fmt: skip


def test_export_writes_the_labelled_images_in_the_training_layout(
    reviewed: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s3 = reviewed.clients["s3"]
    run(label, capsys, "incoming/rex.jpg", "--breed", "101.Maltese", s3=s3, sts=Sts())
    run(label, capsys, "incoming/dir/max.jpg", "--accept", s3=s3, sts=Sts())
    rex = s3.get_object(Bucket=reviewed.bucket, Key="incoming/rex.jpg")["Body"].read()
    reviewed.upload("incoming/dir/max.jpg", images.jpeg(color=(9, 9, 9)))  # after its label: left out
    code, out, err = run(export, capsys, "--to", str(tmp_path / "reviewed"), s3=s3)
    assert code == 0 and "exported 1 labelled image" in out
    assert "left out incoming/dir/max.jpg: uploaded again since it was labelled" in err
    (exported,) = [p for p in (tmp_path / "reviewed" / "train").rglob("*") if p.is_file()]
    assert exported.parent.name == "101.Maltese" and exported.name.endswith("_rex.jpg")
    assert exported.read_bytes() == rex
    (line,) = (tmp_path / "reviewed" / "labels.jsonl").read_text().splitlines()
    assert json.loads(line)["file"] == f"train/101.Maltese/{exported.name}"

    code, _, _ = run(export, capsys, "--to", f"s3://{reviewed.bucket}/exports/reviewed", s3=s3)
    listed = s3.list_objects_v2(Bucket=reviewed.bucket, Prefix="exports/reviewed/")["Contents"]
    assert code == 0 and sorted(o["Key"] for o in listed) == [
        "exports/reviewed/labels.jsonl", f"exports/reviewed/train/101.Maltese/{exported.name}"]  # fmt: skip
