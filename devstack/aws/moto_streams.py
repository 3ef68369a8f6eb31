"""moto's DynamoDB Streams as DynamoDB documents them, for the stack's pipe (devstack/aws/pipes.py).

moto 5.2 (pinned in requirements/dev.txt) adds a stream record for every write. Three patches,
applied in the local stack's process before moto's server starts:
- a write that changes nothing makes no record: "If you perform a PutItem or UpdateItem operation
  that does not change any data in an item, DynamoDB Streams does not write a stream record for that
  operation" (DynamoDB developer guide, "Change data capture for DynamoDB Streams");
- records are added under a lock: moto's server answers requests in threads, and two writes at once
  could take the same sequence number;
- a shard keeps its last RETAINED records, the oldest trimmed as DynamoDB trims records after 24
  hours, so that a flood of 20,000 images (about five writes each) does not hold every record.

moto 5.2's DynamoDB Streams API answers "Not yet implemented" (its requests are signed for
`dynamodb` and reach the table's backend), so the stack's pipe reads the shard in this process,
from LATEST, as GetRecords would hand it the records (StreamReader).
"""

from __future__ import annotations

import threading
from typing import Any

RETAINED = 50_000

_LOCK = threading.Lock()
_MOTO_ADD: Any = None


def _add(shard: Any, old: Any, new: Any) -> None:
    if old is not None and new is not None and old.to_json() == new.to_json():
        return  # nothing changed: no record
    with _LOCK:
        _MOTO_ADD(shard, old, new)
        extra = len(shard.items) - RETAINED
        if extra > 0:  # trimmed: the sequence numbers of those kept stay as they were
            del shard.items[:extra]
            shard.starting_sequence_number += extra


class StreamReader:
    """A table's stream read in order from where it stood when the reader was made (LATEST)."""

    def __init__(self, account: str, region: str, table: str) -> None:
        from moto.dynamodb.models import dynamodb_backends

        shard = dynamodb_backends[account][region].get_table(table).stream_shard
        if shard is None:
            raise ValueError(f"table {table} has no stream")
        self.shard: Any = shard
        with _LOCK:
            self.next = self.shard.starting_sequence_number + len(self.shard.items)

    def read(self, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` records after the last read, as GetRecords returns them."""
        with _LOCK:
            start = self.next - self.shard.starting_sequence_number
            if start < 0:
                raise RuntimeError("the stream was trimmed past this reader (DynamoDB: TrimmedDataAccessException)")
            records = [record.to_json() for record in self.shard.items[start : start + limit]]
            self.next += len(records)
        return records


def patch() -> None:
    """Streams as DynamoDB writes them (idempotent)."""
    global _MOTO_ADD
    from moto.dynamodb.models.table import StreamShard

    if _MOTO_ADD is None:
        _MOTO_ADD = StreamShard.add
        StreamShard.add = _add  # type: ignore[method-assign,assignment]
