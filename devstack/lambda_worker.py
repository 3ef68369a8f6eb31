"""One Lambda execution environment: imports the function's handler from its code directory and
answers invocations, one JSON line each, until its stdin closes.

    python devstack/lambda_worker.py <code_dir> <module.function> <function ARN>

Its environment is the function's, as template.yaml sets it (built by devstack.lambda_runtime);
what the handler prints (Powertools' JSON logs and EMF metrics) goes to stderr, the log file."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that Powertools and our handlers read."""

    function_name: str = "local-function"
    invoked_function_arn: str = ""  # the runtime passes the function's ARN
    timeout_s: float = 120.0
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _started: float = field(default_factory=time.monotonic)

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self._started)) * 1000))


def main() -> None:
    code_dir, handler_path, function_arn = sys.argv[1:4]
    sys.path[0] = code_dir  # the task root, in place of this script's folder
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    module_name, _, function_name = handler_path.rpartition(".")
    handler = getattr(importlib.import_module(module_name), function_name)
    name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    timeout_s = float(os.environ["AWS_LAMBDA_FUNCTION_TIMEOUT"])
    memory_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    for line in sys.stdin:
        context = LambdaContext(name, function_arn, timeout_s, memory_mb)
        request_id = context.aws_request_id
        answer: dict[str, Any]
        try:
            answer = {"ok": True, "result": handler(json.loads(line), context), "request_id": request_id}
        except Exception as exc:
            traceback.print_exc()  # to the log, as Lambda logs an unhandled error
            answer = {"ok": False, "errorType": type(exc).__name__, "errorMessage": str(exc), "request_id": request_id}
        print(json.dumps(answer, default=str), file=answers, flush=True)


if __name__ == "__main__":
    main()
