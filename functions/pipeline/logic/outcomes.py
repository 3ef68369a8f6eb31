"""The pipeline's vocabulary: an image reference, and the outcome recorded for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import answers
from answers import Prediction
from pipeline.logic.errors import RejectedImage, TransientError


class Status(StrEnum):
    PENDING = "PENDING"  # waiting for a transform job, or in one (lifecycle.py tells which)
    CLASSIFIED = "CLASSIFIED"
    REJECTED = "REJECTED"  # bad input: final for this content
    FAILED = "FAILED"  # the system failed: a later delivery of the same content tries again


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
    requested_at: datetime | None = None  # asked to be classified again (make reclassify): its wait starts then

    @property
    def image_id(self) -> str:
        return f"{self.bucket}/{self.key}"

    @property
    def waiting_since(self) -> datetime:
        """Since when the image waits for an answer: its upload, or the request to classify it again."""
        return self.requested_at or self.uploaded_at


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

    @property
    def needs_review(self) -> bool:
        """Recorded CLASSIFIED and marked for a person's review (see needs_review)."""
        return self.status is Status.CLASSIFIED and self.prediction is not None and needs_review(self.prediction)

    @property
    def detail_type(self) -> str | None:
        """The EventBridge detail-type a final outcome is published under (the table's stream, through
        the stack's pipe, publishes each record that carries one); None while the image waits."""
        if self.status is Status.PENDING:
            return None
        if self.needs_review:
            return "Image Needs Review"
        return f"Image {self.status.value.capitalize()}"  # Image Classified, Image Rejected, Image Failed


def needs_review(prediction: Prediction) -> bool:
    """The one rule of the review queue, for every mode and the reclassify path: an answer whose
    (calibrated) confidence is under its model's threshold needs a person's review. An answer with no
    threshold (a model without calibration, and no ConfidenceThreshold) needs none."""
    return prediction.threshold is not None and prediction.confidence < prediction.threshold


def read_model_answer(body: bytes) -> Prediction:
    """One answer of the model handler (see answers.py): its prediction.

    Raises RejectedImage for an error record (the handler judged the image bad) and
    TransientError for a body that breaks the contract (a server-side fault)."""
    try:
        answer = answers.loads(body)
    except answers.BrokenAnswer as exc:
        raise TransientError(f"the model's answer breaks the contract: {exc}") from exc
    if isinstance(answer, answers.ErrorRecord):
        raise RejectedImage(answer.code, answer.message)
    return answer
