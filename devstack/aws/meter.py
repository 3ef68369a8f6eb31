"""Count the AWS requests the local stack serves, as AWS bills them: a WSGI layer around moto.

S3 by tier (GET and HEAD; PUT, POST, COPY and LIST), SQS requests in 64 KB chunks, DynamoDB read and
write request units from the items' sizes (a write also costs its size again in each global secondary
index the item is in: DynamoDB developer guide, "Global secondary indexes", provisioned throughput
considerations), and every other service's calls by operation. Requests signed with the access key
OBSERVER (a user uploading and watching) are not counted.

Not counted: the second index write when a write moves an item from one index key to another (a
delete and a put), and an UpdateItem's size (each is counted one unit: ours update small items)."""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

SQS_CHUNK = 64 * 1024
OBSERVER = "observer"  # an access key id moto accepts like any other


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it, from its wire form ({"name": {"S": "..."}, ...})."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    ((kind, content),) = value.items()
    if kind in ("S", "B"):
        return len(str(content).encode())
    if kind == "N":
        return math.ceil(len(str(content).lstrip("-").replace(".", "")) / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + item_size(content)
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in content)
    return len(json.dumps(content))  # sets: close enough for a cost estimate


def index_hash_keys(template: dict[str, Any]) -> list[str]:
    """The hash key of each global secondary index of the predictions table that projects every
    attribute: a write of an item that has it is written to that index too."""
    table = template["Resources"]["PredictionsTable"]["Properties"]
    return [
        next(key["AttributeName"] for key in index["KeySchema"] if key["KeyType"] == "HASH")
        for index in table.get("GlobalSecondaryIndexes", [])
        if index["Projection"]["ProjectionType"] == "ALL"
    ]


class RequestMeter:
    def __init__(self, app: WsgiApp, index_keys: Iterable[str] = ()) -> None:
        """`index_keys`: the hash key of each global secondary index that projects all attributes."""
        self.app = app
        self.index_keys = tuple(index_keys)
        self.counts: Counter[str] = Counter()
        # the time moto took to answer, by call ("DynamoDB_20120810.PutItem", "s3:GET")
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = b""
        if length:  # read it to measure, then hand moto the same bytes
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
        if f"Credential={OBSERVER}/" in environ.get("HTTP_AUTHORIZATION", ""):
            return self.app(environ, start_response)
        usage = self.usage(environ, body, self.index_keys)
        started = time.perf_counter()
        answer = self.app(environ, start_response)
        elapsed = time.perf_counter() - started
        with self._lock:
            self.counts.update(usage)
            self.seconds[environ.get("HTTP_X_AMZ_TARGET") or min(usage, default="other")] += elapsed
        return answer

    def reset(self) -> Counter[str]:
        """What was counted so far; counting starts again from zero."""
        with self._lock:
            counts, self.counts, self.seconds = self.counts, Counter(), defaultdict(float)
        return counts

    @staticmethod
    def usage(environ: dict[str, Any], body: bytes, index_keys: Iterable[str] = ()) -> Counter[str]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api"):
            return Counter()
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target:  # S3's REST API
            method = environ.get("REQUEST_METHOD", "GET")
            listing = method == "GET" and path.strip("/").count("/") == 0
            return Counter({"s3:GET" if method in ("GET", "HEAD") and not listing else "s3:PUT": 1})
        service, operation = target.split(".", 1)
        if service.startswith("AmazonSQS"):
            return Counter({"sqs:request": max(1, math.ceil(len(body) / SQS_CHUNK))})
        if service.startswith("DynamoDB"):
            return Counter({f"dynamodb:{operation}": 1, **_capacity_units(operation, body, index_keys)})
        return Counter({f"{service.lower()}:{operation}": 1})


def _capacity_units(operation: str, body: bytes, index_keys: Iterable[str]) -> dict[str, int]:
    request = json.loads(body or b"{}")
    if operation == "PutItem":
        item = request.get("Item", {})
        units = max(1, math.ceil(item_size(item) / 1024))
        indexes = sum(key in item for key in index_keys)
        return {"dynamodb:WRU": units * (1 + indexes), "dynamodb:index_WRU": units * indexes}
    if operation == "UpdateItem":
        return {"dynamodb:WRU": 1}
    if operation == "BatchGetItem":  # strongly consistent: one unit per item up to 4 KB (ours are smaller)
        return {"dynamodb:RRU": sum(len(table["Keys"]) for table in request.get("RequestItems", {}).values())}
    if operation in ("GetItem", "Query", "Scan"):
        return {"dynamodb:RRU": 1}
    return {}
