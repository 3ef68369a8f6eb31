"""When an invocation stops starting new work.

Lambda kills a function at its timeout with no chance to clean up (Lambda developer guide, "Lambda
context object in Python"). A function that works through a batch checks its deadline before each
piece of work, and past `stop_at` hands the rest back (to its queue, or to the next collection), so
that what it has done is recorded and nothing is half done. tests/unit/test_limits.py checks each
function's worst piece against its timeout at the template's defaults. The collector, whose pieces
vary most (a chunk of a completed 20,000-image job's output, a group of a failed one's images),
also judges the next piece by the longest of its kind so far in the invocation (`Pace`), so that a
piece slower than those figures does not run past `stop_at` either, nor a collection the sweep
starts late in its invocation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# Stop starting work at this share of an invocation's time: the worst piece of work then ends under
# 80% of the timeout (the margin the soak checks).
WORK_SHARE = 0.70  # 0.75 until a 50 MP HEIC (no reduced-scale decode) made the ingest function's worst piece 11.9 s


@dataclass(frozen=True)
class Deadline:
    ends_at: datetime  # when Lambda stops the invocation
    stop_at: datetime  # when to stop starting new work

    @classmethod
    def of_invocation(cls, now: datetime, remaining_ms: int) -> Deadline:
        remaining = timedelta(milliseconds=remaining_ms)
        return cls(ends_at=now + remaining, stop_at=now + remaining * WORK_SHARE)

    @classmethod
    def never(cls) -> Deadline:
        """No deadline: a command run by hand, or a test."""
        far = datetime.max.replace(tzinfo=UTC)
        return cls(ends_at=far, stop_at=far)

    def passed(self, now: datetime, *, next_piece: timedelta = timedelta(0)) -> bool:
        """Whether work starting `now` and taking `next_piece` (the longest piece so far) would end
        past stop_at."""
        return now + next_piece >= self.stop_at


@dataclass
class Pace:
    """The longest piece of each kind an invocation has done so far, by which the next piece of that
    kind is judged. The invocation's first piece always runs, so each invocation gets further; one
    shared by the collections of a sweep stops the sweep from starting a collection whose first
    piece would end past the deadline."""

    longest: dict[str, timedelta] = field(default_factory=dict)

    def allows(self, now: datetime, deadline: Deadline, kind: str) -> bool:
        """Whether a piece of this kind started now would end before the deadline's stop_at."""
        if not self.longest:
            return True
        return not deadline.passed(now, next_piece=self.longest.get(kind, timedelta(0)))

    def took(self, kind: str, started: datetime, ended: datetime) -> None:
        self.longest[kind] = max(self.longest.get(kind, timedelta(0)), ended - started)
