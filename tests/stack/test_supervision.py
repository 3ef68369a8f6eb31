"""Model containers are supervised as SageMaker supervises an endpoint's instances: a crashed or
hung container costs one request, never the endpoint."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.container import ModelContainer
from tests.pipeline import images
from tests.stack.conftest import StartStack, wait_until

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "container_worker.py"


@pytest.fixture
def container(tmp_path: Path) -> Iterator[ModelContainer]:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    started = ModelContainer(
        model_dir, {}, tmp_path / "container.log", timeout_s=2, program=(sys.executable, str(FAKE))
    ).start()
    yield started
    started.stop()


def starts(tmp_path: Path) -> int:
    return len((tmp_path / "model" / "starts.log").read_text().splitlines())


def test_a_crashed_container_is_replaced_on_the_next_request(container: ModelContainer, tmp_path: Path) -> None:
    assert container.invoke(b"dog", "image/jpeg", "")[0] == 200
    # WHEN the container dies while serving a request
    status, _, body = container.invoke(b"crash", "image/jpeg", "")
    # THEN that request fails as a server error, and the next one meets a new container
    assert status == 500 and b"failed" in body
    assert container.invoke(b"dog", "image/jpeg", "")[0] == 200
    assert container.replacements == 1 and starts(tmp_path) == 2


def test_a_hung_container_is_killed_after_the_invocation_timeout(container: ModelContainer, tmp_path: Path) -> None:
    hung_pid = container.worker.pid if container.worker else None
    status, _, body = container.invoke(b"hang", "image/jpeg", "")
    assert status == 500 and b"no answer after 2 s" in body
    assert hung_pid is not None and not Path(f"/proc/{hung_pid}").exists()  # killed, not left running
    assert container.invoke(b"dog", "image/jpeg", "")[0] == 200
    assert container.replacements == 1 and starts(tmp_path) == 2


@pytest.mark.slow  # starts the local stack
def test_the_endpoint_recovers_when_its_model_container_is_killed(start_stack: StartStack) -> None:
    stack = start_stack()
    runtime, endpoint = stack.client("sagemaker-runtime"), stack.parameters["EndpointName"]
    container = stack.endpoint_container
    assert container is not None and container.worker is not None and container.worker.pid is not None

    def classify() -> dict[str, object]:
        response = runtime.invoke_endpoint(EndpointName=endpoint, Body=images.jpeg(160, 120), ContentType="image/jpeg")
        return dict(json.loads(response["Body"].read()))

    assert "class_name" in classify()
    # WHEN the endpoint's container process is killed (an instance failure)
    worker = container.worker
    os.kill(worker.pid, signal.SIGKILL)
    assert wait_until(lambda: not worker.alive, timeout_s=10)
    # THEN the next requests are answered by a replacement container
    for _ in range(3):
        assert "class_name" in classify()
    assert container.replacements == 1
