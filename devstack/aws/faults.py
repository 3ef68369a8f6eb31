"""Faults for the local stack, injected where AWS would show them: an HTTP proxy in front of moto
for one service, through which the functions reach it (an AWS_ENDPOINT_URL_<SERVICE> variable, so
the code under test does not change), answering as the service does when it throttles, or late;
and always as late as the service is (`latency_s` a request: LATENCY_S, AWS's published figures)."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from devstack.aws.sagemaker_runtime import LocalHTTPServer
from infra import limits

# Hop-by-hop headers are the proxy's own business (RFC 9110); the rest pass through unchanged.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}

# DynamoDB's answer when a table is over its throughput: botocore's standard mode retries it.
DYNAMODB_THROTTLED = (
    400,
    {"Content-Type": "application/x-amz-json-1.0"},
    b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
    b'"message":"Rate of requests exceeds the allowed throughput."}',
)


# What one request to each service takes in the Region, from infra/limits.py (its sources there).
LATENCY_S = {"s3": limits.S3_SMALL_REQUEST_S, "sqs": limits.SQS_REQUEST_S, "dynamodb": limits.DYNAMODB_REQUEST_S}


class FaultProxy:
    def __init__(self, target: str, latency_s: float = 0.0) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.requests = 0
        self.faulted = 0
        self._throttled_until = 0.0
        self._delayed_until = 0.0
        self._delay_s = 0.0
        self.latency_s = latency_s
        self._lock = threading.Lock()
        self._server = LocalHTTPServer(("127.0.0.1", 0), self._handler_class())

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FaultProxy:
        self._server.serve_in_thread("fault-proxy")
        return self

    def stop(self) -> None:
        self._server.close()

    def throttle(self, seconds: float) -> None:
        """Refuse every request with DynamoDB's throttling error for a while."""
        self._throttled_until = time.monotonic() + seconds

    def delay(self, seconds: float, by_s: float) -> None:
        """Hold every request for `by_s` before passing it on, for a while."""
        self._delay_s = by_s
        self._delayed_until = time.monotonic() + seconds

    def _fault(self) -> tuple[int, dict[str, str], bytes] | None:
        """The answer to give instead of the service's, if a throttle is on; waits out a delay."""
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            if now < self._throttled_until or now < self._delayed_until:
                self.faulted += 1
        if now < self._throttled_until:
            return DYNAMODB_THROTTLED
        if now < self._delayed_until:
            time.sleep(self._delay_s)
        if self.latency_s:
            time.sleep(self.latency_s)
        return None

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(*self.target, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            kept = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
            return response.status, kept, answer
        finally:
            connection.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                status, answer_headers, answer = proxy._fault() or proxy._forward(
                    self.command, self.path, headers, body
                )
                self.send_response(status)
                for key, value in {**answer_headers, "Content-Length": str(len(answer))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay  # noqa: N815 - http.server's names

            def log_message(self, *args: object) -> None:
                pass

        return Handler
