"""Model containers for the handler tests: the trained artifact served by the inference image's
serving stack (TorchServe 0.12, the toolkit, torch 2.6 from .venv-serving; devstack.aws.container), with
the environment template.yaml gives the SageMaker model. One container per environment and module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack.aws.container import ModelContainer
from devstack.aws.provision import model_environment

Serve = Callable[..., ModelContainer]


@pytest.fixture(scope="module")
def serve(trained: tuple[Path, dict[str, object]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """serve(**environment): a started container of the trained model, the template's model
    environment updated with `environment` (as a transform job's Environment updates it)."""
    started: dict[tuple[tuple[str, str], ...], ModelContainer] = {}
    logs = tmp_path_factory.mktemp("containers")

    def start(**environment: str) -> ModelContainer:
        key = tuple(sorted(environment.items()))
        if key not in started:
            log = logs / f"container-{len(started) + 1}.log"
            started[key] = ModelContainer(trained[0], {**model_environment(), **environment}, log).start()
        return started[key]

    yield start
    for container in started.values():
        container.stop()


@pytest.fixture(scope="module")
def endpoint_container(serve: Serve) -> ModelContainer:
    """As the serverless endpoint serves the model: bad input is a 4xx."""
    return serve()


@pytest.fixture(scope="module")
def job_container(serve: Serve) -> ModelContainer:
    """As a transform job serves it: the pipeline's jobs set BAD_INPUT_POLICY=record."""
    return serve(BAD_INPUT_POLICY="record")
