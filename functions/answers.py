"""The answer the model handler gives for one image, defined once.

model/serving/inference.py writes it, the pipeline reads it, and the tests build it. It sits at the
root of the Lambda package (functions/), which `sam build` packages as it is; train.py copies it
into the model artifact's code/ beside inference.py, and launch.py into a training job's source.

    a prediction      {"predicted_label": "069", "class_name": "French_bulldog", "confidence": 0.91,
                       "top5": [{"label": "069", "class_name": "French_bulldog", "probability": 0.91}, ...],
                       "model_precision": "int8", "model_version": "sha256:3f2a9c0e1b7d4a65",
                       "threshold": 0.62, "expected_under_threshold": 0.18}
    an error record   {"error": {"code": "InvalidImage", "message": "cannot decode the image: ..."}}

Batch transform jobs send many images per request as JSON Lines (application/jsonlines): each
input line is a record {"id": "<image key>", "image": "<base64 bytes>"}, and the handler answers
one line per input line, in order, each an answer above with the record's "id" added. One bad image
is one error-record line; it never fails the request or the job.

A prediction names the network that made it: `model_precision` (networks.py: fp32, fp16, int8 or
int8-reduce-range) and `model_version` (the digest of the trained weights, model.pth). Both are
optional for readers, so the answers of a model artifact from before they existed still read.

`confidence` is calibrated where the artifact carries a temperature (calibration.py). `threshold` is
the confidence under which the answer needs a person's review (the stack's ConfidenceThreshold, else
the artifact's recommendation) and `expected_under_threshold` the share of validation images under it;
both are absent where the model has neither, and then nothing is marked for review.

Standard library only: this module runs in the model container and in the Lambda functions.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Candidate:
    label: str  # "069", as the dataset's folder numbers
    class_name: str  # "French_bulldog"
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The most likely breeds, best first; the first is the prediction; and the network that answered."""

    top5: tuple[Candidate, ...]
    model_precision: str | None = None  # "int8", "int8-reduce-range", "fp16", "fp32"
    model_version: str | None = None  # "sha256:<16 hex digits of model.pth>"
    threshold: float | None = None  # an answer under it needs review (calibration.py)
    expected_under_threshold: float | None = None  # the share of validation images under it

    @property
    def label(self) -> str:
        return self.top5[0].label

    @property
    def class_name(self) -> str:
        return self.top5[0].class_name

    @property
    def confidence(self) -> float:
        return self.top5[0].probability


@dataclass(frozen=True)
class ErrorRecord:
    """The image can never be classified as it is: `code` names the problem, `message` explains it."""

    code: str
    message: str


Answer = Prediction | ErrorRecord
SERVED_BY = ("model_precision", "model_version")  # optional strings
REVIEW = ("threshold", "expected_under_threshold")  # optional numbers in [0, 1]


class BrokenAnswer(ValueError):
    """A body that is neither a prediction nor an error record: a fault on the model's side."""


def to_json(answer: Answer) -> dict[str, Any]:
    if isinstance(answer, ErrorRecord):
        return {"error": {"code": answer.code, "message": answer.message}}
    doc: dict[str, Any] = {
        "predicted_label": answer.label,
        "class_name": answer.class_name,
        "confidence": answer.confidence,
        "top5": [{"label": c.label, "class_name": c.class_name, "probability": c.probability} for c in answer.top5],
    }
    for key in (*SERVED_BY, *REVIEW):
        if (value := getattr(answer, key)) is not None:
            doc[key] = value
    return doc


def dumps(answer: Answer) -> str:
    return json.dumps(to_json(answer))


# -- multi-record requests (JSON Lines) ------------------------------------------------------

JSON_LINES = "application/jsonlines"


class BrokenRecord(ValueError):
    """An input line that is not a record: the whole request is malformed."""


def dumps_record(record_id: str, image: bytes) -> bytes:
    """One input line (without its newline)."""
    return json.dumps({"id": record_id, "image": base64.b64encode(image).decode("ascii")}).encode()


def record_size(image_bytes: int, record_id: str) -> int:
    """The length of dumps_record's line for an image of this size, plus its newline."""
    return 4 * ((image_bytes + 2) // 3) + len(json.dumps(record_id)) + len('{"id": , "image": ""}\n')


def loads_record(line: bytes | str) -> tuple[str, bytes]:
    """(id, image bytes) of one input line; raises BrokenRecord."""
    try:
        doc = json.loads(line)
        return str(doc["id"]), base64.b64decode(doc["image"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BrokenRecord(f"not a record of {{'id', 'image'}}: {exc!r}") from exc


def dumps_line(record_id: str, answer: Answer) -> str:
    """One output line: the answer for the record with this id."""
    return json.dumps({"id": record_id, **to_json(answer)})


def loads_lines(body: bytes) -> tuple[dict[str, Answer], list[str]]:
    """The answers of a multi-record output by record id, and a description of each line that
    could not be read (it belongs to no known record)."""
    answers: dict[str, Answer] = {}
    broken: list[str] = []
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
                raise BrokenAnswer("the line has no record id")
            answers[doc["id"]] = from_json(doc)
        except (ValueError, UnicodeDecodeError) as exc:
            broken.append(f"line {number}: {exc}")
    return answers, broken


def from_json(doc: object) -> Answer:
    """Read a decoded answer; raises BrokenAnswer if it is neither kind."""
    if not isinstance(doc, dict):
        raise BrokenAnswer(f"the answer is {type(doc).__name__}, not a JSON object")
    try:
        if "error" in doc:
            return ErrorRecord(str(doc["error"]["code"]), str(doc["error"]["message"]))
        top5 = tuple(Candidate(str(c["label"]), str(c["class_name"]), float(c["probability"])) for c in doc["top5"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BrokenAnswer(f"the answer lacks a field of the contract: {exc!r}") from exc
    if not top5 or (top5[0].label, top5[0].class_name) != (doc.get("predicted_label"), doc.get("class_name")):
        raise BrokenAnswer("the answer's predicted_label and class_name are not its first candidate")
    served = {key: doc.get(key) for key in SERVED_BY}
    if any(value is not None and not isinstance(value, str) for value in served.values()):
        raise BrokenAnswer(f"the answer's model_precision and model_version are not strings: {served}")
    review = {key: doc.get(key) for key in REVIEW}
    if any(
        value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1)
        for value in review.values()
    ):
        raise BrokenAnswer(f"the answer's threshold and expected_under_threshold are not numbers in [0, 1]: {review}")
    threshold, expected = (None if v is None else float(v) for v in review.values())
    return Prediction(top5, served["model_precision"], served["model_version"], threshold, expected)


def loads(body: bytes | str) -> Answer:
    """Read one answer body; raises BrokenAnswer for anything else."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BrokenAnswer(f"the answer is not JSON: {body[:200]!r}") from exc
    return from_json(doc)


def leading_error(text: str) -> ErrorRecord | None:
    """The error record at the start of an error body. The inference toolkit appends a traceback to
    the handler's message, so the record is followed by other text."""
    try:
        doc, _ = json.JSONDecoder().raw_decode(text.strip())
        answer = from_json(doc)
    except (ValueError, BrokenAnswer):
        return None
    return answer if isinstance(answer, ErrorRecord) else None
