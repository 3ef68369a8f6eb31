"""The local stack, started per test from a model.tar.gz written by model/training/train.py."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from devstack.aws.container import pack_model
from devstack.aws.stack import SharedAccount, Stack, StackOptions

FAST = {"BatchingWindowSeconds": "1", "GatherWindowSeconds": "1"}  # template parameters: tests need not wait
ONE_WORKER = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}


@pytest.fixture(scope="session")
def model_archive(trained: tuple[Path, dict[str, object]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pack_model(trained[0], tmp_path_factory.mktemp("artifact") / "model.tar.gz")


StartStack = Callable[..., Stack]


@pytest.fixture
def start_stack(model_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartStack]:
    """Start a stack with template parameter overrides; it is stopped after the test, and every AWS
    call its functions and its SageMaker made must be allowed by their roles in template.yaml."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
        monkeypatch.delenv(name, raising=False)  # the stack sets its own functions' environment
    started: list[Stack] = []

    def start(
        visibility_timeout_s: int | None = None,
        transform_quota: int | None = None,
        model_environment: dict[str, str] | None = None,
        as_deployed: bool = False,
        name: str = "local",
        account: SharedAccount | None = None,
        **parameters: str,
    ) -> Stack:
        # Unless `as_deployed`, the stack's model containers start one TorchServe worker, not one per
        # core: a worker's start (torch imported, the model loaded) is CPU that a test of the pipeline
        # does not need. The deployed setting also runs in make demo, make e2e, the soak and the
        # pipeline benchmark.
        workers = {} if as_deployed else ONE_WORKER
        options = StackOptions(
            model_archive=model_archive,
            workdir=tmp_path / ("stack" if name == "local" else f"stack-{name}"),
            parameters={**FAST, **parameters},
            visibility_timeout_s=visibility_timeout_s,
            transform_quota=transform_quota,
            model_environment={**workers, **(model_environment or {})},
            name=name,
            account=account,
        )
        started.append(Stack(options).start())
        return started[-1]

    yield start
    for stack in started:
        stack.stop()
    for stack in started:  # least privilege, by use: every call the test's traffic made, against its role
        denied = stack.permissions().denied
        assert not denied, f"calls their role in template.yaml does not allow: {[f'{r}: {c}' for r, c in denied]}"


TakePort = Callable[[ModuleType, int], list[int]]


@pytest.fixture
def take_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[TakePort]:
    """`take_port(module, which)`: the `which`th port of the module's next free_ports() call is taken,
    as another program may take it between the choice and the server's bind; returns the ports taken."""
    taken: list[socket.socket] = []

    def take(module: ModuleType, which: int) -> list[int]:
        choose: Callable[[int], list[int]] = module.free_ports
        ports: list[int] = []

        def free_ports(count: int) -> list[int]:
            chosen = choose(count)
            if not ports:
                thief = socket.socket()
                thief.bind(("127.0.0.1", chosen[which]))
                thief.listen()
                taken.append(thief)
                ports.append(chosen[which])
            return chosen

        monkeypatch.setattr(module, "free_ports", free_ports)
        return ports

    yield take
    for thief in taken:
        thief.close()


def upload(stack: Stack, files: dict[str, bytes]) -> dict[str, str]:
    return stack.upload(files, threads=1)  # in order


def outcomes(stack: Stack, etags: dict[str, str], timeout_s: float = 90) -> dict[str, dict[str, Any]]:
    return stack.wait_for_outcomes(etags, timeout_s)


def queue_is_empty(stack: Stack, queue_url: str) -> bool:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return all(value == "0" for value in attributes.values())


def wait_until(condition: Callable[[], bool], timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return condition()
