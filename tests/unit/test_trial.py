"""A trial's requests in the ingest function (logic/trial.py): images into the trial's shards in the flood
path's format, an index of each shard, the images it cannot take named with why, nothing recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

import answers
from pipeline.logic.deadline import Deadline
from pipeline.logic.errors import MalformedMessage, TransientError
from pipeline.logic.notifications import parse_message, trial_request
from pipeline.logic.outcomes import ImageRef, Mode
from pipeline.logic.s3uri import S3Uri
from pipeline.logic.trial import Trial, TrialFiles, TrialRequest, read_index
from tests.fakes.ports import MemoryObjects

BUCKET, TRIAL = "images", "20261205t120000-abc123"
NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)


def stored(objects: MemoryObjects, key: str, data: bytes, message_id: str = "") -> ImageRef:
    return ImageRef(BUCKET, key, objects.put(BUCKET, key, data), len(data), NOW, message_id=message_id or key)


def read_whole(objects: MemoryObjects) -> Callable[[ImageRef, Mode], tuple[bytes, str]]:
    """The ingest function's read, without its checks."""

    def read(ref: ImageRef, mode: Mode) -> tuple[bytes, str]:
        assert mode is Mode.BATCH
        return objects.read(ref.bucket, ref.key, ref.etag).data, "JPEG"

    return read


def indexes(objects: MemoryObjects) -> list[tuple[S3Uri | None, list[str], dict[str, str]]]:
    prefix = TrialFiles(BUCKET, TRIAL).index.key
    return [read_index(objects.objects[BUCKET, key]) for key in objects.list_keys(BUCKET, prefix)]


def test_a_request_names_its_trial_and_image_and_reads_back() -> None:
    ref = ImageRef(BUCKET, "incoming/a dog.jpg", "e1", 12, NOW)
    body = trial_request(TRIAL, ref)
    assert len(body.encode()) < 300
    message = parse_message("m1", body, receive_count=2)
    assert message.trial == TRIAL and not message.again
    (got,) = message.images
    assert (got.key, got.etag, got.size, got.uploaded_at, got.message_id) == (ref.key, "e1", 12, NOW, "m1")


@pytest.mark.parametrize("trial", ["", "UPPER", "a/b", "x" * 42, 7])
def test_a_request_with_a_bad_trial_id_is_malformed(trial: object) -> None:
    body = json.loads(trial_request(TRIAL, ImageRef(BUCKET, "incoming/a.jpg", "e1", 12, NOW)))
    body["compare"]["trial"] = trial
    with pytest.raises(MalformedMessage, match="trial request without a trial id"):
        parse_message("m1", json.dumps(body))


def test_images_go_into_shards_of_records_and_those_it_cannot_take_are_indexed_with_why() -> None:
    objects = MemoryObjects()
    good = [stored(objects, f"incoming/{n}.jpg", bytes([n]) * 100) for n in range(5)]
    gone = stored(objects, "incoming/gone.jpg", b"x" * 100)
    objects.delete(BUCKET, gone.key)
    changed = stored(objects, "incoming/changed.jpg", b"y" * 100)
    objects.put(BUCKET, changed.key, b"z" * 100)
    # shards of at most three records' bytes
    line_bytes = len(answers.dumps_record(good[0].key, b"\0" * 100)) + 1
    trial = Trial(objects, read_whole(objects), max_shard_bytes=3 * line_bytes, clock=lambda: NOW)
    result = trial.run([TrialRequest(TRIAL, ref) for ref in [*good, gone, changed]])
    assert (result.sharded, result.refused, result.failed_message_ids) == (5, 2, set())
    found = indexes(objects)
    assert sorted(len(keys) for _, keys, _ in found) == [2, 3]
    refused = {key: why for _, _, why_of in found for key, why in why_of.items()}
    assert refused[gone.key].startswith("ObjectDeleted: ") and refused[changed.key].startswith("ObjectChanged: ")
    records: dict[str, bytes] = {}
    for shard, keys, _ in found:
        assert shard is not None and shard.key.startswith(f"trials/{TRIAL}/input/")
        lines = [answers.loads_record(line) for line in objects.objects[BUCKET, shard.key].splitlines()]
        assert [record_id for record_id, _ in lines] == keys  # line order, each record's id its key
        records.update(lines)
    assert records == {ref.key: objects.objects[BUCKET, ref.key] for ref in good}


def test_a_shard_not_written_sends_its_requests_back_and_indexes_nothing() -> None:
    objects = MemoryObjects()
    refs = [stored(objects, f"incoming/{n}.jpg", b"d" * 10) for n in range(2)]
    objects.fail_next(None, None, TransientError("S3 is slow down"))  # two reads, then the shard's write
    result = Trial(objects, read_whole(objects), max_shard_bytes=10**6).run([TrialRequest(TRIAL, r) for r in refs])
    assert result.failed_message_ids == {r.message_id for r in refs} and result.sharded == 0
    assert indexes(objects) == []


def test_past_the_deadline_the_rest_come_again() -> None:
    objects = MemoryObjects()
    refs = [stored(objects, f"incoming/{n}.jpg", b"d" * 10) for n in range(3)]
    ended = Deadline.of_invocation(NOW, 0)
    result = Trial(objects, read_whole(objects), 10**6, clock=lambda: NOW).run(
        [TrialRequest(TRIAL, r) for r in refs], ended
    )
    assert result.sharded == 1 and result.failed_message_ids == {refs[1].message_id, refs[2].message_id}
