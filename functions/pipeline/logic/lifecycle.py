"""An image's life, written once: its states, the events that move it, and the one table that says
which event may write in which state and what it records.

Every writer decides with `decide`, and every store enforces the same table atomically: the
DynamoDB adapter turns `sources(event)` into its condition expression (one clause per state), the
in-memory store of the tests applies `state_of`. The lifecycle table of docs/architecture.md is `markdown()`.

A state is always of one content (an S3 object version, by its ETag) as a writer sees it: the
record may be of this content, of older content (to be replaced) or of newer content (this
content is gone). "In a job" is relative to the job the writer names: the collector names its
own job; the job builder names a job that will answer nothing more (one that never started, or
that failed or was stopped), which it replaces, or the one it could not start."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pipeline.logic.outcomes import ImageRef, Outcome, Status


class State(StrEnum):
    NEW = "new"  # no record of this content: none yet, or a record of older content
    NEWER = "newer"  # the record is of newer content: this content was overwritten
    WAITING = "waiting"  # PENDING outside a job: its shard is queued, waits for capacity, or is retried
    IN_JOB = "in the job"  # PENDING in the job the writer names (or, as a next state, the job it starts)
    IN_OTHER_JOB = "in another job"  # PENDING in a job the writer does not name
    CLASSIFIED = "classified"
    REJECTED = "rejected"  # bad input: final for this content
    FAILED = "failed"  # the system gave up; `make redrive` (or a new upload) tries again


class Event(StrEnum):
    UPLOADED = "uploaded"  # ingest: an upload's event arrives; it is processed (nothing written yet) or skipped
    ANSWERED = "answered"  # ingest: the endpoint answered, or the image was found bad before sending
    GAVE_UP = "gave up"  # ingest: a transient failure on the event's last delivery
    WAITS = "waits"  # job builder: no capacity for its job now
    JOB_STARTED = "job started"  # job builder: put in a transform job
    WAITED_TOO_LONG = "waited too long"  # job builder: older than MaxBatchWaitMinutes
    JOB_ANSWERED = "job answered"  # collector: the job wrote its answer
    JOB_RETRIED = "job retried"  # collector: the job failed without its answer; its shard is queued again
    JOB_FAILED = "job failed"  # collector: still no answer after the last attempt, or a completed job without it
    RECLASSIFY = "to classify again"  # make reclassify: through the current model, by the flood path


@dataclass(frozen=True)
class Rule:
    sources: frozenset[State]  # the states in which the event may write
    to: tuple[State, ...]  # what it records: one state, or the answer's (CLASSIFIED or REJECTED)


_ANSWER = (State.CLASSIFIED, State.REJECTED)
_BEFORE_A_JOB = frozenset({State.NEW, State.WAITING, State.IN_OTHER_JOB, State.FAILED})
_TO_A_JOB = frozenset({State.NEW, State.WAITING, State.IN_JOB, State.FAILED})
_IN_THE_JOB = frozenset({State.IN_JOB})

# The table. A (state, event) pair not allowed here writes nothing: a duplicate, stale or late event.
# - Ingest never touches a final record of the same content, nor newer content. It may write over
#   an image in a job: an answer is an answer, and the job's own answer then finds it settled.
# - The builder takes images that wait, or sit in the job it names (one that never ran).
# - The collector writes only images still in its own job.
# - Reclassifying takes a classified image of this content back to waiting (again, if a run was
#   interrupted), before its shard is queued; the flood path then records the current model's answer.
RULES: dict[Event, Rule] = {
    Event.UPLOADED: Rule(frozenset({State.NEW, State.WAITING, State.FAILED}), ()),
    Event.ANSWERED: Rule(_BEFORE_A_JOB, _ANSWER),
    Event.GAVE_UP: Rule(_BEFORE_A_JOB, (State.FAILED,)),
    Event.WAITS: Rule(_TO_A_JOB, (State.WAITING,)),
    Event.JOB_STARTED: Rule(_TO_A_JOB, (State.IN_JOB,)),
    Event.WAITED_TOO_LONG: Rule(_TO_A_JOB, (State.FAILED,)),
    Event.JOB_ANSWERED: Rule(_IN_THE_JOB, _ANSWER),
    Event.JOB_RETRIED: Rule(_IN_THE_JOB, (State.WAITING,)),
    Event.JOB_FAILED: Rule(_IN_THE_JOB, (State.FAILED,)),
    Event.RECLASSIFY: Rule(frozenset({State.CLASSIFIED, State.WAITING}), (State.WAITING,)),
}


def decide(state: State, event: Event) -> tuple[State, ...] | None:
    """What the event may record in this state (an empty tuple: go on, nothing to write yet), or
    None: the event writes nothing."""
    rule = RULES[event]
    return rule.to if state in rule.sources else None


def sources(event: Event) -> frozenset[State]:
    return RULES[event].sources


@dataclass(frozen=True)
class StoredImage:
    """The record an image has now."""

    ref: ImageRef
    status: Status
    job_name: str | None = None


def state_of(stored: StoredImage | None, ref: ImageRef, job: str | None = None) -> State:
    """The state of `ref`'s content given the image's record, for a writer that names `job`."""
    if stored is None:
        return State.NEW
    if stored.ref.etag != ref.etag:
        return State.NEW if stored.ref.uploaded_at <= ref.uploaded_at else State.NEWER
    if stored.status is Status.PENDING:
        if stored.job_name is None:
            return State.WAITING
        return State.IN_JOB if stored.job_name == job else State.IN_OTHER_JOB
    return State(stored.status.lower())


def recorded_state(outcome: Outcome) -> State:
    """The state a record of this outcome is in."""
    if outcome.status is Status.PENDING:
        return State.IN_JOB if outcome.job_name else State.WAITING
    return State(outcome.status.lower())


@dataclass(frozen=True)
class Change:
    """One write: `event` records `outcome` for `ref`'s content, if the table allows it in the
    record's state. `job` is the job the writer names (see the module's docstring)."""

    ref: ImageRef
    event: Event
    outcome: Outcome
    job: str | None = None

    def __post_init__(self) -> None:
        rule = RULES[self.event]
        if recorded_state(self.outcome) not in rule.to:
            raise ValueError(f"{self.event} cannot record {self.outcome.status} (job {self.outcome.job_name})")
        if rule.sources == {State.IN_JOB} and self.job is None:
            raise ValueError(f"{self.event} writes only in a job: name it")

    def allowed(self, stored: StoredImage | None) -> bool:
        return decide(state_of(stored, self.ref, self.job), self.event) is not None


def markdown() -> str:
    """The table for the docs: a row per event, a column per state; each cell is what
    the event records there, or a dash where it writes nothing."""
    states = list(State)
    lines = [
        "| event | " + " | ".join(state.value for state in states) + " |",
        "|---|" + "---|" * len(states),
    ]
    for event, rule in RULES.items():
        to = " or ".join(s.value for s in rule.to) if rule.to else "go on"
        cells = [to if state in rule.sources else "-" for state in states]
        lines.append(f"| {event.value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
