"""Many AWS calls at once: boto3 clients are thread-safe, and a Lambda function spends most of a
call waiting on the network. THREADS calls in flight at a time (botocore's connection pool holds 10
by default; the clients are made with room for this many, clients.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

THREADS = 16


def concurrently(call: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """call(item) for each item, THREADS at a time; the results in order. The first error raises."""
    if len(items) <= 1:
        return [call(item) for item in items]
    with ThreadPoolExecutor(min(THREADS, len(items))) as pool:
        return list(pool.map(call, items))
