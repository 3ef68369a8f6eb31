"""A stand-in for the SageMaker runtime API that speaks the real InvokeEndpoint contract over HTTP.

boto3's real sagemaker-runtime client talks to it through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, so
error parsing (ModelError with OriginalStatusCode, HTTP 400 ThrottlingException) is botocore's own.
It answers like an endpoint running model/inference.py: a prediction for a decodable image, a 4xx
JSON error record for a bad one. Tests script faults with `fail_next()`.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

BREEDS = [f"{i:03d}.Breed_{i:03d}" for i in range(1, 134)]
IMAGE_TYPES = {"image/jpeg", "image/png", "application/x-image"}


def fake_prediction(body: bytes) -> dict[str, Any]:
    """A deterministic answer in the handler's format, chosen by the image's hash."""
    index = int(hashlib.sha256(body).hexdigest(), 16) % len(BREEDS)
    order = [(index + k) % len(BREEDS) for k in range(5)]
    probs = [0.6, 0.2, 0.1, 0.06, 0.04]
    top5 = [
        {"label": BREEDS[i][:3], "class_name": BREEDS[i][4:], "probability": p}
        for i, p in zip(order, probs, strict=True)
    ]
    return {"predicted_label": top5[0]["label"], "class_name": top5[0]["class_name"], "confidence": 0.6, "top5": top5}


def model_answer(body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    """What model/inference.py answers: (200, prediction) or (4xx, error record)."""
    if content_type not in IMAGE_TYPES:
        return 415, {"error": {"code": "UnsupportedContentType", "message": f"cannot classify {content_type}"}}
    try:
        with Image.open(io.BytesIO(body)) as image:
            image.load()
    except Exception as exc:
        return 400, {"error": {"code": "InvalidImage", "message": f"cannot decode the image: {exc}"}}
    return 200, fake_prediction(body)


class FakeRuntime:
    def __init__(self, endpoints: set[str]) -> None:
        self.endpoints = endpoints
        self.calls: list[dict[str, Any]] = []
        self._faults: deque[str] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeRuntime:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._faults.clear()

    def fail_next(self, *faults: str) -> None:
        """Queue faults for the next calls: 'throttle', 'cold' (ModelError 503), 'crash' (ModelError 500)."""
        with self._lock:
            self._faults.extend(faults)

    def fail_always(self, fault: str, times: int = 1000) -> None:
        self.fail_next(*[fault] * times)

    # -- HTTP -------------------------------------------------------------------------------

    def _answer(self, endpoint: str, content_type: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.calls.append({"endpoint": endpoint, "content_type": content_type, "size": len(body)})
            fault = self._faults.popleft() if self._faults else None
        if endpoint not in self.endpoints:
            return _error(
                400, "ValidationError", {"message": f"Endpoint {endpoint} of account 123456789012 not found."}
            )
        if fault == "throttle":
            return _error(400, "ThrottlingException", {"message": "Rate exceeded"})
        if fault in ("cold", "crash"):
            status = 503 if fault == "cold" else 500
            return _model_error(status, "worker died" if fault == "crash" else "model not loaded yet")
        status, answer = model_answer(body, content_type)
        if status != 200:  # the inference toolkit appends the traceback to the handler's message
            return _model_error(status, json.dumps(answer) + "\nTraceback (most recent call last):\n  ...")
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                parts = self.path.strip("/").split("/")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if len(parts) != 3 or parts[0] != "endpoints" or parts[2] != "invocations":
                    status, headers, payload = _error(404, "UnknownOperationException", {"message": self.path})
                else:
                    status, headers, payload = runtime._answer(parts[1], self.headers.get("Content-Type", ""), body)
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _error(status: int, error_type: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"x-amzn-ErrorType": error_type, "Content-Type": "application/json"}, json.dumps(body).encode()


def _model_error(original_status: int, original_message: str) -> tuple[int, dict[str, str], bytes]:
    return _error(
        424,
        "ModelError",
        {
            "OriginalStatusCode": original_status,
            "OriginalMessage": original_message,
            "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/fake",
            "message": f'Received client error ({original_status}) from primary with message "{original_message}".',
        },
    )
