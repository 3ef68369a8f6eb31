"""Classify a batch of uploaded images: skip duplicates, reject bad input, then either send them to
the serverless endpoint, several a request, or pack them into shards for batch transform and queue
them for the job builder (build.py), which gathers many shards into few large jobs."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial

from aws_lambda_powertools import Logger

import answers
from pipeline.logic.deadline import Deadline
from pipeline.logic.downsize import LARGEST_IMAGE_BYTES, downsize
from pipeline.logic.errors import ObjectChanged, RejectedImage, TransientError
from pipeline.logic.images import CONVERTED_FORMATS, HEADER_BYTES, inspect_image
from pipeline.logic.jobs import QueuedShard, ref_json_size, shard_uri
from pipeline.logic.lifecycle import Change, Event, State, decide, state_of
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status, read_model_answer
from pipeline.logic.ports import Backlog, Endpoint, JobQueue, ObjectData, ObjectStore, PredictionStore
from pipeline.logic.routing import RoutingPolicy

logger = Logger(child=True)

_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}
# A shard is held in memory while it is packed, and its message must fit SQS's 256 KB.
SHARD_MAX_BYTES = 64_000_000
SHARD_MESSAGE_MAX_BYTES = 200_000
# Objects read ahead of the one being checked, and their bytes at most (by their events' sizes): the
# reads of a request's images overlap (S3 answers in tens of milliseconds), within the function's memory.
READ_AHEAD = 8
READ_AHEAD_BYTES = 32_000_000
# Images a serverless request carries at most (JSON Lines records, as a transform job's): the request's
# overhead paid once for them (docs/performance.md), its 60 s well clear (tests/unit/test_limits.py).
IMAGES_PER_REQUEST = 16


@dataclass(frozen=True)
class IngestRules:
    """What the ingest logic needs to know of its configuration."""

    routing: RoutingPolicy
    shard_prefix: str  # where shards of images for batch transform are written
    model_name: str
    max_receive_count: int  # the queue's: the delivery on which a transient failure becomes FAILED


@dataclass
class IngestResult:
    failed_message_ids: set[str] = field(default_factory=set)
    outcomes: list[Outcome] = field(default_factory=list)
    duplicates: int = 0
    superseded: int = 0
    queued: int = 0  # images in shards queued for the job builder
    handed_back: int = 0  # images left for the next delivery, out of time


class Ingest:
    def __init__(
        self,
        rules: IngestRules,
        objects: ObjectStore,
        store: PredictionStore,
        endpoint: Endpoint,
        queue: JobQueue,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        backlog: Backlog | None = None,
        read_ahead: int = READ_AHEAD,
    ) -> None:
        self.rules = rules
        self.objects = objects
        self.store = store
        self.endpoint = endpoint
        self.queue = queue
        self.clock = clock
        self.backlog = backlog  # read in auto mode only; None: the batch alone decides
        self.read_ahead = read_ahead  # objects read at once (1: each when it is needed)

    def run(self, images: list[ImageRef], deadline: Deadline | None = None) -> IngestResult:
        """Past the deadline the images not yet started go back to the queue (their messages are
        reported failed) and come again; those delivered most often go first, so each delivery
        gets further."""
        result = IngestResult()
        fresh = self._without_duplicates(images, result)
        fresh.sort(key=lambda ref: -ref.receive_count)
        waiting = self._waiting() if fresh and self.rules.routing.mode is Mode.AUTO else 0
        serverless, batch = self.rules.routing.route(fresh, waiting)
        deadline = deadline or Deadline.never()
        group, limit = _Request(), self.rules.routing.max_bytes(Mode.SERVERLESS)
        with closing(self._read_ahead(serverless)) as reads:
            for number, (ref, fetched) in enumerate(reads):
                if number and deadline.passed(self.clock()):
                    self._send(group, result)
                    self._hand_back(serverless[number:] + batch, result)
                    return result
                read = self._read_for_endpoint(ref, result, fetched)
                if read is None:
                    continue
                if answers.record_size(len(read[0]), ref.key) > limit:  # too large as a record: alone, as it is
                    self._send_one(ref, *read, result)
                    continue
                if not group.fits(ref, read[0], limit):
                    self._send(group, result)
                    group = _Request()
                group.add(ref, *read)
        self._send(group, result)
        if batch:
            self._queue_for_jobs(batch, result, deadline)
        return result

    def _read_ahead(self, refs: list[ImageRef]) -> Generator[tuple[ImageRef, Callable[[], ObjectData]], None, None]:
        """Each image, in order, with a call that returns its object (or raises what reading it
        raised), while the next ones are read: READ_AHEAD at a time and READ_AHEAD_BYTES at most (by
        their events' sizes), so the reads of a request's images overlap each other and the request
        before them. Closed early (out of time), the reads not started are dropped."""
        if self.read_ahead <= 1:
            yield from ((ref, partial(self._fetch, ref)) for ref in refs)
            return
        pool = ThreadPoolExecutor(self.read_ahead, thread_name_prefix="read-ahead")
        todo, reading = deque(refs), deque[tuple[ImageRef, Future[ObjectData]]]()
        try:
            while todo or reading:
                while todo and (not reading or self._may_read_ahead(todo[0], [ref for ref, _ in reading])):
                    ref = todo.popleft()
                    reading.append((ref, pool.submit(self._fetch, ref)))
                ref, future = reading.popleft()
                yield ref, future.result
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _may_read_ahead(self, ref: ImageRef, reading: list[ImageRef]) -> bool:
        return len(reading) < self.read_ahead and sum(map(_read_size, [*reading, ref])) <= READ_AHEAD_BYTES

    def _waiting(self) -> int:
        """The upload queue's backlog; where it cannot be read, 0 (the batch alone decides, as on a
        quiet queue: the endpoint, the cheaper mode), with a warning."""
        if self.backlog is None:
            return 0
        try:
            return self.backlog.waiting()
        except TransientError as exc:
            logger.warning("upload queue backlog unknown: routed by the batch alone", error=str(exc))
            return 0

    def _hand_back(self, images: list[ImageRef], result: IngestResult) -> None:
        result.failed_message_ids.update(ref.message_id for ref in images)
        result.handed_back += len(images)
        logger.warning("out of time: images handed back to the queue", images=len(images))

    def _without_duplicates(self, images: list[ImageRef], result: IngestResult) -> list[ImageRef]:
        """The images the lifecycle table lets an upload event process (not final, newer, or in a
        job for this content), each object version once."""
        stored = self.store.get_many({ref.image_id for ref in images})
        fresh: dict[tuple[str, str], ImageRef] = {}
        for ref in images:
            identity = (ref.image_id, ref.etag)
            state = state_of(stored.get(ref.image_id), ref)
            if state is State.NEWER:
                result.superseded += 1
                logger.info("event of overwritten content skipped", image_id=ref.image_id, etag=ref.etag)
            elif identity in fresh or decide(state, Event.UPLOADED) is None:
                result.duplicates += 1
                logger.info("duplicate event skipped", image_id=ref.image_id, etag=ref.etag, state=state)
            else:
                fresh[identity] = ref
        return list(fresh.values())

    # -- serverless -------------------------------------------------------------------------

    def _base(self) -> Outcome:
        return Outcome(
            Status.PENDING, Mode.SERVERLESS, endpoint_name=self.endpoint.name, model_name=self.rules.model_name
        )

    def _read_for_endpoint(
        self, ref: ImageRef, result: IngestResult, fetched: Callable[[], ObjectData]
    ) -> tuple[bytes, str] | None:
        """The image as the endpoint gets it, or None where it is done with (rejected, overwritten) or
        comes again (transient)."""
        try:
            return self.read_checked(ref, Mode.SERVERLESS, fetched)
        except RejectedImage as exc:
            self._answered(
                ref, replace(self._base(), status=Status.REJECTED, reason=exc.reason, error_code=exc.code), result
            )
        except ObjectChanged:
            result.superseded += 1
            logger.info("object overwritten since this event; its newer event classifies it", image_id=ref.image_id)
        except TransientError as exc:
            self._transient_failure([ref], exc, result, self._base())
        return None

    def _send(self, group: _Request, result: IngestResult) -> None:
        """One InvokeEndpoint for the group: a lone image as it is (its content type), several as JSON
        Lines records, each answered on its own line (a bad one an error line). A failed call sends its
        images' messages back; the other calls' answers stand. A request the endpoint refuses whole
        (4xx) is sent again an image a call, so that each image gets its own answer."""
        if len(group.images) <= 1:
            for ref, data, info_format in group.images:
                self._send_one(ref, data, info_format, result)
            return
        refs = [ref for ref, _, _ in group.images]
        started = time.perf_counter()
        try:
            body = self.endpoint.invoke(group.body(), answers.JSON_LINES, accept=answers.JSON_LINES)
        except RejectedImage:
            for ref, data, info_format in group.images:
                self._send_one(ref, data, info_format, result)
            return
        except TransientError as exc:
            self._transient_failure(refs, exc, result, self._base())
            return
        per_image_ms = round((time.perf_counter() - started) * 1000 / len(refs), 1)
        found, broken = answers.loads_lines(body)
        answered: list[tuple[ImageRef, Outcome]] = []
        for ref in refs:
            answer = found.get(ref.key)
            if isinstance(answer, answers.Prediction):
                outcome = replace(self._base(), status=Status.CLASSIFIED, prediction=answer, inference_ms=per_image_ms)
            elif isinstance(answer, answers.ErrorRecord):
                outcome = replace(self._base(), status=Status.REJECTED, reason=answer.message, error_code=answer.code)
            else:
                fault = TransientError(f"the endpoint's answer has no line for the image ({'; '.join(broken[:2])})")
                self._transient_failure([ref], fault, result, self._base())
                continue
            answered.append((ref, outcome))
        self._answered_all(answered, result)

    def _answered_all(self, answered: list[tuple[ImageRef, Outcome]], result: IngestResult) -> None:
        """A request's answers in one write (the store makes its conditional writes at once). If it
        fails, each is written again on its own, so that a failure sends back only its image's
        message; a write that had gone through is then refused as done, and only logged."""
        changes = [Change(ref, Event.ANSWERED, outcome) for ref, outcome in answered]
        try:
            written = self.store.write(changes, self.clock())
        except TransientError:
            for ref, outcome in answered:
                self._answered(ref, outcome, result)
            return
        for (ref, outcome), ok in zip(answered, written, strict=True):
            self._noted(ref, outcome, ok, result)

    def _send_one(self, ref: ImageRef, data: bytes, info_format: str, result: IngestResult) -> None:
        base = self._base()
        try:
            started = time.perf_counter()
            answer = self.endpoint.invoke(data, _CONTENT_TYPES.get(info_format, "application/x-image"))
            elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            outcome = replace(
                base, status=Status.CLASSIFIED, prediction=read_model_answer(answer), inference_ms=elapsed_ms
            )
        except RejectedImage as exc:
            outcome = replace(base, status=Status.REJECTED, reason=exc.reason, error_code=exc.code)
        except TransientError as exc:
            self._transient_failure([ref], exc, result, base)
            return
        self._answered(ref, outcome, result)

    def _answered(self, ref: ImageRef, outcome: Outcome, result: IngestResult) -> None:
        try:
            self._record(ref, Event.ANSWERED, outcome, result)
        except TransientError as exc:
            self._transient_failure([ref], exc, result, self._base())

    def read_checked(
        self, ref: ImageRef, mode: Mode, fetched: Callable[[], ObjectData] | None = None
    ) -> tuple[bytes, str]:
        """The image's bytes and format after the header checks, within the mode's request limit: an
        image over it, or in a phone's format the model does not read (HEIF, AVIF), is sent as a small
        JPEG (downsize.py). An object over LARGEST_IMAGE_BYTES is judged, and rejected, by its header
        alone. `fetched`: its object already being read (_read_ahead); else it is read here."""
        routing = self.rules.routing
        obj = fetched() if fetched else self._fetch(ref)
        header = obj.data[:HEADER_BYTES]
        info = inspect_image(header, obj.total_size, max_bytes=LARGEST_IMAGE_BYTES, max_pixels=routing.max_image_pixels)
        limit = routing.max_bytes(mode)
        if obj.total_size <= limit and info.format not in CONVERTED_FORMATS:
            return obj.data, info.format
        small = downsize(obj.data, max_pixels=routing.max_image_pixels, max_bytes=limit)
        logger.info(
            "image downsized to fit its request" if info.format not in CONVERTED_FORMATS else "image converted",
            format=info.format,
            image_id=ref.image_id,
            mode=mode,
            bytes=obj.total_size,
            downsized_bytes=len(small.data),
            size=f"{small.original_size[0]}x{small.original_size[1]}",
            downsized_size=f"{small.size[0]}x{small.size[1]}",
        )
        return small.data, "JPEG"

    def _fetch(self, ref: ImageRef) -> ObjectData:
        """The object, whole, or its header where it is over LARGEST_IMAGE_BYTES."""
        whole = ref.size <= LARGEST_IMAGE_BYTES
        return self.objects.read(ref.bucket, ref.key, ref.etag, first_bytes=None if whole else HEADER_BYTES)

    # -- batch transform --------------------------------------------------------------------

    def _queue_for_jobs(self, images: list[ImageRef], result: IngestResult, deadline: Deadline) -> None:
        """Check each image and stream the good ones into shards, queueing each shard for the job
        builder as it fills (the builder writes their first record: PENDING in a job, or waiting).
        At most one shard and the image in hand are in memory. One bad image never enters a shard,
        so it never fails a job. Past the deadline the shard is queued and the rest handed back."""
        base = Outcome(Status.PENDING, Mode.BATCH, model_name=self.rules.model_name)
        shard: list[tuple[ImageRef, bytes]] = []  # (image, its record line)
        size = message = 0
        todo = self._newest_of_each_key(images, result)
        for number, ref in enumerate(todo):
            if number and deadline.passed(self.clock()):
                self._hand_back(todo[number:], result)
                break
            try:
                data, _ = self.read_checked(ref, Mode.BATCH)
            except RejectedImage as exc:
                outcome = replace(base, status=Status.REJECTED, reason=exc.reason, error_code=exc.code)
                try:
                    self._record(ref, Event.ANSWERED, outcome, result)
                except TransientError as store_exc:
                    self._transient_failure([ref], store_exc, result, base)
                continue
            except ObjectChanged:
                result.superseded += 1
                continue
            except TransientError as exc:
                self._transient_failure([ref], exc, result, base)
                continue
            line, entry = answers.dumps_record(ref.key, data) + b"\n", ref_json_size(ref)
            del data
            full = size + len(line) > SHARD_MAX_BYTES or message + entry > SHARD_MESSAGE_MAX_BYTES
            if shard and (full or shard[0][0].bucket != ref.bucket):
                self._queue_shard(shard, result, base)
                shard, size, message = [], 0, 0
            shard.append((ref, line))
            size, message = size + len(line), message + entry
        if shard:
            self._queue_shard(shard, result, base)

    @staticmethod
    def _newest_of_each_key(images: list[ImageRef], result: IngestResult) -> list[ImageRef]:
        """A key is a shard's record id: of two uploads of one key in a batch, the newer is sent (the
        older's content is gone from S3). Grouped by bucket, as a shard holds one bucket's images."""
        newest: dict[tuple[str, str], ImageRef] = {}
        for ref in images:
            older = newest.get((ref.bucket, ref.key))
            if older is not None:
                result.superseded += 1
                if older.uploaded_at > ref.uploaded_at:
                    continue
            newest[ref.bucket, ref.key] = ref
        return sorted(newest.values(), key=lambda ref: (-ref.receive_count, ref.bucket))

    def _queue_shard(self, items: list[tuple[ImageRef, bytes]], result: IngestResult, base: Outcome) -> None:
        refs = [ref for ref, _ in items]
        uri = shard_uri(self.rules.shard_prefix, refs[0].bucket, started=self.clock(), nonce=uuid.uuid4().hex)
        # No record yet: one write per image fewer. If queueing fails, the retried message queues
        # the images again; a shard queued twice is deduplicated by the job builder.
        lines = b"".join(line for _, line in items)
        try:
            self.objects.put_bytes(uri.bucket, uri.key, lines, answers.JSON_LINES)
            self.queue.send(QueuedShard(uri, tuple(refs)).message_body())
        except TransientError as exc:
            self._transient_failure(refs, exc, result, base)
            return
        result.queued += len(refs)
        logger.info("shard queued for a transform job", shard=str(uri), images=len(refs), bytes=len(lines))

    # -- recording --------------------------------------------------------------------------

    def _transient_failure(
        self, images: list[ImageRef], exc: TransientError, result: IngestResult, base: Outcome
    ) -> None:
        """Return the messages to the queue. On their last delivery also record FAILED, so the
        image has a visible outcome while its message waits in the DLQ for a redrive."""
        for ref in images:
            result.failed_message_ids.add(ref.message_id)
            last = ref.receive_count >= self.rules.max_receive_count
            logger.warning(
                "transient failure", image_id=ref.image_id, error=str(exc), receive_count=ref.receive_count, last=last
            )
            if last:
                reason = f"gave up after {ref.receive_count} deliveries: {exc}; the message is in the dead-letter queue"
                failed = replace(base, status=Status.FAILED, reason=reason, error_code="RetriesExhausted")
                try:
                    self._record(ref, Event.GAVE_UP, failed, result)
                except TransientError as store_exc:  # the store is down too: the DLQ holds the message
                    logger.error("could not record FAILED", image_id=ref.image_id, error=str(store_exc))

    def _record(self, ref: ImageRef, event: Event, outcome: Outcome, result: IngestResult) -> bool:
        [written] = self.store.write([Change(ref, event, outcome)], self.clock())
        return self._noted(ref, outcome, written, result)

    def _noted(self, ref: ImageRef, outcome: Outcome, written: bool, result: IngestResult) -> bool:
        """Count and log a write's result."""
        if written and outcome.status is not Status.PENDING:
            result.outcomes.append(outcome)
        if not written:
            result.duplicates += 1
            logger.info("outcome not written: a final or newer record exists", image_id=ref.image_id)
        log = logger.warning if outcome.status in (Status.REJECTED, Status.FAILED) else logger.info
        log("image outcome", image_id=ref.image_id, status=outcome.status, reason=outcome.reason, written=written)
        return written


def _read_size(ref: ImageRef) -> int:
    """The bytes reading the image holds (Ingest._fetch)."""
    return ref.size if ref.size <= LARGEST_IMAGE_BYTES else HEADER_BYTES


@dataclass
class _Request:
    """Images bound for one InvokeEndpoint: at most IMAGES_PER_REQUEST, and their JSON Lines records
    within the serverless request limit; one version of a key each (a record's id is its key)."""

    images: list[tuple[ImageRef, bytes, str]] = field(default_factory=list)  # image, bytes, format
    size: int = 0  # the records' bytes

    def fits(self, ref: ImageRef, data: bytes, max_bytes: int) -> bool:
        size = answers.record_size(len(data), ref.key)
        return (
            len(self.images) < IMAGES_PER_REQUEST
            and self.size + size <= max_bytes
            and all(other.key != ref.key for other, _, _ in self.images)
        )

    def add(self, ref: ImageRef, data: bytes, info_format: str) -> None:
        self.images.append((ref, data, info_format))
        self.size += answers.record_size(len(data), ref.key)

    def body(self) -> bytes:
        return b"".join(answers.dumps_record(ref.key, data) + b"\n" for ref, data, _ in self.images)
