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


def patch() -> None:
    """Streams as DynamoDB writes them (idempotent)."""
    global _MOTO_ADD
    from moto.dynamodb.models.table import StreamShard

    if _MOTO_ADD is None:
        _MOTO_ADD = StreamShard.add
        StreamShard.add = _add  # type: ignore[method-assign,assignment]
