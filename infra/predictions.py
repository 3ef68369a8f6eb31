"""The predictions table as its users read it: one image's record, many by key, and the newest of a
breed or of the problems, through the key and the two indexes template.yaml declares. Used by
cli.query (and redrive, reclassify), and by the local stack and its workloads to watch outcomes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

_deserialize = TypeDeserializer().deserialize


def plain(value: Any) -> Any:
    """A deserialized value (numbers as Decimal) as plain Python values (numbers as int or float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def record(raw: dict[str, Any]) -> dict[str, Any]:
    """An item as DynamoDB's low-level API returns it, as plain Python values (numbers as int or float)."""
    return {key: plain(_deserialize(value)) for key, value in raw.items()}


class Predictions:
    """Reads of the predictions table, through its key and its two indexes (see template.yaml)."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self.dynamodb = dynamodb
        self.table = table

    def image(self, bucket: str, key: str) -> dict[str, Any] | None:
        raw = self.dynamodb.get_item(TableName=self.table, Key={"image_id": {"S": f"{bucket}/{key}"}}).get("Item")
        return record(raw) if raw else None

    def images(self, bucket: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The records of many images by key (BatchGetItem, 100 at a time); missing ones are absent."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 100):
            request = {self.table: {"Keys": [{"image_id": {"S": f"{bucket}/{k}"}} for k in keys[start : start + 100]]}}
            while request:
                response = self.dynamodb.batch_get_item(RequestItems=request)
                for raw in response["Responses"].get(self.table, []):
                    item = record(raw)
                    found[item["key"]] = item
                request = response.get("UnprocessedKeys") or {}
        return found

    def breed(self, breed: str, limit: int) -> list[dict[str, Any]]:
        return list(self._newest_first("by-breed", "breed", breed, limit))

    def problems(self, statuses: Sequence[str], limit: int) -> list[dict[str, Any]]:
        found = [
            item for status in statuses for item in self._newest_first("by-problem", "problem_status", status, limit)
        ]
        return sorted(found, key=lambda item: str(item["updated_at"]), reverse=True)[:limit]

    def _newest_first(self, index: str, attribute: str, value: str, limit: int) -> Iterator[dict[str, Any]]:
        pages = self.dynamodb.get_paginator("query").paginate(
            TableName=self.table,
            IndexName=index,
            KeyConditionExpression="#k = :v",
            ExpressionAttributeNames={"#k": attribute},
            ExpressionAttributeValues={":v": {"S": value}},
            ScanIndexForward=False,  # the index sorts by updated_at
            PaginationConfig={"MaxItems": limit},
        )
        for page in pages:
            yield from (record(raw) for raw in page["Items"])
