"""The unit floor: pure logic and the handlers' rules over in-memory fakes. No test here may open a
network connection; each runs in milliseconds (`make unit`)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.logic.outcomes import ImageRef

BUCKET = "dogbreed-images-test"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a unit test opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


class Clock:
    """A clock that moves only when told: records get deterministic times."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def image_ref(
    key: str, etag: str = "e1", *, size: int = 1000, uploaded_at: datetime = T0, receive_count: int = 1
) -> ImageRef:
    return ImageRef(BUCKET, key, etag, size, uploaded_at, message_id=f"m-{key}", receive_count=receive_count)


RefFactory = Callable[..., ImageRef]
