"""EventBridge Pipes on one machine, for template.yaml's pipe: a DynamoDB stream as the source, the
filter criteria, and the default event bus as the target (devstack/aws/event_sources.py: EventBus).

Like Pipes, it reads the stream from LATEST (devstack/aws/moto_streams.py: StreamReader; each read
that returns records counts as a GetRecords of the pipe's role, checked against that role), keeps
the records its filters match, and puts each on the bus with the target's source and detail-type
(a static string, or a `$.` path into the record: "dynamic path parameters", EventBridge user
guide, "Amazon EventBridge Pipes targets") and the record as detail.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devstack.aws.account import arn
from devstack.aws.event_sources import EventBus, bus_event, matches
from devstack.aws.iam import Call
from devstack.aws.moto_streams import StreamReader

log = logging.getLogger("devstack")

POLL_S = 0.25  # between two GetRecords that found nothing (Pipes polls a shard about four times a second)


@dataclass(frozen=True)
class PipeSpec:
    """An AWS::Pipes::Pipe with a DynamoDB stream source and an event bus target."""

    name: str
    role: str  # the logical id of its role: the identity it reads the stream as
    patterns: tuple[dict[str, Any], ...]
    batch_size: int
    starting_position: str
    source: str
    detail_type: str

    @classmethod
    def of_properties(cls, logical_id: str, props: dict[str, Any], role: str) -> PipeSpec:
        stream = props["SourceParameters"]["DynamoDBStreamParameters"]
        filters = props["SourceParameters"].get("FilterCriteria", {}).get("Filters", [])
        bus = props["TargetParameters"]["EventBridgeEventBusParameters"]
        if not props["Target"].endswith(":event-bus/default"):
            raise NotImplementedError(f"pipe {logical_id}: only the default event bus is a target locally")
        return cls(
            name=logical_id,
            role=role,
            patterns=tuple(json.loads(f["Pattern"]) for f in filters),
            batch_size=int(stream.get("BatchSize", 100)),
            starting_position=str(stream["StartingPosition"]),
            source=str(bus["Source"]),
            detail_type=str(bus["DetailType"]),
        )

    def event(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The bus event of a stream record, or None if no filter matches it (no filter: all match)."""
        if self.patterns and not any(matches(pattern, record) for pattern in self.patterns):
            return None
        created = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
        if isinstance(created, datetime):  # as the stream's JSON has it: seconds since the epoch
            record = {**record, "dynamodb": {**record["dynamodb"], "ApproximateCreationDateTime": created.timestamp()}}
        return bus_event(self.source, str(path_value(record, self.detail_type)), [], record)


def path_value(record: dict[str, Any], value: str) -> Any:
    """A dynamic path parameter's value in the record (dot notation), or the static value."""
    if not value.startswith("$."):
        return value
    found: Any = record
    for part in value[2:].split("."):
        found = found[part]
    return found


class PipeRunner:
    """One pipe, reading the stream's one shard (moto keeps one) until stopped."""

    def __init__(self, spec: PipeSpec, reader: StreamReader, stream_arn: str, bus: EventBus, record_calls: Any) -> None:
        if spec.starting_position != "LATEST":
            raise NotImplementedError(f"pipe {spec.name}: only LATEST is read locally")
        self.spec = spec
        self.reader = reader
        self.stream_arn = stream_arn
        self.bus = bus
        self.record_calls = record_calls  # the stack's call recorder: the pipe's calls, checked against its role
        self.published = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pipe-{spec.name}", daemon=True)

    def start(self) -> PipeRunner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        bus_arn = arn("events", "event-bus/default")
        while not self._stopping.is_set():
            try:
                records = self.reader.read(self.spec.batch_size)
            except Exception:  # a stack stopping under it; on AWS the pipe retries
                if not self._stopping.is_set():
                    log.exception("pipe %s could not read its stream", self.spec.name)
                self._stopping.wait(POLL_S)
                continue
            if not records:
                self._stopping.wait(POLL_S)
                continue
            events = [event for record in records if (event := self.spec.event(record)) is not None]
            calls = [Call(self.spec.role, "dynamodb:GetRecords", self.stream_arn)]
            self.record_calls(calls + ([Call(self.spec.role, "events:PutEvents", bus_arn)] if events else []))
            for event in events:
                self.bus.put(event)
                self.published += 1
