"""The lifecycle table (functions/pipeline/logic/lifecycle.py): its states, its rules, and the one
place the docs show it (docs/architecture.md). tests/pipeline/test_store_contract.py walks every pair
against both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.logic import lifecycle
from pipeline.logic.lifecycle import Change, Event, State, StoredImage, decide, state_of
from pipeline.logic.outcomes import ImageRef, Mode, Outcome, Status

T0 = datetime(2026, 11, 22, 10, tzinfo=UTC)
SECOND = timedelta(seconds=1)
REF = ImageRef("bucket", "incoming/rex.jpg", "a", 10, T0)
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("stored", "job", "state"),
    [
        (None, None, State.NEW),
        (
            StoredImage(ImageRef("bucket", REF.key, "b", 10, T0 - timedelta(seconds=1)), Status.CLASSIFIED),
            None,
            State.NEW,
        ),
        (
            StoredImage(ImageRef("bucket", REF.key, "b", 10, T0 + timedelta(seconds=1)), Status.PENDING),
            None,
            State.NEWER,
        ),
        (StoredImage(REF, Status.PENDING), "job-1", State.WAITING),
        (StoredImage(REF, Status.PENDING, "job-1"), "job-1", State.IN_JOB),
        (StoredImage(REF, Status.PENDING, "job-1"), "job-2", State.IN_OTHER_JOB),
        (StoredImage(REF, Status.PENDING, "job-1"), None, State.IN_OTHER_JOB),
        (StoredImage(REF, Status.CLASSIFIED, "job-1"), "job-1", State.CLASSIFIED),
        (StoredImage(REF, Status.REJECTED), None, State.REJECTED),
        (StoredImage(REF, Status.FAILED), None, State.FAILED),
    ],
)
def test_the_state_of_a_content_is_read_from_its_record(
    stored: StoredImage | None, job: str | None, state: State
) -> None:
    assert state_of(stored, REF, job) is state


def test_an_upload_is_processed_only_while_its_content_has_no_final_record_or_job() -> None:
    processed = {state for state in State if decide(state, Event.UPLOADED) is not None}
    assert processed == {State.NEW, State.WAITING, State.FAILED}


def test_nothing_overwrites_a_final_record_or_newer_content() -> None:
    for event in Event:
        for state in (State.REJECTED, State.NEWER):
            assert decide(state, event) is None, (state, event)
    # a classified record is taken only by make reclassify, and only back to waiting for a job
    taking = {event: decide(State.CLASSIFIED, event) for event in Event if decide(State.CLASSIFIED, event)}
    assert taking == {Event.RECLASSIFY: (State.WAITING,)}


def test_only_the_job_an_image_is_in_records_its_answer() -> None:
    for event in (Event.JOB_ANSWERED, Event.JOB_RETRIED, Event.JOB_FAILED):
        assert lifecycle.sources(event) == {State.IN_JOB}
    assert State.IN_OTHER_JOB not in lifecycle.sources(Event.JOB_STARTED)  # one job at a time


def test_a_change_records_only_what_its_event_may() -> None:
    with pytest.raises(ValueError, match="cannot record"):
        Change(REF, Event.JOB_STARTED, Outcome(Status.PENDING, Mode.BATCH))  # in a job needs the job's name
    with pytest.raises(ValueError, match="cannot record"):
        Change(REF, Event.JOB_RETRIED, Outcome(Status.CLASSIFIED, Mode.BATCH), job="job-1")
    with pytest.raises(ValueError, match="name it"):
        Change(REF, Event.JOB_ANSWERED, Outcome(Status.CLASSIFIED, Mode.BATCH))


def test_the_docs_show_the_table_as_the_code_has_it() -> None:
    assert lifecycle.markdown() in (ROOT / "docs" / "architecture.md").read_text()
