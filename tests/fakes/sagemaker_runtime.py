"""A stand-in for the SageMaker runtime that speaks the real InvokeEndpoint contract over HTTP.

It is devstack's local runtime (same routes, same error shapes) with a fake container in place of
the model: boto3's real sagemaker-runtime client reaches it through
AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, so error parsing (ModelError with OriginalStatusCode, HTTP 400
ThrottlingException) is botocore's own. The fake container answers like model/serving/inference.py: a
prediction for a decodable image, a 4xx JSON error record (followed by a traceback, as the
inference toolkit sends it) for a bad one. Tests script faults with `fail_next()`.

It is for the fast tests of tests/pipeline only. What the real model container (devstack.aws.container)
does and it does not: run the handler, TorchServe's 413 for a body over max_request_size and 507 for
a worker that dies, cold starts, readiness, concurrency limited by workers. tests/model and
tests/stack serve the real one.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import deque
from typing import Any

from PIL import Image

import answers
from devstack.aws.sagemaker_runtime import Answer, RuntimeServer, error, model_error

BREEDS = [f"{i:03d}.Breed_{i:03d}" for i in range(1, 134)]
IMAGE_TYPES = {"image/jpeg", "image/png", "application/x-image"}
FAKE_PRECISION, FAKE_VERSION = "int8", "sha256:fa4efa4efa4efa4e"  # the network the fake says answered
# The review threshold the fake's answers carry (its top answer is 0.6 sure): none, as a model from before
# calibration; a test sets it (monkeypatch) to make every answer sure or unsure.
REVIEW: dict[str, float | None] = {"threshold": None, "expected_under_threshold": None}


def fake_prediction(body: bytes) -> answers.Prediction:
    """A deterministic prediction, chosen by the image's hash."""
    index = int(hashlib.sha256(body).hexdigest(), 16) % len(BREEDS)
    order = [(index + k) % len(BREEDS) for k in range(5)]
    probabilities = [0.6, 0.2, 0.1, 0.06, 0.04]
    return answers.Prediction(
        tuple(answers.Candidate(BREEDS[i][:3], BREEDS[i][4:], p) for i, p in zip(order, probabilities, strict=True)),
        model_precision=FAKE_PRECISION,
        model_version=FAKE_VERSION,
        threshold=REVIEW["threshold"],
        expected_under_threshold=REVIEW["expected_under_threshold"],
    )


def model_answer(body: bytes, content_type: str) -> tuple[int, answers.Answer]:
    """What model/serving/inference.py answers: (200, prediction) or (4xx, error record)."""
    if content_type not in IMAGE_TYPES:
        return 415, answers.ErrorRecord("UnsupportedContentType", f"cannot classify {content_type}")
    try:
        with Image.open(io.BytesIO(body)) as image:
            image.load()
    except Exception as exc:
        return 400, answers.ErrorRecord("InvalidImage", f"cannot decode the image: {exc}")
    return 200, fake_prediction(body)


def records_answer(body: bytes) -> str:
    """What the handler answers a JSON Lines request: a line per record, an error line for a bad image."""
    lines = []
    for line in body.splitlines():
        record_id, image = answers.loads_record(line)
        lines.append(answers.dumps_line(record_id, model_answer(image, "application/x-image")[1]))
    return "\n".join(lines)


def fake_container(body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]:
    if content_type == answers.JSON_LINES:
        return 200, answers.JSON_LINES, records_answer(body).encode()
    status, answer = model_answer(body, content_type)
    text = answers.dumps(answer)
    if status != 200:  # the inference toolkit appends the traceback to the handler's message
        text += "\nTraceback (most recent call last):\n  ..."
    return status, "application/json", text.encode()


class FakeRuntime(RuntimeServer):
    def __init__(self, endpoints: set[str]) -> None:
        super().__init__(dict.fromkeys(endpoints, fake_container), max_concurrency=50)
        self.calls: list[dict[str, Any]] = []
        self._faults: deque[str] = deque()
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._faults.clear()

    def fail_next(self, *faults: str) -> None:
        """Queue faults for the next calls: 'throttle' (HTTP 400 ThrottlingException), 'cold'
        (ModelError 503), 'crash' (ModelError 500); 'none' lets one call through."""
        with self._lock:
            self._faults.extend(faults)

    def fail_always(self, fault: str, times: int = 1000) -> None:
        self.fail_next(*[fault] * times)

    def answer(self, endpoint: str, body: bytes, content_type: str, accept: str) -> Answer:
        with self._lock:
            self.calls.append({"endpoint": endpoint, "content_type": content_type, "size": len(body)})
            fault = self._faults.popleft() if self._faults else None
        if fault == "throttle":
            return error(400, "ThrottlingException", "Rate exceeded")
        if fault in ("cold", "crash"):
            return model_error(endpoint, 503 if fault == "cold" else 500, "worker died")
        return super().answer(endpoint, body, content_type, accept)
