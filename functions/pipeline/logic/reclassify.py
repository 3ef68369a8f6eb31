"""Classify images again with the current model (`make reclassify`), by the flood path, inside AWS.

`make reclassify` selects images and sends one small request per image to the reclassify queue
(notifications.reclassify_request); the ingest function takes them from there, under its own role,
and hands them to this. Each image is first recorded waiting by the lifecycle table's "to classify
again" event, which only a classified image of this content (or one an earlier request left
waiting) allows; then the ingest logic's own flood path checks it, writes it into a shard and
queues the shard for the job builder, and the transform job's answer is recorded with the model
that made it (`model_version`).

Safe to repeat: an image requested twice is queued twice, and the builder keeps one (it skips an
image already in a running job, and one classified since). A request stopped between recording an
image waiting and queueing it leaves it PENDING with REASON; its message comes again (or the next
`make reclassify` selects it) and queues it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import islice

from aws_lambda_powertools import Logger

from pipeline.logic.deadline import Deadline
from pipeline.logic.ingest import Ingest, IngestRules
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import PredictionStore

logger = Logger(child=True)

REASON = "waiting to be classified again by the current model (make reclassify)"
CHUNK = 500  # images recorded waiting, then queued, at a time: a stopped run leaves at most this many to take again


def flood_path(rules: IngestRules) -> IngestRules:
    """The ingest function's rules, routing every image to batch transform."""
    return replace(rules, routing=replace(rules.routing, mode=Mode.BATCH))


@dataclass
class ReclassifyResult:
    selected: int = 0
    taken: int = 0  # recorded waiting, then handed to the flood path
    skipped: int = 0  # no longer a classified image of this content (overwritten, or in a job already)
    queued: int = 0  # in a shard on the job queue
    outcomes: list[Outcome] = field(default_factory=list)  # recorded at once: REJECTED now (deleted since, ...)
    failed_message_ids: set[str] = field(default_factory=set)  # requests to deliver again (transient, out of time)

    @property
    def left_waiting(self) -> int:
        """Taken, neither queued nor recorded: a transient failure or an upload since. They stay
        PENDING with REASON (or are the newer upload's), and the next run takes them again."""
        return self.taken - self.queued - len(self.outcomes)


class Reclassify:
    def __init__(
        self, store: PredictionStore, ingest: Ingest, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        if ingest.rules.routing.mode is not Mode.BATCH:
            raise ValueError("reclassifying goes by the flood path: give an Ingest with flood_path(rules)")
        self.store = store
        self.ingest = ingest
        self.clock = clock

    @classmethod
    def beside(cls, ingest: Ingest) -> Reclassify:
        """Reclassifying with an ingest function's own adapters and settings, by the flood path."""
        flood = Ingest(
            flood_path(ingest.rules), ingest.objects, ingest.store, ingest.endpoint, ingest.queue, ingest.clock
        )
        return cls(ingest.store, flood, ingest.clock)

    def run(self, images: Iterable[ImageRef], deadline: Deadline | None = None) -> ReclassifyResult:
        result = ReclassifyResult()
        waiting = Outcome(Status.PENDING, Mode.BATCH, model_name=self.ingest.rules.model_name, reason=REASON)
        for chunk in _chunks(images, CHUNK):
            result.selected += len(chunk)
            written = self.store.write([Change(ref, Event.RECLASSIFY, waiting) for ref in chunk], self.clock())
            now = self.clock()  # its wait for a job starts now, not at its upload (max_wait)
            taken = [replace(ref, requested_at=now) for ref, ok in zip(chunk, written, strict=True) if ok]
            result.taken += len(taken)
            result.skipped += len(chunk) - len(taken)
            ingested = self.ingest.run(taken, deadline)
            result.queued += ingested.queued
            result.outcomes += ingested.outcomes
            result.failed_message_ids |= ingested.failed_message_ids
            logger.info("reclassify chunk", selected=len(chunk), taken=len(taken), queued=ingested.queued)
        return result


def _chunks(images: Iterable[ImageRef], size: int) -> Iterator[list[ImageRef]]:
    iterator = iter(images)
    while chunk := list(islice(iterator, size)):
        yield chunk
