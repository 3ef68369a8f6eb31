"""Exponential backoff with full jitter for calls that fail transiently."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aws_lambda_powertools import Logger

logger = Logger(child=True)

T = TypeVar("T")
_sleep = time.sleep  # tests replace it to back off without waiting


@dataclass(frozen=True)
class Backoff:
    attempts: int = 4
    base_seconds: float = 0.2
    max_seconds: float = 5.0

    def call(self, fn: Callable[[], T], *, retry_on: Callable[[Exception], bool], what: str) -> T:
        """Call fn; on an error that retry_on accepts, wait and try again, up to `attempts` calls."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as exc:
                if attempt == self.attempts or not retry_on(exc):
                    raise
                delay = random.uniform(0, min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1)))
                logger.info("retrying", call=what, attempt=attempt, delay_s=round(delay, 3), error=str(exc))
                _sleep(delay)
        raise AssertionError("unreachable")
