"""The in-memory store of the unit tests keeps the DynamoDB adapter's contract: both accept and refuse
the same writes, those of the lifecycle table (pipeline/logic/lifecycle.py), in every state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from pipeline.adapters.dynamodb import DynamoJobBook, DynamoLease, DynamoPredictions
from pipeline.logic import lifecycle
from pipeline.logic.lifecycle import Change, Event, State
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status
from pipeline.logic.ports import JOB_NOT_STARTED, JOB_STARTING, BuilderLease, JobBook, JobItem, PredictionStore
from tests.conftest import Aws
from tests.fakes.ports import MemoryJobBook, MemoryLease, MemoryPredictions

T0 = datetime(2026, 11, 22, 10, tzinfo=UTC)
NOW = T0 + timedelta(minutes=1)
T = TypeVar("T")


def memory_or_dynamodb(request: pytest.FixtureRequest, memory: Callable[[], T], dynamodb: Callable[[Any, str], T]) -> T:
    """The fixture's in-memory double, or its DynamoDB adapter over a fresh local table."""
    if request.param == "memory":
        return memory()
    aws: Aws = request.getfixturevalue("aws")
    return dynamodb(aws.clients["dynamodb"], aws.stack.names.table)


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> PredictionStore:
    return memory_or_dynamodb(request, MemoryPredictions, DynamoPredictions)


def ref(etag: str, minutes: int = 0, key: str = "incoming/rex.jpg") -> ImageRef:
    return ImageRef("bucket", key, etag, 10, T0 + timedelta(minutes=minutes))


def outcome(state: State, job: str = "job-new") -> Outcome:
    """An outcome that records `state`."""
    if state is State.IN_JOB:
        return Outcome(Status.PENDING, Mode.BATCH, job_name=job)
    if state is State.WAITING:
        return Outcome(Status.PENDING, Mode.BATCH)
    return Outcome(Status(state.value.upper()), Mode.BATCH)


# Each state of the lifecycle, set up by writing from an empty record: (etag, minutes after T0, the
# event and state written) for the image, and the job the writer under test names.
SETUPS: dict[str, tuple[State, list[tuple[str, int, Event, State, str]], str | None]] = {
    "no record": (State.NEW, [], "job-1"),
    "older content": (State.NEW, [("b", -5, Event.ANSWERED, State.CLASSIFIED, "")], "job-1"),
    "newer content": (State.NEWER, [("b", 5, Event.ANSWERED, State.CLASSIFIED, "")], "job-1"),
    "waiting": (State.WAITING, [("a", 0, Event.WAITS, State.WAITING, "")], "job-1"),
    "in the writer's job": (State.IN_JOB, [("a", 0, Event.JOB_STARTED, State.IN_JOB, "job-1")], "job-1"),
    "in another job": (State.IN_OTHER_JOB, [("a", 0, Event.JOB_STARTED, State.IN_JOB, "job-2")], "job-1"),
    "in a job, none named": (State.IN_OTHER_JOB, [("a", 0, Event.JOB_STARTED, State.IN_JOB, "job-1")], None),
    "classified": (State.CLASSIFIED, [("a", 0, Event.ANSWERED, State.CLASSIFIED, "")], "job-1"),
    "rejected": (State.REJECTED, [("a", 0, Event.ANSWERED, State.REJECTED, "")], "job-1"),
    "failed": (State.FAILED, [("a", 0, Event.GAVE_UP, State.FAILED, "")], "job-1"),
}


def test_every_state_is_set_up() -> None:
    assert {state for state, _, _ in SETUPS.values()} == set(State)


def test_every_state_and_event_against_the_lifecycle_table(store: PredictionStore) -> None:
    """Each (state, event) pair on an image of its own: the store writes exactly where the table
    allows it, and the record then is what the event records (or, refused, what it was)."""
    pairs = [(setup, event) for setup in SETUPS for event in Event if lifecycle.RULES[event].to]
    changes = []
    for number, (setup, event) in enumerate(pairs):
        _, steps, job = SETUPS[setup]
        key = f"incoming/{number}.jpg"
        for etag, minutes, step_event, step_state, step_job in steps:
            assert store.write([Change(ref(etag, minutes, key), step_event, outcome(step_state, step_job))], NOW)
        if job is None and lifecycle.sources(event) == {State.IN_JOB}:
            with pytest.raises(ValueError, match="name"):
                Change(ref("a", key=key), event, outcome(lifecycle.RULES[event].to[0]), job=job)
            changes.append(None)
            continue
        changes.append(Change(ref("a", key=key), event, outcome(lifecycle.RULES[event].to[0]), job=job))
    before = store.get_many(f"bucket/incoming/{n}.jpg" for n in range(len(pairs)))
    written = store.write([c for c in changes if c is not None], NOW)
    after = store.get_many(f"bucket/incoming/{n}.jpg" for n in range(len(pairs)))
    results = iter(written)
    wrong = []
    for number, ((setup, event), change) in enumerate(zip(pairs, changes, strict=True)):
        if change is None:
            continue
        image_id = f"bucket/incoming/{number}.jpg"
        allowed = SETUPS[setup][0] in lifecycle.sources(event)
        record = after.get(image_id)
        expected = (
            (change.ref.etag, change.outcome.status, change.outcome.job_name)
            if allowed
            else (before[image_id].ref.etag, before[image_id].status, before[image_id].job_name)
            if image_id in before
            else None
        )
        got = (record.ref.etag, record.status, record.job_name) if record else None
        done = next(results)
        if done is not allowed or got != expected:
            wrong.append(f"{setup} + {event}: written {done}, the table says {allowed}; {got}, not {expected}")
    assert not wrong, "\n".join(wrong)


def test_a_refused_write_leaves_the_record_as_it_was(store: PredictionStore) -> None:
    assert store.write([Change(ref("a"), Event.ANSWERED, outcome(State.CLASSIFIED))], NOW) == [True]
    assert store.write([Change(ref("a"), Event.GAVE_UP, outcome(State.FAILED))], NOW) == [False]  # a duplicate
    assert store.get_many(["bucket/incoming/rex.jpg"])["bucket/incoming/rex.jpg"].status is Status.CLASSIFIED


def test_many_writes_at_once_follow_the_table_each(store: PredictionStore) -> None:
    images = [ref("a", key=f"incoming/{n}.jpg") for n in range(40)]
    store.write([Change(images[3], Event.ANSWERED, outcome(State.CLASSIFIED))], NOW)  # final already: refused
    written = store.write([Change(image, Event.JOB_STARTED, outcome(State.IN_JOB, "job-1")) for image in images], NOW)
    assert written == [n != 3 for n in range(40)]
    store.write([Change(images[5], Event.JOB_STARTED, outcome(State.IN_JOB, "job-2"), job="job-1")], NOW)  # moved on
    answers = [Change(image, Event.JOB_ANSWERED, outcome(State.CLASSIFIED), job="job-1") for image in images]
    assert store.write(answers, NOW) == [n not in (3, 5) for n in range(40)]


# -- the job items (pipeline.logic.ports.JobBook) ------------------------------------------


@pytest.fixture(params=["memory", "dynamodb"])
def book(request: pytest.FixtureRequest) -> JobBook:
    return memory_or_dynamodb(request, MemoryJobBook, DynamoJobBook)


def test_a_job_counts_in_flight_from_its_opening_until_it_ends(book: JobBook) -> None:
    job = JobItem("dogbreed-1", JOB_STARTING, "holder-a", shards=1, images=3, attempt=2)
    book.open(job, NOW)
    book.open(JobItem("dogbreed-2", JOB_STARTING, "holder-a"), NOW)
    assert book.in_flight() == ["dogbreed-1", "dogbreed-2"]
    assert book.get_many(["dogbreed-1", "dogbreed-9"]) == {"dogbreed-1": job}
    assert book.update("dogbreed-1", "InProgress", NOW, expected=JOB_STARTING)
    assert not book.update("dogbreed-1", JOB_NOT_STARTED, NOW, expected=JOB_STARTING)  # it started after all
    assert book.in_flight() == ["dogbreed-1", "dogbreed-2"]
    book.update("dogbreed-1", "Failed", NOW, "AlgorithmError: worker died")
    book.update("dogbreed-1", "Failed", NOW, "AlgorithmError: worker died")  # a collector run twice
    assert book.in_flight() == ["dogbreed-2"]
    assert book.get_many(["dogbreed-1"])["dogbreed-1"].failure_reason == "AlgorithmError: worker died"
    book.update("dogbreed-old", "Completed", NOW)  # a job from before job items: nothing to update
    assert book.get_many(["dogbreed-old"]) == {}


# -- the job builder's lease (pipeline.logic.ports.may_take_lease) ---------------------------


@pytest.fixture(params=["memory", "dynamodb"])
def lease(request: pytest.FixtureRequest) -> BuilderLease:
    return memory_or_dynamodb(request, MemoryLease, DynamoLease)


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


def test_the_pipelines_own_items_are_no_images(aws: Aws) -> None:
    """The lease, the job items and the set of jobs in flight live in the predictions table under
    keys no image id can take, and no index holds them."""
    client, table = aws.clients["dynamodb"], aws.stack.names.table
    store = DynamoPredictions(client, table)
    DynamoLease(client, table).acquire("a", NOW, NOW + timedelta(minutes=5))
    DynamoJobBook(client, table).open(JobItem("dogbreed-1", JOB_STARTING, "a"), NOW)
    for key in (DynamoLease.KEY, DynamoJobBook.JOB_KEY, DynamoJobBook.IN_FLIGHT_KEY):
        assert key.startswith("#")  # bucket names start with a letter or digit
    assert store.get_many(["bucket/incoming/rex.jpg"]) == {}
    for index in ("by-breed", "by-problem"):
        scanned = aws.clients["dynamodb"].scan(TableName=aws.stack.names.table, IndexName=index)
        assert scanned["Items"] == []
