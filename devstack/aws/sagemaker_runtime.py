"""A local SageMaker runtime: answers InvokeEndpoint (`POST /endpoints/{name}/invocations`) by
running model/serving/inference.py in a model container (devstack.aws.container).

Errors come back as SageMaker returns them, so botocore raises what it raises on AWS: an unknown
endpoint is a 400 ValidationError, a container 4xx/5xx is a 424 ModelError carrying
OriginalStatusCode and OriginalMessage, and a request over the endpoint's MaxConcurrency is a 400
ThrottlingException."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import answers
from devstack.aws.account import ACCOUNT, arn
from devstack.aws.iam import CallRecorder, invoke_endpoint_call, principal_of

Answer = tuple[int, dict[str, str], bytes]
# (body, content type, accept) -> (status, content type, body), as the container answers
Invoke = Callable[[bytes, str, str], tuple[int, str, bytes]]


def error(status: int, error_type: str, message: str, **fields: Any) -> Answer:
    body = json.dumps({"message": message, **fields}).encode()
    return status, {"x-amzn-ErrorType": error_type, "Content-Type": "application/json"}, body


def model_error(endpoint: str, original_status: int, original_message: str) -> Answer:
    return error(
        424,
        "ModelError",
        f"Received {'client' if original_status < 500 else 'server'} error ({original_status}) from primary "
        f'with message "{original_message}".',
        OriginalStatusCode=original_status,
        OriginalMessage=original_message,
        LogStreamArn=arn("logs", f"log-group:/aws/sagemaker/Endpoints/{endpoint}"),
    )


class LocalHTTPServer(ThreadingHTTPServer):
    """The local stack's HTTP servers: a thread per connection, quiet when a client goes away."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client closing its keep-alive is normal
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def serve_in_thread(self, name: str) -> None:
        threading.Thread(target=self.serve_forever, name=name, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class RuntimeServer:
    """Serves endpoints on 127.0.0.1; `endpoints` maps an endpoint name to its container."""

    def __init__(
        self,
        endpoints: dict[str, Invoke],
        *,
        max_concurrency: int = 5,
        port: int = 0,
        recorder: CallRecorder | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.recorder = recorder  # InvokeEndpoint calls, by caller
        self.answered: dict[str, int] = {}  # endpoint -> requests that reached its container
        self.images: dict[str, int] = {}  # endpoint -> images in those requests (a JSON Lines request's records)
        self.data_bytes: dict[str, int] = {}  # endpoint -> bytes in and out (SageMaker bills data processed)
        self._count = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._throttled_until = 0.0
        self._server = LocalHTTPServer(("127.0.0.1", port), self._handler_class())

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> RuntimeServer:
        self._server.serve_in_thread("sagemaker-runtime")
        return self

    def stop(self) -> None:
        self._server.close()

    def throttle(self, seconds: float) -> None:
        """Answer every request with ThrottlingException for a while, as an endpoint over its quota does."""
        self._throttled_until = time.monotonic() + seconds

    def answer(self, endpoint: str, body: bytes, content_type: str, accept: str) -> Answer:
        container = self.endpoints.get(endpoint)
        if container is None:
            return error(400, "ValidationError", f"Endpoint {endpoint} of account {ACCOUNT} not found.")
        if time.monotonic() < self._throttled_until:
            return error(400, "ThrottlingException", "Rate exceeded")
        if not self._slots.acquire(blocking=False):
            return error(400, "ThrottlingException", "Rate exceeded: the endpoint is at its MaxConcurrency")
        try:
            multi = content_type == answers.JSON_LINES
            images = sum(1 for line in body.splitlines() if line.strip()) if multi else 1
            with self._count:
                self.answered[endpoint] = self.answered.get(endpoint, 0) + 1
                self.images[endpoint] = self.images.get(endpoint, 0) + images
            status, response_type, payload = container(body, content_type, accept)
            with self._count:
                self.data_bytes[endpoint] = self.data_bytes.get(endpoint, 0) + len(body) + len(payload)
        finally:
            self._slots.release()
        if status != 200:
            return model_error(endpoint, status, payload.decode(errors="replace"))
        return 200, {"Content-Type": response_type}, payload

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # keep-alive without Nagle's 40 ms stalls

            def do_POST(self) -> None:
                parts = self.path.strip("/").split("/")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if len(parts) == 3 and parts[0] == "endpoints" and parts[2] == "invocations":
                    if runtime.recorder is not None:
                        runtime.recorder.record([invoke_endpoint_call(principal_of(dict(self.headers)), parts[1])])
                    status, headers, payload = runtime.answer(
                        parts[1], body, self.headers.get("Content-Type", ""), self.headers.get("Accept", "")
                    )
                else:
                    status, headers, payload = error(404, "UnknownOperationException", f"no route for {self.path}")
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
