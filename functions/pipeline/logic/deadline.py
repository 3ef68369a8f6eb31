"""When an invocation stops starting new work.

Lambda kills a function at its timeout with no chance to clean up (Lambda developer guide, "Lambda
context object in Python"). A function that works through a batch checks its deadline before each
piece of work, and past `stop_at` hands the rest back (to its queue, or to the next collection), so
that what it has done is recorded and nothing is half done. The last piece of work started before
`stop_at` must end within the rest of the time: tests/unit/test_limits.py checks each function's
worst piece against its timeout at the template's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Stop starting work at this share of an invocation's time: the worst piece of work then ends under
# 80% of the timeout (the margin the soak checks).
WORK_SHARE = 0.75


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

    def passed(self, now: datetime) -> bool:
        return now >= self.stop_at
