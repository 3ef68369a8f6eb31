"""The predictions table: one item per image object, holding the outcome for its current content."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from pipeline.adapters.aws_errors import AwsError, aws_call
from pipeline.adapters.concurrent import concurrently
from pipeline.adapters.retry import Backoff
from pipeline.logic.errors import TransientError
from pipeline.logic.lifecycle import Change, State, StoredImage, sources
from pipeline.logic.outcomes import ImageRef, Outcome, Status
from pipeline.logic.ports import JOB_COLLECTED, JOB_IN_FLIGHT, JOB_NOT_STARTED, JobItem

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import KeysAndAttributesOutputTypeDef, KeysAndAttributesTypeDef

_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize

BATCH_GET_LIMIT = 100
T = TypeVar("T")

# What each lifecycle state is, as a condition on the item a write replaces. A write's condition is the
# clauses of the states its event may write in (lifecycle.RULES); ":job" is the job the writer names.
_STATE_CLAUSES: dict[State, str] = {
    State.NEW: "attribute_not_exists(image_id) OR (etag <> :etag AND uploaded_at <= :uploaded_at)",
    State.NEWER: "etag <> :etag AND uploaded_at > :uploaded_at",
    State.WAITING: "etag = :etag AND #status = :PENDING AND attribute_not_exists(job_name)",
    State.IN_JOB: "etag = :etag AND #status = :PENDING AND job_name = :job",
    State.IN_OTHER_JOB: "etag = :etag AND #status = :PENDING AND attribute_exists(job_name) AND job_name <> :job",
    State.CLASSIFIED: "etag = :etag AND #status = :CLASSIFIED",
    State.REJECTED: "etag = :etag AND #status = :REJECTED",
    State.FAILED: "etag = :etag AND #status = :FAILED",
}
# For a writer naming no job, no record is in its job and every job is another (lifecycle.state_of).
_NO_JOB_NAMED: dict[State, str | None] = {
    State.IN_JOB: None,
    State.IN_OTHER_JOB: "etag = :etag AND #status = :PENDING AND attribute_exists(job_name)",
}
_PLACEHOLDER = re.compile(r":[A-Za-z_]+")

# The review queue (adapters/review.py): a record that needs review carries one of these partition
# values of the sparse index by-review, spread so that a flood's writes stay under one partition's
# 1,000 writes a second (tests/unit/test_limits.py).
REVIEW_SHARDS = 8
NEEDS_REVIEW = "needs-review#"


def review_key(image_id: str) -> str:
    """The review queue's partition for an image that needs review (stable: a digest of its id; crc32's
    low bits hardly change between keys that differ in one character)."""
    return f"{NEEDS_REVIEW}{int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16) % REVIEW_SHARDS}"


def write_condition(change: Change) -> tuple[str, dict[str, Any]]:
    """The condition expression under which DynamoDB writes the change, and its values. (A change
    whose event writes only in a job names one: lifecycle.Change refuses it otherwise.)"""
    clauses = _STATE_CLAUSES if change.job is not None else _STATE_CLAUSES | _NO_JOB_NAMED
    expression = " OR ".join(
        f"({clause})" for state in sorted(sources(change.event)) if (clause := clauses[state]) is not None
    )
    known = {
        ":etag": change.ref.etag,
        ":uploaded_at": timestamp(change.ref.uploaded_at),
        ":job": change.job,
        **{f":{status.value}": status.value for status in Status},
    }
    return expression, {name: known[name] for name in sorted(set(_PLACEHOLDER.findall(expression)))}


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with fixed width, so strings sort in time order (index sort keys)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def outcome_item(ref: ImageRef, outcome: Outcome, now: datetime) -> dict[str, Any]:
    """The table item for an image's outcome (plain Python values)."""
    item: dict[str, Any] = {
        "image_id": ref.image_id,
        "bucket": ref.bucket,
        "key": ref.key,
        "etag": ref.etag,
        "size": ref.size,
        "status": outcome.status.value,
        "mode": outcome.mode.value,
        "uploaded_at": timestamp(ref.uploaded_at),
        "updated_at": timestamp(now),
        "latency_ms": max(0, round((now - ref.uploaded_at).total_seconds() * 1000)),
        "endpoint_name": outcome.endpoint_name,
        "job_name": outcome.job_name,
        "model_name": outcome.model_name,
        "inference_ms": outcome.inference_ms,
        "reason": outcome.reason,
        "error_code": outcome.error_code,
        "detail_type": outcome.detail_type,  # a final outcome's event (template.yaml: OutcomeEventsPipe)
    }
    if outcome.status in (Status.REJECTED, Status.FAILED):
        item["problem_status"] = outcome.status.value  # sparse key of the problems index
    if outcome.needs_review:
        item["review"] = review_key(ref.image_id)  # sparse key of the review queue (adapters/review.py)
    if outcome.prediction:
        p = outcome.prediction
        item.update(
            label=p.label,
            breed=p.class_name,  # key of the breed index
            confidence=p.confidence,  # calibrated (answers.py); sort key of the review queue
            threshold=p.threshold,  # under it, the answer needs review
            top5=[{"label": c.label, "breed": c.class_name, "probability": c.probability} for c in p.top5],
            model_precision=p.model_precision,  # the network that answered (absent from older models' answers)
            model_version=p.model_version,
        )
    return {k: v for k, v in item.items() if v is not None}


def record_ref(item: Mapping[str, Any]) -> ImageRef:
    """The object version an item (plain values) names: outcome_item's reference, read back."""
    uploaded_at = datetime.fromisoformat(str(item["uploaded_at"]).replace("Z", "+00:00"))
    return ImageRef(str(item["bucket"]), str(item["key"]), str(item["etag"]), int(item["size"]), uploaded_at)


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    return value


def marshal(item: dict[str, Any]) -> dict[str, Any]:
    """An item of plain values in DynamoDB's wire form."""
    return {k: _serialize(_to_dynamo(v)) for k, v in item.items()}


def _read_items(client: DynamoDBClient, table: str, backoff: Backoff, ids: Iterable[str]) -> list[dict[str, Any]]:
    """The items of these keys that exist (strongly consistent BatchGetItem, BATCH_GET_LIMIT keys
    a request, UnprocessedKeys retried with backoff until all are read), as plain values."""
    keys = sorted(set(ids))
    items: list[dict[str, Any]] = []
    for start in range(0, len(keys), BATCH_GET_LIMIT):
        pending: Mapping[str, KeysAndAttributesTypeDef | KeysAndAttributesOutputTypeDef] = {
            table: {
                "Keys": [{"image_id": {"S": key}} for key in keys[start : start + BATCH_GET_LIMIT]],
                "ConsistentRead": True,
            }
        }

        def attempt() -> None:
            nonlocal pending
            response = client.batch_get_item(RequestItems=pending)
            items.extend(response.get("Responses", {}).get(table, []))
            unprocessed = response.get("UnprocessedKeys", {})
            left = unprocessed.get(table)
            if left and left.get("Keys"):
                pending = unprocessed
                raise _Unprocessed(len(left["Keys"]))

        try:
            with aws_call("reading the predictions table"):
                backoff.call(attempt, retry_on=lambda e: isinstance(e, _Unprocessed), what="dynamodb.batch_get_item")
        except _Unprocessed as exc:
            raise TransientError(f"DynamoDB left {exc} keys unprocessed after {backoff.attempts} tries") from exc
    return [{k: _deserialize(v) for k, v in raw.items()} for raw in items]


class DynamoPredictions:
    def __init__(self, client: DynamoDBClient, table_name: str, backoff: Backoff | None = None) -> None:
        self.client = client
        self.table_name = table_name
        self.backoff = backoff or Backoff()

    def read_items(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The items of these keys that exist, deserialized (numbers as Decimal)."""
        return _read_items(self.client, self.table_name, self.backoff, keys)

    def get_many(self, image_ids: Iterable[str]) -> dict[str, StoredImage]:
        found: dict[str, StoredImage] = {}
        for item in _read_items(self.client, self.table_name, self.backoff, image_ids):
            found[item["image_id"]] = StoredImage(
                ref=record_ref(item),
                status=Status(item["status"]),
                job_name=item.get("job_name"),
            )
        return found

    def write(self, changes: Sequence[Change], now: datetime) -> list[bool]:
        """Conditional writes cannot be batched; they run concurrently (adapters.concurrent), so a job
        of thousands of images is recorded in seconds."""
        return concurrently(lambda change: self._write(change, now), changes)

    def _write(self, change: Change, now: datetime) -> bool:
        condition, values = write_condition(change)
        return self._put(outcome_item(change.ref, change.outcome, now), condition, values)

    def _put(self, item: dict[str, Any], condition: str, values: dict[str, Any]) -> bool:
        return _conditional_put(
            self.client,
            f"writing {item['image_id']} to the predictions table",
            TableName=self.table_name,
            Item=marshal(item),
            ConditionExpression=condition,
            **({"ExpressionAttributeNames": {"#status": "status"}} if "#status" in condition else {}),
            ExpressionAttributeValues=marshal(values),
        )


class DynamoLease:
    """The job builder's lease: one item of the predictions table (a key no image can have, since
    an image's id starts with a bucket name), written only under ports.may_take_lease's rule."""

    KEY = "#lease/build-jobs"

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def acquire(self, holder: str, now: datetime, expires_at: datetime) -> bool:
        return self._put(
            holder,
            expires_at,
            # ports.may_take_lease; fixed-width UTC timestamps compare as strings in time order
            "attribute_not_exists(image_id) OR expires_at <= :now",
            {":now": timestamp(now)},
        )

    def release(self, holder: str, now: datetime) -> None:
        self._put(holder, now, "holder = :holder", {":holder": holder})

    def _put(self, holder: str, expires_at: datetime, condition: str, values: dict[str, Any]) -> bool:
        item = {"image_id": self.KEY, "holder": holder, "expires_at": timestamp(expires_at)}
        return _conditional_put(
            self.client,
            "writing the job builder's lease",
            TableName=self.table_name,
            Item=marshal(item),
            ConditionExpression=condition,
            ExpressionAttributeValues=marshal(values),
        )


class DynamoJobBook:
    """The pipeline's transform jobs, as items of the predictions table: `#job/<name>` each;
    `#jobs/in-flight`, the set of the names that count against MaxTransformJobsInFlight; and
    `#jobs/uncollected`, the set of those whose images are not all dealt with (logic/sweep.py). The
    builder adds a name to both under its lease; the collector takes it out of the first when the job
    ends and of the second when it has collected it (the builder, of both, for a job that never
    started); an atomic set update each. Keys no image id can take, in no index."""

    JOB_KEY = "#job/"
    IN_FLIGHT_KEY = "#jobs/in-flight"
    UNCOLLECTED_KEY = "#jobs/uncollected"

    def __init__(self, client: DynamoDBClient, table_name: str, backoff: Backoff | None = None) -> None:
        self.client = client
        self.table_name = table_name
        self.backoff = backoff or Backoff()

    def open(self, job: JobItem, now: datetime) -> None:
        with aws_call(f"writing transform job {job.name}"):
            self.client.put_item(TableName=self.table_name, Item=marshal(self.item(job, now)))
        self._name_set(self.UNCOLLECTED_KEY, "ADD", job.name)
        self._name_set(self.IN_FLIGHT_KEY, "ADD", job.name)

    def item(self, job: JobItem, now: datetime) -> dict[str, Any]:
        """A job's item as written when it opens (the collector adds failure_reason)."""
        return {
            "image_id": self.JOB_KEY + job.name,
            "job_name": job.name,
            "job_status": job.status,
            "holder": job.holder,
            "shards": job.shards,
            "images": job.images,
            "attempt": job.attempt,
            "created_at": timestamp(now),
            "updated_at": timestamp(now),
        }

    def update(self, name: str, status: str, now: datetime, reason: str = "", *, expected: str | None = None) -> bool:
        values = {":status": status, ":now": timestamp(now), ":reason": reason}
        if expected is None:  # a job from before job items has no item: it stays without one
            condition = "attribute_exists(image_id)"
        else:
            condition, values[":expected"] = "job_status = :expected", expected
        try:
            with aws_call(f"updating transform job {name}"):
                self.client.update_item(
                    TableName=self.table_name,
                    Key={"image_id": {"S": self.JOB_KEY + name}},
                    UpdateExpression="SET job_status = :status, updated_at = :now, failure_reason = :reason",
                    ConditionExpression=condition,
                    ExpressionAttributeValues=marshal(values),
                )
        except AwsError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            if expected is not None:
                return False
        if status not in JOB_IN_FLIGHT:
            self._name_set(self.IN_FLIGHT_KEY, "DELETE", name)
        if status == JOB_NOT_STARTED:
            self.collected(name, now)
        return True

    def get_many(self, names: Iterable[str]) -> dict[str, JobItem]:
        items = _read_items(self.client, self.table_name, self.backoff, (self.JOB_KEY + name for name in names))
        return {
            item["job_name"]: JobItem(
                name=item["job_name"],
                status=item["job_status"],
                holder=item["holder"],
                shards=_shard_count(item.get("shards", 0)),
                images=int(item.get("images", 0)),
                attempt=int(item.get("attempt", 1)),
                failure_reason=item.get("failure_reason", ""),
            )
            for item in items
        }

    def in_flight(self) -> list[str]:
        return self._names(self.IN_FLIGHT_KEY)

    def uncollected(self) -> list[str]:
        return self._names(self.UNCOLLECTED_KEY)

    def collected(self, name: str, now: datetime) -> None:
        self._name_set(self.UNCOLLECTED_KEY, "DELETE", name)
        try:  # once: a collection continued or repeated writes nothing, so the stream carries one change
            with aws_call(f"marking transform job {name} collected"):
                self.client.update_item(
                    TableName=self.table_name,
                    Key={"image_id": {"S": self.JOB_KEY + name}},
                    UpdateExpression="SET detail_type = :type, collected_at = :now",
                    ConditionExpression="attribute_exists(image_id) AND attribute_not_exists(collected_at)",
                    ExpressionAttributeValues=marshal({":type": JOB_COLLECTED, ":now": timestamp(now)}),
                )
        except AwsError as exc:
            if exc.code != "ConditionalCheckFailedException":  # collected before, or a job without an item
                raise

    def _names(self, key: str) -> list[str]:
        with aws_call(f"reading {key}"):
            item = self.client.get_item(
                TableName=self.table_name, Key={"image_id": {"S": key}}, ConsistentRead=True
            ).get("Item", {})
        return sorted(_deserialize(item["names"])) if "names" in item else []

    def _name_set(self, key: str, verb: str, name: str) -> None:
        with aws_call(f"updating {key} for transform job {name}"):
            self.client.update_item(
                TableName=self.table_name,
                Key={"image_id": {"S": key}},
                UpdateExpression=f"{verb} #names :name",
                ExpressionAttributeNames={"#names": "names"},
                ExpressionAttributeValues={":name": {"SS": [name]}},
            )


def _conditional_put(client: DynamoDBClient, what: str, **request: Any) -> bool:
    """PutItem with a condition: True if written, False if the condition refused it. Throttling is
    retried by botocore's standard retry mode before anything reaches here."""
    try:
        with aws_call(what):
            client.put_item(**request)
    except AwsError as exc:
        if exc.code == "ConditionalCheckFailedException":
            return False
        raise
    return True


class _Unprocessed(Exception):
    pass


def _shard_count(value: Any) -> int:
    """A job item's shards: a count, or (in items written before the count) the list of their URIs."""
    return len(value) if isinstance(value, (list, set)) else int(value)
