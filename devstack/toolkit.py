"""Serve a model directory through SageMaker's PyTorch inference toolkit, in-process.

The toolkit (`sagemaker-pytorch-inference`, as the PyTorch inference containers pin it) normally
runs inside TorchServe. Here its HandlerService is driven directly, with a small stand-in for
TorchServe's request context: the same code path (module import from <model_dir>/code, model_fn,
input_fn / predict_fn / output_fn, error-to-status mapping) without a JVM.

As a script it serves requests in a clean process whose only import path for the model code is
the artifact's code/ directory, exactly as the container sees it:

    PYTHONPATH=<model_dir>/code python devstack/toolkit.py <model_dir> < requests.jsonl > responses.jsonl
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes


class _RequestProcessor:
    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def get_request_properties(self) -> dict[str, str]:
        return self._headers


@dataclass
class _Context:
    """The parts of TorchServe's Context that the toolkit uses."""

    model_dir: str
    headers: dict[str, str]
    model_name: str = "model"
    status: int = 200
    phrase: str = "OK"
    content_type: str = "application/json"
    system_properties: dict[str, Any] = field(init=False)
    request_processor: list[_RequestProcessor] = field(init=False)

    def __post_init__(self) -> None:
        self.system_properties = {"model_dir": self.model_dir, "gpu_id": None}
        self.request_processor = [_RequestProcessor(self.headers)]

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type = value

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status, self.phrase = code, phrase


class ToolkitHost:
    """One model loaded by the toolkit's HandlerService; `invoke` is one /invocations request."""

    def __init__(self, model_dir: Path) -> None:
        code_dir = str(model_dir / "code")
        if code_dir not in sys.path:  # what the container's PYTHONPATH does for its worker
            sys.path.insert(0, code_dir)
        from sagemaker_pytorch_serving_container.handler_service import HandlerService

        self.model_dir = str(model_dir)
        self.service = HandlerService()
        self.service.initialize(_Context(self.model_dir, {}))

    def invoke(self, body: bytes, content_type: str, accept: str = "application/json") -> Response:
        context = _Context(self.model_dir, {"Content-Type": content_type, "Accept": accept})
        (result,) = self.service.handle([{"body": bytearray(body)}], context)
        payload = result if isinstance(result, bytes) else str(result).encode()
        return Response(context.status, context.content_type, payload)


def main() -> None:
    """Serve JSON-lines requests {"body_b64", "content_type", "accept"} from stdin; {"ping": true}
    is the health check, answered once the model is loaded.

    Answers go to stdout; anything else the model code prints goes to stderr (the container log)."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    host = ToolkitHost(Path(sys.argv[1]))
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("ping"):
            print(json.dumps({"status": 200}), file=answers, flush=True)
            continue
        response = host.invoke(
            base64.b64decode(request["body_b64"]), request["content_type"], request.get("accept", "application/json")
        )
        answer = {"status": response.status, "content_type": response.content_type, "body": response.body.decode()}
        print(json.dumps(answer), file=answers, flush=True)


if __name__ == "__main__":
    main()
