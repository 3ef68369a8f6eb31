"""People's review of unsure answers, in the predictions table.

- The review queue: an outcome that needs review (outcomes.needs_review) carries `review`, one of
  REVIEW_SHARDS partition values, and is in the sparse index by-review, sorted by `confidence`:
  least confident first. The queue is spread over shards because one index partition takes 1,000
  writes a second (DynamoDB developer guide, "Service quotas": per-partition throughput) and a flood
  records faster than that (tests/unit/test_limits.py); a listing merges the shards.
- Labels: a person's breed for an image is an item of its own, `#label/<image id>` (a key no image
  can have: an image id starts with a bucket name), holding the ETag of the content it is for. Model
  writes never touch it, so a later answer for the same content (make reclassify) cannot overwrite
  it; a label of older content is shown as such and never exported. Label items are in by-review too,
  under `labelled`, which the export reads (and in no other index: the breed is `given_breed`).

Labelling is one transaction: the label item is written and the image's record leaves the queue,
only if the record is still of the content the person saw, CLASSIFIED.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer

from pipeline.adapters.aws_errors import AwsError, aws_call
from pipeline.adapters.dynamodb import NEEDS_REVIEW, REVIEW_SHARDS, DynamoPredictions, marshal, timestamp

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REVIEW_INDEX = "by-review"
LABELLED = "labelled"
LABEL_KEY = "#label/"
_deserialize = TypeDeserializer().deserialize
FOLDER = re.compile(r"^(\d{3})\.(\w+)$")  # a breed as the dataset's folders name it: 069.French_bulldog


def label_key(image_id: str) -> str:
    return LABEL_KEY + image_id


class LabelRefused(Exception):
    """A label that cannot be recorded: the message says why and what to do."""


@dataclass(frozen=True)
class Breed:
    label: str  # "069"
    name: str  # "French_bulldog"

    @property
    def folder(self) -> str:
        """The dataset's folder name for the breed: what the export writes and training reads."""
        return f"{self.label}.{self.name}"


def choose_breed(record: Mapping[str, Any], given: str | None) -> Breed:
    """The breed a person gives for an image: the model's answer (`given` None: accepted), a breed of
    the answer's top 5 by name or label, or any breed as its folder name (069.French_bulldog)."""
    if given is None:
        return Breed(str(record["label"]), str(record["breed"]))
    candidates = [Breed(str(c["label"]), str(c["breed"])) for c in record.get("top5", [])]
    for breed in candidates:
        if given in (breed.label, breed.name, breed.folder):
            return breed
    if match := FOLDER.match(given):
        return Breed(match.group(1), match.group(2))
    names = ", ".join(breed.folder for breed in candidates)
    raise LabelRefused(
        f"{given!r} is not one of the answer's top 5 ({names}); give another breed as the dataset names its "
        "folder, NNN.Breed_name (e.g. 069.French_bulldog)"
    )


class ReviewStore:
    """The review queue and the labels, in the predictions table."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def queue(self, limit: int) -> list[dict[str, Any]]:
        """Records that need review, least confident first (labelled ones left out)."""
        shards = [self._by_review(f"{NEEDS_REVIEW}{n}") for n in range(REVIEW_SHARDS)]
        merged = heapq.merge(*shards, key=lambda item: float(item["confidence"]))
        found: list[dict[str, Any]] = []
        while len(found) < limit and (chunk := list(itertools.islice(merged, limit))):
            # a labelled image comes back to the index when the same content is answered again (make
            # reclassify); its label still stands
            labels = self.labels([item["image_id"] for item in chunk])
            found += [item for item in chunk if labels.get(item["image_id"], {}).get("etag") != item["etag"]]
        return found[:limit]

    def labelled(self) -> Iterator[dict[str, Any]]:
        """Every label item (the export's input), least confident model answer first. Items are as
        TypeDeserializer gives them (numbers as Decimal), here and in every read of this store."""
        return self._by_review(LABELLED)

    def labels(self, image_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The label items of these images, by image id (missing ones absent)."""
        items = DynamoPredictions(self.client, self.table_name).read_items(label_key(i) for i in image_ids)
        return {item["of_image"]: item for item in items}

    def label(self, record: Mapping[str, Any], breed: Breed, by: str, now: datetime) -> dict[str, Any]:
        """Record `breed` for the content of `record` (an image's record as read), by `by`, and take the
        record out of the review queue. Raises LabelRefused where the record is no longer that content,
        CLASSIFIED."""
        if record.get("status") != "CLASSIFIED":
            status = record.get("status")
            raise LabelRefused(f"{record['key']} is {status}, not CLASSIFIED: there is no answer to review")
        item = {
            "image_id": label_key(record["image_id"]),
            "of_image": record["image_id"],
            "bucket": record["bucket"],
            "key": record["key"],
            "etag": record["etag"],
            # not `label` and `breed`: `breed` keys the by-breed index, which lists models' answers
            "given_label": breed.label,
            "given_breed": breed.name,
            "verdict": "accepted" if (breed.label, breed.name) == (record["label"], record["breed"]) else "corrected",
            "labelled_by": by,
            "labelled_at": timestamp(now),
            "model_label": record["label"],
            "model_breed": record["breed"],
            "model_version": record.get("model_version"),
            "review": LABELLED,  # in by-review under `labelled`, for the export
            "confidence": record["confidence"],  # its sort key there: the model's confidence
        }
        item = {k: v for k, v in item.items() if v is not None}
        still_this_answer = {":etag": record["etag"], ":classified": "CLASSIFIED"}
        try:
            with aws_call(f"labelling {record['image_id']}"):
                self.client.transact_write_items(
                    TransactItems=[
                        {
                            "Update": {
                                "TableName": self.table_name,
                                "Key": {"image_id": {"S": record["image_id"]}},
                                # out of the queue; and no event: the answer is the same, a person's label is beside it
                                "UpdateExpression": "REMOVE #review, detail_type",
                                "ConditionExpression": "etag = :etag AND #status = :classified",
                                "ExpressionAttributeNames": {"#review": "review", "#status": "status"},
                                "ExpressionAttributeValues": marshal(still_this_answer),
                            }
                        },
                        {"Put": {"TableName": self.table_name, "Item": marshal(item)}},
                    ]
                )
        except AwsError as exc:
            if exc.code == "TransactionCanceledException":
                raise LabelRefused(
                    f"{record['key']} changed since it was read (uploaded again or being classified again): "
                    "read it again and label its new answer"
                ) from exc
            raise
        return item

    def _by_review(self, partition: str) -> Iterator[dict[str, Any]]:
        """The items of one partition of by-review, by confidence, lowest first, page by page."""
        pages = self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            IndexName=REVIEW_INDEX,
            KeyConditionExpression="#review = :partition",
            ExpressionAttributeNames={"#review": "review"},
            ExpressionAttributeValues={":partition": {"S": partition}},
            ScanIndexForward=True,
        )
        for page in pages:
            yield from ({k: _deserialize(v) for k, v in raw.items()} for raw in page["Items"])
