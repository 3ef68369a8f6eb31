"""Run a transform job recorded in moto with devstack's transform runner and a fake model container."""

from __future__ import annotations

from typing import Any

import answers
from devstack.aws.transform import TransformRunner
from tests.fakes.sagemaker_runtime import model_answer


class FakeContainer:
    """Answers like model/serving/inference.py; with BAD_INPUT_POLICY=record a bad image is a 200 error record.
    A request whose body is `fail_for` gets a server error, as a crashing model would. For the fast tests
    of tests/pipeline: it neither starts nor runs the handler, and has none of TorchServe's limits (413,
    507, workers); the stack tests run jobs on real model containers (devstack.aws.container)."""

    def __init__(self, environment: dict[str, str], fail_for: bytes | None) -> None:
        self.record_errors = environment.get("BAD_INPUT_POLICY") == "record"
        self.fail_for = fail_for

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]:
        if content_type == answers.JSON_LINES:  # many records: an answer line each
            lines = []
            for line in body.split(b"\n"):
                record_id, image = answers.loads_record(line)
                if image == self.fail_for:
                    return 500, "text/plain", b"worker died"
                lines.append(answers.dumps_line(record_id, model_answer(image, "application/x-image")[1]))
            return 200, answers.JSON_LINES, "\n".join(lines).encode()
        if body == self.fail_for:
            return 500, "text/plain", b"worker died"
        status, answer = model_answer(body, content_type)
        return (200 if self.record_errors else status), "application/json", answers.dumps(answer).encode()

    def stop(self) -> None:
        pass

    def kill(self) -> int | None:
        return None


def run_transform_job(clients: dict[str, Any], name: str, *, fail_for: bytes | None = None) -> dict[str, Any]:
    """Write the job's outputs and return its "Transform Job State Change" event."""
    runner = TransformRunner(
        clients["sagemaker"],
        clients["s3"],
        lambda model_name, environment, job_name: FakeContainer(environment, fail_for),
        publish=lambda event: None,
    )
    return runner.execute(name)
