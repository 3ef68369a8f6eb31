"""The model's answer contract (functions/answers.py) and how the pipeline reads it."""

from __future__ import annotations

import json

import pytest

import answers
from pipeline.logic.errors import RejectedImage, TransientError
from pipeline.logic.outcomes import needs_review, read_model_answer

PREDICTION = answers.Prediction(
    (answers.Candidate("069", "French_bulldog", 0.91), answers.Candidate("040", "Boston_terrier", 0.05))
)


def test_a_prediction_round_trips_in_the_documented_shape() -> None:
    doc = json.loads(answers.dumps(PREDICTION))
    assert doc == {
        "predicted_label": "069",
        "class_name": "French_bulldog",
        "confidence": 0.91,
        "top5": [
            {"label": "069", "class_name": "French_bulldog", "probability": 0.91},
            {"label": "040", "class_name": "Boston_terrier", "probability": 0.05},
        ],
    }
    assert answers.loads(answers.dumps(PREDICTION)) == PREDICTION
    assert read_model_answer(answers.dumps(PREDICTION).encode()) == PREDICTION


def test_an_error_record_is_a_rejection_with_its_code_and_message() -> None:
    body = answers.dumps(answers.ErrorRecord("InvalidImage", "cannot decode the image: truncated")).encode()
    with pytest.raises(RejectedImage) as caught:
        read_model_answer(body)
    assert (caught.value.code, caught.value.reason) == ("InvalidImage", "cannot decode the image: truncated")


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b"[]",
        b'{"predicted_label": "069"}',
        b'{"predicted_label": "001", "class_name": "x", "confidence": 0.9, "top5": []}',
        b'{"predicted_label": "001", "class_name": "Akita", "confidence": 1, '
        b'"top5": [{"label": "002", "class_name": "Akita", "probability": 1}]}',
        b'{"error": {"message": "no code"}}',
        b"\xff\xfe",
    ],
)
def test_a_body_that_breaks_the_contract_is_a_transient_fault(body: bytes) -> None:
    with pytest.raises(TransientError, match="breaks the contract"):
        read_model_answer(body)


def test_the_error_record_leading_a_toolkit_error_body_is_found() -> None:
    record = answers.ErrorRecord("DecompressionBomb", "the image is too large to decode safely")
    text = answers.dumps(record) + "\nTraceback (most recent call last):\n  File ..."
    assert answers.leading_error(text) == record
    assert answers.leading_error("Traceback (most recent call last): ...") is None
    assert answers.leading_error(answers.dumps(PREDICTION)) is None


def test_a_prediction_names_the_network_that_made_it_and_an_older_one_still_reads() -> None:
    served = answers.Prediction(PREDICTION.top5, model_precision="int8-reduce-range", model_version="sha256:0123")
    doc = json.loads(answers.dumps(served))
    assert (doc["model_precision"], doc["model_version"]) == ("int8-reduce-range", "sha256:0123")
    assert answers.loads(answers.dumps(served)) == served
    assert read_model_answer(answers.dumps_line("k", served).encode()) == served
    # an artifact from before these fields answers without them: still a prediction, they are None
    older = answers.loads(answers.dumps(PREDICTION))
    assert isinstance(older, answers.Prediction) and (older.model_precision, older.model_version) == (None, None)


def test_a_model_field_that_is_not_a_string_breaks_the_contract() -> None:
    doc = {**json.loads(answers.dumps(PREDICTION)), "model_precision": 8}
    with pytest.raises(TransientError, match="breaks the contract"):
        read_model_answer(json.dumps(doc).encode())


def test_a_prediction_carries_its_review_threshold_and_an_older_one_needs_no_review() -> None:
    sure = answers.Prediction(PREDICTION.top5, threshold=0.62, expected_under_threshold=0.18)
    doc = json.loads(answers.dumps(sure))
    assert (doc["threshold"], doc["expected_under_threshold"]) == (0.62, 0.18)
    assert answers.loads(answers.dumps(sure)) == sure and not needs_review(sure)  # 0.91 is not under 0.62
    unsure = answers.Prediction(PREDICTION.top5, threshold=0.95, expected_under_threshold=0.3)
    assert needs_review(unsure)
    assert not needs_review(PREDICTION)  # no threshold: a model from before calibration
    assert "threshold" not in json.loads(answers.dumps(PREDICTION))


@pytest.mark.parametrize("value", ["0.5", 1.5, -0.1, True, [0.5]])
def test_a_threshold_that_is_not_a_share_breaks_the_contract(value: object) -> None:
    doc = {**json.loads(answers.dumps(PREDICTION)), "threshold": value}
    with pytest.raises(TransientError, match="threshold"):
        read_model_answer(json.dumps(doc).encode())
