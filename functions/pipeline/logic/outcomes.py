"""The pipeline's vocabulary: an image reference, a prediction, and the outcome recorded for it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pipeline.logic.errors import RejectedImage, TransientError


class Status(StrEnum):
    PENDING = "PENDING"  # in a transform job that has not finished
    CLASSIFIED = "CLASSIFIED"
    REJECTED = "REJECTED"  # bad input: final for this content
    FAILED = "FAILED"  # the system failed: a later delivery of the same content tries again


# Outcomes that settle an image's current content: a duplicate event for that content is skipped.
FINAL_STATUSES = frozenset({Status.CLASSIFIED, Status.REJECTED})


class Mode(StrEnum):
    SERVERLESS = "serverless"
    BATCH = "batch"
    AUTO = "auto"


@dataclass(frozen=True)
class ImageRef:
    """One uploaded object version, as an S3 event notification names it."""

    bucket: str
    key: str
    etag: str
    size: int
    uploaded_at: datetime
    message_id: str = ""
    receive_count: int = 1

    @property
    def image_id(self) -> str:
        return f"{self.bucket}/{self.key}"


@dataclass(frozen=True)
class Candidate:
    label: str
    class_name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    label: str
    class_name: str
    confidence: float
    top5: tuple[Candidate, ...]


@dataclass(frozen=True)
class Outcome:
    status: Status
    mode: Mode
    prediction: Prediction | None = None
    reason: str | None = None
    error_code: str | None = None
    endpoint_name: str | None = None
    job_name: str | None = None
    model_name: str | None = None
    inference_ms: float | None = None


def parse_model_response(body: bytes) -> Prediction:
    """Read one answer of model/inference.py: a prediction, or a per-image error record.

    Raises RejectedImage for an error record (the handler judged the image bad) and
    TransientError for a body that breaks the contract (a server-side fault)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TransientError(f"the model answered a body that is not JSON: {body[:200]!r}") from exc
    if not isinstance(doc, dict):
        raise TransientError(f"the model answered {type(doc).__name__}, not a JSON object")
    if "error" in doc:
        error = doc["error"] or {}
        raise RejectedImage(str(error.get("code", "InvalidImage")), str(error.get("message", "rejected by the model")))
    try:
        return Prediction(
            label=str(doc["predicted_label"]),
            class_name=str(doc["class_name"]),
            confidence=float(doc["confidence"]),
            top5=tuple(Candidate(str(c["label"]), str(c["class_name"]), float(c["probability"])) for c in doc["top5"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TransientError(f"the model's answer lacks a field of the prediction contract: {exc}") from exc
