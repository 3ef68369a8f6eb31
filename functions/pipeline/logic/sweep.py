"""Collect the transform jobs whose end was not collected in time.

A job's end reaches the collector as an EventBridge event, which may never come: "in some rare
cases an event might not be delivered" (EventBridge user guide, "Event delivery from AWS
services"), and an event the collector fails on ends in its dead-letter queue. A collection may
also stop at its deadline with part of a large failed job left. Either way the job's item stays
uncollected, and until it is collected its images have no outcome and, while it counts in flight,
it holds one of MaxTransformJobsInFlight. The sweep runs on a schedule: it asks SageMaker about
every uncollected job and collects each one that ended more than `late_job` ago (LateJobSeconds),
exactly as its event would have been collected."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aws_lambda_powertools import Logger

from pipeline.logic.collect import Collect
from pipeline.logic.deadline import Deadline, Pace
from pipeline.logic.jobs import TERMINAL_JOB_STATES
from pipeline.logic.outcomes import Outcome
from pipeline.logic.ports import JOB_STARTING, JobBook, TransformJobLookup

logger = Logger(child=True)


@dataclass
class SweepResult:
    checked: int = 0  # uncollected jobs asked of SageMaker
    collected: list[str] = field(default_factory=list)  # jobs collected by the sweep (their event was late or lost)
    outcomes: list[Outcome] = field(default_factory=list)


class Sweep:
    def __init__(
        self,
        collect: Collect,
        jobs: JobBook,
        transforms: TransformJobLookup,
        late_job: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.collect = collect
        self.jobs = jobs
        self.transforms = transforms
        self.late_job = late_job
        self.clock = clock

    def run(self, deadline: Deadline | None = None) -> SweepResult:
        deadline = deadline or Deadline.never()
        pace = Pace()  # one for every collection of this sweep: a late one is judged by the earlier ones
        result = SweepResult()
        names = self.jobs.uncollected()
        starting = {job.name for job in self.jobs.get_many(names).values() if job.status == JOB_STARTING}
        for number, name in enumerate(names):
            if number and deadline.passed(self.clock()):
                logger.warning("out of time: the next sweep goes on", jobs_left=len(names) - number)
                break
            result.checked += 1
            job = self.transforms.describe(name)
            if job is None:
                if name in starting:  # its builder is still starting it, or will settle it (build.py)
                    continue
                self.jobs.collected(name, self.clock())  # it never started, and nothing waits on it
                logger.warning("an uncollected job SageMaker does not know is dropped", job_name=name)
                continue
            if job.status not in TERMINAL_JOB_STATES:
                continue
            if job.ended_at is not None and self.clock() - job.ended_at < self.late_job:
                continue  # its event is due, or its collector is running
            logger.warning(
                "a job's end was not collected in time: collecting it now",
                job_name=name,
                status=job.status,
                ended_at=job.ended_at.isoformat() if job.ended_at else None,
            )
            result.outcomes += self.collect.run(job, deadline, pace)
            result.collected.append(name)
        return result
