"""The ingest rules (functions/pipeline/logic/ingest.py) over in-memory fakes of their ports."""

from __future__ import annotations

import io
import re
import threading
import time
import tracemalloc
from dataclasses import dataclass, field, replace

import pytest
from PIL import Image

import answers
from infra.template import load_template
from pipeline.config import batch_max_bytes
from pipeline.logic import ingest as ingest_logic
from pipeline.logic.deadline import Deadline
from pipeline.logic.downsize import downsize
from pipeline.logic.errors import RejectedImage, TransientError
from pipeline.logic.ingest import IMAGES_PER_REQUEST, Ingest, IngestResult, IngestRules
from pipeline.logic.jobs import QueuedShard
from pipeline.logic.lifecycle import Change, Event
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import ObjectData
from pipeline.logic.routing import SERVERLESS_MAX_BYTES, RoutingPolicy
from tests.fakes.ports import FakeEndpoint, MemoryJobQueue, MemoryObjects, MemoryPredictions
from tests.fakes.sagemaker_runtime import fake_prediction
from tests.pipeline import images
from tests.unit.conftest import BUCKET, T0, Clock

MAX_RECEIVES = 5


@dataclass
class FakeBacklog:
    """The upload queue's backlog: a number, or a failure to read it."""

    count: int = 0
    error: Exception | None = None
    reads: int = 0

    def waiting(self) -> int:
        self.reads += 1
        if self.error:
            raise self.error
        return self.count


@dataclass
class World:
    """An Ingest with its fakes, and helpers to upload as S3 would notify."""

    mode: Mode
    clock: Clock
    objects: MemoryObjects = field(default_factory=MemoryObjects)
    store: MemoryPredictions = field(default_factory=MemoryPredictions)
    endpoint: FakeEndpoint = field(default_factory=FakeEndpoint)
    queue: MemoryJobQueue = field(default_factory=MemoryJobQueue)
    batch_max_bytes: int = 4_000_000
    backlog: FakeBacklog | None = None
    read_ahead: int = ingest_logic.READ_AHEAD

    @property
    def ingest(self) -> Ingest:
        rules = IngestRules(
            routing=RoutingPolicy(
                self.mode, auto_batch_threshold=3, batch_max_bytes=self.batch_max_bytes, max_image_pixels=10**8
            ),
            shard_prefix="batch-input/",
            model_name="dogbreed-resnet18",
            max_receive_count=MAX_RECEIVES,
        )
        return Ingest(
            rules, self.objects, self.store, self.endpoint, self.queue, self.clock, self.backlog, self.read_ahead
        )

    def shards(self) -> list[tuple[QueuedShard, list[tuple[str, bytes]]]]:
        """Each queued shard, with the records its file holds."""
        found = []
        for body in self.queue.messages:
            shard = QueuedShard.from_message("m", body)
            data = self.objects.objects[shard.uri.bucket, shard.uri.key]
            found.append((shard, [answers.loads_record(line) for line in data.splitlines()]))
        return found

    def upload(self, key: str, data: bytes, receive_count: int = 1) -> ImageRef:
        etag = self.objects.put(BUCKET, key, data)
        self.clock.advance(1)
        return ImageRef(BUCKET, key, etag, len(data), self.clock(), f"m-{key}-{etag[:6]}", receive_count)

    def run(self, *refs: ImageRef) -> IngestResult:
        return self.ingest.run(list(refs))

    def outcome(self, ref: ImageRef) -> Outcome | None:
        return self.store.outcome(ref.image_id)


@pytest.fixture
def world(clock: Clock) -> World:
    return World(Mode.SERVERLESS, clock)


@pytest.fixture
def batch(clock: Clock) -> World:
    return World(Mode.BATCH, clock)


# -- serverless --------------------------------------------------------------------------------


def test_an_image_is_classified_and_its_prediction_recorded(world: World) -> None:
    data = images.jpeg()
    rex = world.upload("incoming/rex.jpg", data)
    result = world.run(rex)
    outcome = world.outcome(rex)
    assert outcome is not None and outcome.status is Status.CLASSIFIED and outcome.mode is Mode.SERVERLESS
    assert outcome.prediction == fake_prediction(data)
    assert (outcome.endpoint_name, outcome.model_name) == ("dogbreed-serverless", "dogbreed-resnet18")
    assert outcome.inference_ms is not None and outcome.inference_ms >= 0
    assert result.outcomes == [outcome] and not result.failed_message_ids
    assert world.endpoint.calls == ["image/jpeg"]


def test_the_images_of_a_batch_share_one_request_and_each_gets_its_own_answer(world: World) -> None:
    good = [world.upload(f"incoming/{n}.jpg", images.jpeg(color=(n * 20, 90, 30))) for n in range(5)]
    bad = world.upload("incoming/cut.jpg", images.truncated_jpeg())  # passes the header, fails to decode
    result = world.run(*good, bad)
    assert world.endpoint.calls == [answers.JSON_LINES]  # one request for the six
    for ref in good:
        outcome = world.outcome(ref)
        data = world.objects.objects[BUCKET, ref.key]
        assert (
            outcome is not None and outcome.status is Status.CLASSIFIED and outcome.prediction == fake_prediction(data)
        )
        assert outcome.inference_ms is not None
    rejected = world.outcome(bad)
    assert rejected is not None and (rejected.status, rejected.error_code) == (Status.REJECTED, "InvalidImage")
    assert result.failed_message_ids == set() and len(result.outcomes) == 6


def test_a_requests_answers_are_recorded_in_one_write(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    refs = [world.upload(f"incoming/{n}.jpg", images.jpeg(color=(n * 20, 90, 30))) for n in range(4)]
    calls: list[int] = []
    write = world.store.write
    monkeypatch.setattr(world.store, "write", lambda changes, now: calls.append(len(changes)) or write(changes, now))
    world.run(*refs)
    assert calls == [4]  # the store makes them at once (DynamoDB: concurrent conditional puts)


def test_a_failed_write_of_a_requests_answers_is_made_again_an_image_at_a_time(world: World) -> None:
    """The store fails on the second answer of the group's write: the first was written, so each is
    written again alone; the first is refused as done, the others go through, nothing goes back."""
    refs = [world.upload(f"incoming/{n}.jpg", images.jpeg(color=(n * 20, 90, 30))) for n in range(3)]
    world.store.fail_next(None, None, TransientError("DynamoDB throttled"))  # get_many, 1st answer, 2nd answer
    result = world.run(*refs)
    assert result.failed_message_ids == set() and world.endpoint.calls == [answers.JSON_LINES]
    assert {world.outcome(ref).status for ref in refs} == {Status.CLASSIFIED}  # type: ignore[union-attr]
    assert (len(result.outcomes), result.duplicates) == (2, 1)  # the first, written before the failure


def test_a_lone_image_is_sent_as_it_is(world: World) -> None:
    world.run(world.upload("incoming/rex.jpg", images.jpeg()))
    assert world.endpoint.calls == ["image/jpeg"]  # no JSON Lines around it: its latency as before


def test_requests_hold_at_most_their_share_of_images_and_bytes(world: World) -> None:
    small = [world.upload(f"incoming/{n}.jpg", images.jpeg(color=(n, 90, 30))) for n in range(IMAGES_PER_REQUEST + 2)]
    big_data = images.photo(2600, 1950, quality=97)  # under 4 MB as it is, over 4 MB as a base64 record
    assert len(big_data) < 4_000_000 < answers.record_size(len(big_data), "incoming/big.jpg")
    big = world.upload("incoming/big.jpg", big_data)
    world.run(*small[:-1], big, small[-1])
    # 16 images, then 2 (the large one went alone, as it is, and broke no request)
    assert world.endpoint.calls == [answers.JSON_LINES, "image/jpeg", answers.JSON_LINES]
    assert all(world.outcome(ref).status is Status.CLASSIFIED for ref in [*small, big])  # type: ignore[union-attr]


def test_a_failed_request_sends_back_its_images_and_the_others_answers_stand(world: World) -> None:
    refs = [world.upload(f"incoming/{n}.jpg", images.jpeg(color=(n, 90, 30))) for n in range(IMAGES_PER_REQUEST + 2)]
    world.endpoint.fail_next(None, TransientError("the endpoint is throttling"))  # the first call passes
    result = world.run(*refs)
    first, second = refs[:IMAGES_PER_REQUEST], refs[IMAGES_PER_REQUEST:]
    assert all(world.outcome(ref).status is Status.CLASSIFIED for ref in first)  # type: ignore[union-attr]
    assert result.failed_message_ids == {ref.message_id for ref in second}
    assert all(world.outcome(ref) is None for ref in second)


class RefusesRecords(FakeEndpoint):
    """An endpoint whose model refuses a JSON Lines request whole (4xx), as one without multi-record
    support would."""

    def invoke(self, body: bytes, content_type: str, accept: str = "application/json") -> bytes:
        if content_type == answers.JSON_LINES:
            self.calls.append(content_type)
            raise RejectedImage("UnsupportedContentType", "cannot classify application/jsonlines")
        return super().invoke(body, content_type, accept)


def test_a_request_refused_whole_is_sent_again_an_image_a_call(world: World) -> None:
    world.endpoint = RefusesRecords()
    refs = [world.upload(f"incoming/{n}.jpg", images.jpeg(color=(n * 30, 90, 30))) for n in range(3)]
    result = world.run(*refs)
    assert world.endpoint.calls == [answers.JSON_LINES, "image/jpeg", "image/jpeg", "image/jpeg"]
    assert all(world.outcome(ref).status is Status.CLASSIFIED for ref in refs)  # type: ignore[union-attr]
    assert result.failed_message_ids == set()


def test_a_png_is_sent_as_a_png(world: World) -> None:
    world.run(world.upload("incoming/rex.png", images.png()))
    assert world.endpoint.calls == ["image/png"]


def test_a_duplicate_event_calls_the_model_once_and_writes_once(world: World) -> None:
    rex = world.upload("incoming/rex.jpg", images.jpeg())
    world.run(rex)
    writes = world.store.writes
    # WHEN the same notification arrives again, alone and twice in one batch
    again = world.run(rex)
    twice = world.run(rex, rex)
    # THEN the model is not called again and nothing is written
    assert len(world.endpoint.calls) == 1
    assert world.store.writes == writes
    assert (again.duplicates, twice.duplicates) == (1, 2)


def test_a_reupload_with_new_content_is_classified_again(world: World) -> None:
    old = world.upload("incoming/rex.jpg", images.jpeg(color=(1, 2, 3)))
    world.run(old)
    new = world.upload("incoming/rex.jpg", images.png())
    world.run(new)
    outcome = world.outcome(new)
    assert outcome is not None and outcome.status is Status.CLASSIFIED
    assert world.store.records[new.image_id].ref.etag == new.etag
    assert world.endpoint.calls == ["image/jpeg", "image/png"]


def test_a_stale_event_for_overwritten_content_records_nothing(world: World) -> None:
    stale = world.upload("incoming/rex.jpg", images.jpeg(color=(1, 2, 3)))
    new = world.upload("incoming/rex.jpg", images.png())
    world.run(new)
    result = world.run(stale)  # S3 now has other content: the read fails its ETag condition
    assert result.superseded == 1 and not result.failed_message_ids
    assert world.store.records[new.image_id].ref.etag == new.etag


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "EmptyObject"),
        (b"shopping list\n", "NotAnImage"),
        (images.heic_header(), "InvalidImage"),  # a phone's format, converted: a header alone does not decode
        (b"%PDF-1.7\n", "UnsupportedFormat"),
        (images.png_bomb(), "DecompressionBomb"),
        (images.truncated_jpeg(), "InvalidImage"),  # only the model finds out
    ],
)
def test_bad_input_is_rejected_with_a_reason_and_fails_no_message(world: World, data: bytes, code: str) -> None:
    bad = world.upload("incoming/bad.jpg", data)
    good = world.upload("incoming/good.jpg", images.jpeg())
    result = world.run(bad, good)
    outcome = world.outcome(bad)
    assert outcome is not None and outcome.status is Status.REJECTED and outcome.error_code == code
    assert outcome.reason
    assert world.outcome(good).status is Status.CLASSIFIED  # type: ignore[union-attr]
    assert not result.failed_message_ids


def test_an_object_deleted_before_processing_is_rejected(world: World) -> None:
    gone = world.upload("incoming/gone.jpg", images.jpeg())
    world.objects.delete(BUCKET, gone.key)
    world.run(gone)
    assert world.outcome(gone).error_code == "ObjectDeleted"  # type: ignore[union-attr]


def test_a_transient_failure_returns_the_message_without_a_record(world: World) -> None:
    rex = world.upload("incoming/rex.jpg", images.jpeg())
    world.endpoint.fail_next(TransientError("endpoint throttled"))
    result = world.run(rex)
    assert result.failed_message_ids == {rex.message_id}
    assert world.outcome(rex) is None  # deliveries are left: no outcome yet


def test_on_the_last_delivery_a_transient_failure_is_recorded_failed(world: World) -> None:
    rex = world.upload("incoming/rex.jpg", images.jpeg(), receive_count=MAX_RECEIVES)
    world.endpoint.fail_next(TransientError("ModelError 500: worker died"))
    result = world.run(rex)
    assert result.failed_message_ids == {rex.message_id}  # the message goes on to the DLQ
    outcome = world.outcome(rex)
    assert outcome is not None and outcome.status is Status.FAILED and outcome.error_code == "RetriesExhausted"
    assert "dead-letter queue" in (outcome.reason or "") and "worker died" in (outcome.reason or "")
    # AND a redriven copy (receive count restarts) is classified once the endpoint works
    redriven = ImageRef(rex.bucket, rex.key, rex.etag, rex.size, rex.uploaded_at, rex.message_id, 1)
    world.run(redriven)
    assert world.outcome(rex).status is Status.CLASSIFIED  # type: ignore[union-attr]


def test_a_store_that_fails_on_the_last_delivery_leaves_the_message_to_the_dlq(world: World) -> None:
    rex = world.upload("incoming/rex.jpg", images.jpeg(), receive_count=MAX_RECEIVES)
    world.store.fail_next(None, TransientError("DynamoDB down"), TransientError("DynamoDB down"))
    result = world.run(rex)
    assert result.failed_message_ids == {rex.message_id}
    assert world.outcome(rex) is None


# -- batch transform ----------------------------------------------------------------------------


def test_a_batch_becomes_a_shard_of_its_valid_images_queued_for_a_job(batch: World) -> None:
    good = [batch.upload(f"incoming/dog {i}.jpg", images.jpeg(color=(i, 0, 0))) for i in range(3)]
    bad = batch.upload("incoming/notes.jpg", b"not an image")
    result = batch.run(*good, bad)
    # THEN the bad one is REJECTED at once; the valid ones get their first record from the job builder
    assert batch.outcome(bad).status is Status.REJECTED  # type: ignore[union-attr]
    assert all(batch.outcome(ref) is None for ref in good)
    # AND one shard holds exactly the valid images, each line its bytes under its key
    ((shard, records),) = batch.shards()
    assert re.fullmatch(r"batch-input/20261122T\d{6}-[0-9a-f]+\.jsonl", shard.uri.key)  # flat: one name for its output
    assert [ref.key for ref in shard.images] == [ref.key for ref in good]
    assert records == [(ref.key, batch.objects.objects[BUCKET, ref.key]) for ref in good]
    assert [o.status for o in result.outcomes] == [Status.REJECTED]  # PENDING is not an outcome yet
    assert batch.endpoint.calls == []


def test_a_photo_over_the_job_payload_limit_goes_into_its_shard_downsized_and_upright(batch: World) -> None:
    # GIVEN a 12-megapixel phone photo of 6.4 MB, seen 4000 x 3000, stored sideways with EXIF orientation 6
    data = images.photo(4000, 3000, orientation=6)
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.size == (3000, 4000)
    assert len(data) > 4_000_000  # over this world's batch limit
    photo = batch.upload("incoming/phone.jpg", data)
    batch.run(photo)
    # THEN its shard holds a JPEG of 512 pixels on its shorter side, turned upright, within the limit
    ((shard, [(key, sent)]),) = batch.shards()
    assert key == photo.key and [ref.key for ref in shard.images] == [photo.key]
    assert len(sent) < 4_000_000
    with Image.open(io.BytesIO(sent)) as copy:
        assert (copy.format, copy.size) == ("JPEG", (683, 512))
        assert copy.getexif().get(0x0112) is None  # turned already: nothing turns it twice


def test_a_48_megapixel_photo_is_classified_downsized_on_the_endpoint(world: World) -> None:
    data = images.photo()  # 8000 x 6000, about 25 MB
    photo = world.upload("incoming/48mp.jpg", data)
    world.run(photo)
    outcome = world.outcome(photo)
    assert outcome is not None and outcome.status is Status.CLASSIFIED
    sent = downsize(data, max_pixels=10**8, max_bytes=SERVERLESS_MAX_BYTES).data
    assert outcome.prediction == fake_prediction(sent)  # the model saw the copy
    assert world.endpoint.calls == ["image/jpeg"]


def test_a_large_photo_that_does_not_decode_is_rejected_with_the_reason(world: World) -> None:
    data = images.photo(4000, 3000)
    broken = world.upload("incoming/cut-off.jpg", data[: len(data) * 3 // 4])  # the header is intact
    world.run(broken)
    outcome = world.outcome(broken)
    assert outcome is not None and outcome.status is Status.REJECTED and outcome.error_code == "InvalidImage"
    assert "cannot decode the image" in (outcome.reason or "")
    assert world.endpoint.calls == []


def test_an_object_over_the_largest_image_is_rejected_by_its_header_alone(
    batch: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = batch.upload("incoming/huge.jpg", images.jpeg()[:-2] + b"\x00" * 2_000_000 + b"\xff\xd9")
    monkeypatch.setattr(ingest_logic, "LARGEST_IMAGE_BYTES", 1_000_000)
    reads: list[int | None] = []
    read = batch.objects.read
    monkeypatch.setattr(
        batch.objects,
        "read",
        lambda *a, first_bytes=None: reads.append(first_bytes) or read(*a, first_bytes=first_bytes),
    )
    batch.run(huge)
    outcome = batch.outcome(huge)
    assert outcome is not None and outcome.error_code == "TooLarge"
    assert "over the 1,000,000-byte limit for an image" in (outcome.reason or "")
    assert reads == [ingest_logic.HEADER_BYTES] and batch.queue.messages == []


def test_a_duplicate_event_while_in_a_job_queues_nothing(batch: World) -> None:
    rex = batch.upload("incoming/rex.jpg", images.jpeg())
    in_job = Outcome(Status.PENDING, Mode.BATCH, job_name="dogbreed-job")
    batch.store.write([Change(rex, Event.JOB_STARTED, in_job)], batch.clock())
    result = batch.run(rex)
    assert batch.queue.messages == [] and result.duplicates == 1


def test_a_shard_that_could_not_be_queued_is_queued_on_the_next_delivery(batch: World) -> None:
    # GIVEN the queue fails after the shard was written
    rex = batch.upload("incoming/rex.jpg", images.jpeg())
    batch.queue.fail_next(TransientError("SQS unavailable"))
    first = batch.run(rex)
    assert first.failed_message_ids == {rex.message_id}
    # WHEN the message is delivered again
    second = batch.run(rex)
    # THEN the image is not taken for a duplicate: it is queued
    assert not second.failed_message_ids
    ((shard, _),) = batch.shards()
    assert [ref.key for ref in shard.images] == ["incoming/rex.jpg"]


def test_two_uploads_of_one_key_in_a_batch_queue_the_newer(batch: World) -> None:
    old = batch.upload("incoming/rex.jpg", images.jpeg(color=(1, 2, 3)))
    new = batch.upload("incoming/rex.jpg", images.jpeg(color=(3, 2, 1)))
    result = batch.run(new, old)
    ((shard, records),) = batch.shards()
    assert [ref.etag for ref in shard.images] == [new.etag] and len(records) == 1
    assert result.superseded == 1 and not result.failed_message_ids


def test_shards_stay_within_the_message_and_size_limits(batch: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_logic, "SHARD_MAX_BYTES", 3 * answers.record_size(len(images.jpeg()), "incoming/0.jpg"))
    refs = [batch.upload(f"incoming/{i}.jpg", images.jpeg()) for i in range(7)]
    batch.run(*refs)
    assert [len(shard.images) for shard, _ in batch.shards()] == [3, 3, 1]


def test_images_of_two_buckets_make_two_shards(batch: World) -> None:
    rex = batch.upload("incoming/rex.jpg", images.jpeg())
    data = images.png()
    etag = batch.objects.put("another-bucket", "incoming/fido.png", data)
    batch.run(rex, ImageRef("another-bucket", "incoming/fido.png", etag, len(data), T0, "m-other"))
    assert sorted(shard.uri.bucket for shard, _ in batch.shards()) == sorted([BUCKET, "another-bucket"])


def test_auto_mode_sends_a_small_batch_with_a_backlog_behind_it_to_batch_transform(clock: Clock) -> None:
    auto = World(Mode.AUTO, clock, backlog=FakeBacklog(count=1))
    small = [auto.upload(f"incoming/{i}.jpg", images.jpeg(color=(i, 0, 0))) for i in range(2)]
    auto.run(*small)  # 2 in the batch + 1 waiting: the threshold, 3
    assert all(auto.outcome(r) is None for r in small) and len(auto.queue.messages) == 1
    assert auto.backlog is not None and auto.backlog.reads == 1


def test_a_backlog_that_cannot_be_read_leaves_the_batch_to_decide_with_a_warning(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    auto = World(Mode.AUTO, clock, backlog=FakeBacklog(count=100, error=TransientError("throttled")))
    small = [auto.upload(f"incoming/{i}.jpg", images.jpeg(color=(i, 0, 0))) for i in range(2)]
    auto.run(*small)
    assert {auto.outcome(r).mode for r in small} == {Mode.SERVERLESS}  # type: ignore[union-attr]
    assert "backlog unknown" in caplog.text


def test_only_auto_mode_reads_the_backlog(clock: Clock) -> None:
    for mode in (Mode.SERVERLESS, Mode.BATCH):
        world = World(mode, clock, backlog=FakeBacklog(count=10**6))
        world.run(world.upload(f"incoming/{mode.value}.jpg", images.jpeg()))
        assert world.backlog is not None and world.backlog.reads == 0


def test_auto_mode_routes_by_batch_size(clock: Clock) -> None:
    auto = World(Mode.AUTO, clock)
    small = [auto.upload(f"incoming/{i}.jpg", images.jpeg(color=(i, 0, 0))) for i in range(2)]
    auto.run(*small)
    assert {auto.outcome(r).mode for r in small} == {Mode.SERVERLESS}  # type: ignore[union-attr]
    large = [auto.upload(f"incoming/flood/{i}.jpg", images.jpeg(color=(0, i, 0))) for i in range(3)]
    auto.run(*large)
    assert all(auto.outcome(r) is None for r in large)  # queued for the job builder
    assert len(auto.queue.messages) == 1


class GeneratedObjects(MemoryObjects):
    """Objects made when read and shards counted, not kept: only what ingest holds is in memory."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.shard_bytes: list[int] = []

    def read(self, bucket: str, key: str, etag: str, *, first_bytes: int | None = None) -> ObjectData:
        head = images.jpeg(color=(len(key) % 256, 0, 0))[:-2]
        data = head + key.encode().ljust(self.size - len(head) - 2, b"\x00") + b"\xff\xd9"
        return ObjectData(data if first_bytes is None else data[:first_bytes], len(data))

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        self.shard_bytes.append(len(data))


def test_a_batch_of_100_images_of_4_4_mb_is_queued_in_bounded_memory(clock: Clock) -> None:
    """100 images just under the batch limit (4.4 MB, TransformMaxPayloadMB 6) are 440 MB of
    objects and 590 MB of base64: ingest streams them into shards, holding one shard and one image."""
    template = load_template()
    memory_mb = template["Globals"]["Function"]["MemorySize"]
    image_size = 4_400_000
    assert image_size <= batch_max_bytes(6)
    world = World(Mode.BATCH, clock, objects=GeneratedObjects(image_size), batch_max_bytes=batch_max_bytes(6))
    refs = [ImageRef(BUCKET, f"incoming/{n:03}.jpg", f"etag-{n}", image_size, T0, f"m-{n}") for n in range(100)]
    tracemalloc.start()
    try:
        result = world.run(*refs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"peak Python memory queueing 100 images of 4.4 MB: {peak / 2**20:.0f} MiB (function: {memory_mb} MB)")
    assert not result.failed_message_ids
    assert sum(len(QueuedShard.from_message("m", body).images) for body in world.queue.messages) == 100
    shard_lines = world.objects.shard_bytes  # type: ignore[attr-defined]
    assert len(shard_lines) == 10 and max(shard_lines) <= ingest_logic.SHARD_MAX_BYTES
    # one shard's lines and their join, plus the image in hand and its line
    assert peak < 2 * ingest_logic.SHARD_MAX_BYTES + 3 * image_size
    assert peak < memory_mb * 2**20 / 3


# -- the invocation's deadline -------------------------------------------------------------------


class SlowReads(MemoryObjects):
    """Each read takes `seconds` of the clock: photos that take long to fetch and downsize."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def read(self, bucket: str, key: str, etag: str, *, first_bytes: int | None = None) -> ObjectData:
        self.clock.advance(self.seconds)
        return super().read(bucket, key, etag, first_bytes=first_bytes)


class CountedReads(MemoryObjects):
    """Reads that take a little wall time, counting how many are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = self.most = 0
        self.order: list[str] = []
        self._lock = threading.Lock()

    def read(self, bucket: str, key: str, etag: str, *, first_bytes: int | None = None) -> ObjectData:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.order.append(key)
        time.sleep(0.02)
        with self._lock:
            self.in_flight -= 1
        return super().read(bucket, key, etag, first_bytes=first_bytes)


def test_the_images_for_the_endpoint_are_read_ahead_within_a_count_and_bytes(clock: Clock) -> None:
    world = World(Mode.SERVERLESS, clock, objects=CountedReads())
    small = [world.upload(f"incoming/{n:02}.jpg", images.jpeg(color=(n, 9, 9))) for n in range(20)]
    deleted = small[5]
    del world.objects.objects[BUCKET, deleted.key]
    result = world.run(*small)
    assert isinstance(world.objects, CountedReads) and 1 < world.objects.most <= ingest_logic.READ_AHEAD
    assert world.objects.order == [ref.key for ref in small]  # started in the batch's order
    assert world.outcome(deleted).error_code == "ObjectDeleted"  # type: ignore[union-attr]  # its own outcome
    assert {world.outcome(ref).status for ref in small if ref is not deleted} == {Status.CLASSIFIED}  # type: ignore[union-attr]
    assert result.failed_message_ids == set()
    # large photos: as many at once as READ_AHEAD_BYTES holds (their events' sizes), at least one
    world = World(Mode.SERVERLESS, clock, objects=CountedReads())
    big = [replace(world.upload(f"incoming/big{n}.jpg", images.jpeg()), size=12_000_000) for n in range(6)]
    world.run(*big)
    assert isinstance(world.objects, CountedReads)
    assert world.objects.most == ingest_logic.READ_AHEAD_BYTES // 12_000_000


@pytest.mark.parametrize("mode", [Mode.BATCH, Mode.SERVERLESS])
def test_past_its_deadline_a_batch_records_what_it_did_and_hands_the_rest_back(clock: Clock, mode: Mode) -> None:
    """Lambda kills a function at its timeout: before that, the shard in hand is queued (batch
    mode) and the images not started go back to the queue, so a slow batch never loses its work
    nor repeats it forever. Those delivered most often go first."""
    # the fake clock moves as each read ends: reads one after another (no read-ahead) keep it in step
    world = World(mode, clock, objects=SlowReads(clock, seconds=10), read_ahead=1)
    refs = [world.upload(f"incoming/{n}.jpg", images.jpeg(color=(n, 0, 0))) for n in range(10)]
    refs[7] = replace(refs[7], receive_count=3)  # handed back twice before
    deadline = Deadline.of_invocation(clock(), remaining_ms=120_000)  # work stops at 90 s: 9 reads of 10 s
    result = world.ingest.run(refs, deadline)
    done = [ref for ref in refs if ref.message_id not in result.failed_message_ids]
    assert len(done) == 9 and refs[7] in done and result.handed_back == 1
    if mode is Mode.BATCH:
        ((shard, _),) = world.shards()  # queued before the deadline, with every image read
        assert {ref.key for ref in shard.images} == {ref.key for ref in done}
    else:
        assert all(world.outcome(ref).status is Status.CLASSIFIED for ref in done)  # type: ignore[union-attr]
    left = [ref for ref in refs if ref not in done]
    assert world.ingest.run([replace(ref, receive_count=2) for ref in left]).handed_back == 0
