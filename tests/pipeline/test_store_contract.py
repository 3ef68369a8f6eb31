"""The in-memory store of the unit tests keeps the DynamoDB adapter's contract: the same writes are
accepted and refused by both (pipeline.logic.ports.may_record / may_settle)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.adapters.dynamodb import DynamoLease, DynamoPredictions
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import BuilderLease, PredictionStore, StoredImage
from tests.conftest import Aws
from tests.fakes.ports import MemoryLease, MemoryPredictions

T0 = datetime(2026, 11, 22, 10, tzinfo=UTC)
NOW = T0 + timedelta(minutes=1)


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> PredictionStore:
    if request.param == "memory":
        return MemoryPredictions()
    aws: Aws = request.getfixturevalue("aws")
    return DynamoPredictions(aws.clients["dynamodb"], aws.stack.names.table)


def ref(etag: str, minutes: int = 0) -> ImageRef:
    return ImageRef("bucket", "incoming/rex.jpg", etag, 10, T0 + timedelta(minutes=minutes))


def outcome(status: Status, job: str | None = None) -> Outcome:
    return Outcome(status, Mode.BATCH if job else Mode.SERVERLESS, job_name=job)


@pytest.mark.parametrize(
    ("first", "second", "written"),
    [
        (Status.PENDING, Status.CLASSIFIED, True),  # a job's image gets its outcome
        (Status.FAILED, Status.CLASSIFIED, True),  # FAILED is not final: a retry may succeed
        (Status.CLASSIFIED, Status.CLASSIFIED, False),  # a duplicate event
        (Status.REJECTED, Status.FAILED, False),
    ],
)
def test_same_content(store: PredictionStore, first: Status, second: Status, written: bool) -> None:
    assert store.record(ref("a"), outcome(first), NOW)
    assert store.record(ref("a"), outcome(second), NOW) is written
    assert store.get_many(["bucket/incoming/rex.jpg"])["bucket/incoming/rex.jpg"].status is (
        second if written else first
    )


@pytest.mark.parametrize(("minutes", "written"), [(5, True), (-5, False)])
def test_other_content_replaces_only_older_content(store: PredictionStore, minutes: int, written: bool) -> None:
    assert store.record(ref("a"), outcome(Status.CLASSIFIED), NOW)
    assert store.record(ref("b", minutes), outcome(Status.CLASSIFIED), NOW) is written
    assert store.get_many(["bucket/incoming/rex.jpg"])["bucket/incoming/rex.jpg"].ref.etag == ("b" if written else "a")


@pytest.mark.parametrize(
    ("job", "etag", "written"),
    [("job-1", "a", True), ("job-2", "a", False), ("job-1", "b", False)],
)
def test_a_job_settles_only_its_own_pending_images(store: PredictionStore, job: str, etag: str, written: bool) -> None:
    store.record(ref("a"), outcome(Status.PENDING, "job-1"), NOW)
    stored = StoredImage(ref(etag), Status.PENDING, job)
    assert store.settle_job_image(stored, outcome(Status.CLASSIFIED, job), NOW) is written


def test_a_settled_image_is_not_settled_again(store: PredictionStore) -> None:
    store.record(ref("a"), outcome(Status.PENDING, "job-1"), NOW)
    stored = StoredImage(ref("a"), Status.PENDING, "job-1")
    assert store.settle_job_image(stored, outcome(Status.CLASSIFIED, "job-1"), NOW)
    assert not store.settle_job_image(stored, outcome(Status.FAILED, "job-1"), NOW)


def test_many_records_at_once_follow_the_same_rule_each(store: PredictionStore) -> None:
    images = [ImageRef("bucket", f"incoming/{n}.jpg", "a", 10, T0) for n in range(40)]
    store.record(images[3], outcome(Status.CLASSIFIED), NOW)  # final already: refused
    written = store.record_many(images, outcome(Status.PENDING, "dogbreed-job"), NOW)
    assert written == [n != 3 for n in range(40)]
    stored = store.get_many(image.image_id for image in images)
    assert {stored[image.image_id].status for n, image in enumerate(images) if n != 3} == {Status.PENDING}
    assert stored[images[3].image_id].status is Status.CLASSIFIED


def test_many_settles_at_once_follow_the_same_rule_each(store: PredictionStore) -> None:
    images = [ImageRef("bucket", f"incoming/{n}.jpg", "a", 10, T0) for n in range(20)]
    store.record_many(images, outcome(Status.PENDING, "dogbreed-job"), NOW)
    store.record(images[5], outcome(Status.PENDING, "dogbreed-later-job"), NOW)  # moved on to another job
    stored = store.get_many(image.image_id for image in images)
    settled = [(stored[image.image_id], outcome(Status.CLASSIFIED, "dogbreed-job")) for image in images]
    assert store.settle_many(settled, NOW) == [n != 5 for n in range(20)]


# -- the job builder's lease (pipeline.logic.ports.may_take_lease) ---------------------------


@pytest.fixture(params=["memory", "dynamodb"])
def lease(request: pytest.FixtureRequest) -> BuilderLease:
    if request.param == "memory":
        return MemoryLease()
    aws: Aws = request.getfixturevalue("aws")
    return DynamoLease(aws.clients["dynamodb"], aws.stack.names.table)


def test_one_holder_at_a_time_until_release_or_expiry(lease: BuilderLease) -> None:
    until = NOW + timedelta(minutes=5)
    assert lease.acquire("a", NOW, until)
    assert not lease.acquire("b", NOW + timedelta(minutes=1), until)  # held
    lease.release("b", NOW + timedelta(minutes=1))  # not b's to release
    assert not lease.acquire("b", NOW + timedelta(minutes=2), until)
    lease.release("a", NOW + timedelta(minutes=2))
    assert lease.acquire("b", NOW + timedelta(minutes=3), NOW + timedelta(minutes=4))  # released
    assert not lease.acquire("a", NOW + timedelta(minutes=3, seconds=59), until)
    assert lease.acquire("a", NOW + timedelta(minutes=4), until)  # b's ran out


def test_the_lease_item_is_no_image(aws: Aws) -> None:
    """The lease lives in the predictions table under a key no image id can take, and no index holds it."""
    store = DynamoPredictions(aws.clients["dynamodb"], aws.stack.names.table)
    DynamoLease(aws.clients["dynamodb"], aws.stack.names.table).acquire("a", NOW, NOW + timedelta(minutes=5))
    assert DynamoLease.KEY.startswith("#")  # bucket names start with a letter or digit
    assert store.get_many(["bucket/incoming/rex.jpg"]) == {}
    for index in ("by-breed", "by-problem"):
        scanned = aws.clients["dynamodb"].scan(TableName=aws.stack.names.table, IndexName=index)
        assert scanned["Items"] == []
