"""Model containers are supervised as SageMaker supervises an endpoint's instances, on top of
TorchServe's own care of its workers: a crashed or hung container costs one request, never the
endpoint; a dead worker costs its request a 507 and TorchServe starts another."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.aws import container as containers
from devstack.aws.container import SERVING_PYTHON, ContainerCannotRun, ModelContainer, Response
from devstack.aws.provision import model_environment
from tests.pipeline import images
from tests.stack.conftest import ONE_WORKER, StartStack, TakePort, wait_until

pytestmark = pytest.mark.slow  # serves a trained model


@pytest.fixture
def container(trained: tuple[Path, dict[str, object]], tmp_path: Path) -> Iterator[ModelContainer]:
    environment = {**model_environment(), **ONE_WORKER}
    started = ModelContainer(trained[0], environment, tmp_path / "container.log", timeout_s=3).start()
    yield started
    started.stop()


def classified(response: Response) -> bool:
    return response.status == 200 and "class_name" in json.loads(response.body)


def test_a_crashed_container_is_replaced_on_the_next_request(container: ModelContainer) -> None:
    assert classified(container.invoke(images.jpeg(), "image/jpeg"))
    # WHEN the container's PID 1 dies (an instance failure)
    instance = container.instance
    assert instance is not None and container.kill() is not None
    assert wait_until(lambda: not instance.alive, timeout_s=10)
    # THEN the next request meets a new container, once its workers are READY
    assert classified(container.invoke(images.jpeg(), "image/jpeg"))
    assert container.replacements == 1 and len(container.startup_s) == 2


def test_a_container_whose_port_was_taken_starts_again_on_others(
    trained: tuple[Path, dict[str, object]], tmp_path: Path, take_port: TakePort
) -> None:
    taken = take_port(containers, 1)  # the metrics port, between free_ports() and TorchServe's bind
    started = ModelContainer(trained[0], {**model_environment(), **ONE_WORKER}, tmp_path / "container.log").start()
    try:
        assert classified(started.invoke(images.jpeg(), "image/jpeg"))
        assert taken and (tmp_path / "container.log").read_text().count("Address already in use") == 1
        assert started.replacements == 0 and len(started.startup_s) == 1  # a start that took two tries
    finally:
        started.stop()


def test_a_hung_container_is_killed_after_the_invocation_timeout(container: ModelContainer) -> None:
    instance = container.instance
    assert instance is not None
    hung = instance.pids
    for pid in hung:  # every process of the container stops answering
        os.kill(pid, signal.SIGSTOP)
    response = container.invoke(images.jpeg(), "image/jpeg")
    assert response.status == 500 and b"no answer after 3 s" in response.body
    assert not any(Path(f"/proc/{pid}").exists() for pid in hung)  # killed, not left running
    assert classified(container.invoke(images.jpeg(), "image/jpeg"))
    assert container.replacements == 1


# TorchServe's frontend logs this once it has written a request to a worker's socket (WorkerThread).
SENT_TO_WORKER = "Looping backend response at"


def test_a_worker_that_dies_mid_request_costs_that_request_a_507(container: ModelContainer) -> None:
    (worker,) = container.workers()
    os.kill(worker["host_pid"], signal.SIGSTOP)  # the worker holds the next request ...
    answered: list[Response] = []
    sent = container.log_path.read_text().count(SENT_TO_WORKER)
    request = threading.Thread(target=lambda: answered.append(container.invoke(images.jpeg(), "image/jpeg")))
    request.start()
    # TorchServe has handed it to the worker (on a loaded machine that took over the 1 s once waited here,
    # and a worker killed before it is answered 500, not 507)
    assert wait_until(lambda: container.log_path.read_text().count(SENT_TO_WORKER) > sent, timeout_s=30)
    os.kill(worker["host_pid"], signal.SIGKILL)  # ... and dies with it
    request.join()
    # THEN TorchServe answers that request 507, starts a new worker, and the container is not replaced
    assert answered[0].status == 507 and json.loads(answered[0].body)["message"] == "Worker died."
    assert wait_until(lambda: [w["status"] for w in container.workers()] == ["READY"], timeout_s=60)
    (restarted,) = container.workers()
    assert restarted["host_pid"] != worker["host_pid"]
    assert classified(container.invoke(images.jpeg(), "image/jpeg"))
    assert container.replacements == 0


def test_a_request_over_max_request_size_is_refused_before_the_handler_runs(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    """TorchServe's limit (TS_MAX_REQUEST_SIZE, 6,553,500 bytes unless set) answers 413 with an empty
    body; the handler never sees the request."""
    environment = {**model_environment(), **ONE_WORKER, "TS_MAX_REQUEST_SIZE": "100000"}
    log = tmp_path / "container.log"
    container = ModelContainer(trained[0], environment, log).start()
    try:

        def handled() -> int:  # requests that reached a worker, as TorchServe's worker logs them
            return log.read_text().count("Backend received inference")

        assert classified(container.invoke(images.jpeg(), "image/jpeg"))
        response = container.invoke(b"\xff" * 100_001, "image/jpeg")
        assert (response.status, response.body) == (413, b"")
        assert classified(container.invoke(images.jpeg(), "image/jpeg"))
        assert wait_until(lambda: handled() >= 2, timeout_s=10)
        time.sleep(0.5)
        assert handled() == 2  # the two images, not the request over the limit
    finally:
        container.stop()


def test_a_checkout_under_tmp_with_a_space_in_its_path_serves(
    trained: tuple[Path, dict[str, object]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The container's own /tmp does not hide a serving environment that lies under this machine's /tmp
    (a checkout in /tmp once exited 127: python not found)."""
    checkout = Path(tempfile.mkdtemp(prefix="dog breed checkout ", dir="/tmp"))
    try:
        (checkout / ".venv-serving").symlink_to(SERVING_PYTHON.parent.parent)
        python = checkout / ".venv-serving" / "bin" / "python"
        log = tmp_path_factory.mktemp("logs") / "container.log"
        container = ModelContainer(trained[0], {**model_environment(), **ONE_WORKER}, log, python=python).start()
        try:
            assert classified(container.invoke(images.jpeg(), "image/jpeg"))
        finally:
            container.stop()
    finally:
        shutil.rmtree(checkout)


def test_a_container_this_machine_cannot_run_is_a_fault_of_the_stack(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    """Not a model that fails (which SageMaker reports as the job's or endpoint's failure): the entry
    cannot run the serving Python at all (exit 126), and the stack is told at once."""
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text("not a program")  # present, but not executable
    faults: list[Exception] = []
    container = ModelContainer(
        trained[0], model_environment(), tmp_path / "c.log", python=python, on_fault=faults.append
    )
    with pytest.raises(ContainerCannotRun, match="exited with 126") as raised:
        container.start()
    assert faults == [raised.value]
    assert "Permission denied" in str(raised.value)  # the log's last lines travel with the reason


@pytest.mark.slow  # starts the local stack
def test_the_endpoint_recovers_when_its_model_container_is_killed(start_stack: StartStack) -> None:
    stack = start_stack()
    runtime, endpoint = stack.client("sagemaker-runtime"), stack.parameters["EndpointName"]
    container = stack.endpoint_container
    assert container is not None

    def classify() -> dict[str, object]:
        response = runtime.invoke_endpoint(EndpointName=endpoint, Body=images.jpeg(160, 120), ContentType="image/jpeg")
        return dict(json.loads(response["Body"].read()))

    assert "class_name" in classify()
    # WHEN the endpoint's container process is killed (an instance failure)
    instance = container.instance
    assert instance is not None and container.kill() is not None
    assert wait_until(lambda: not instance.alive, timeout_s=10)
    # THEN the next requests are answered by a replacement container
    for _ in range(3):
        assert "class_name" in classify()
    assert container.replacements == 1
