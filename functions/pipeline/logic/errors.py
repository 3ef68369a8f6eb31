"""Domain errors. Each one decides what the pipeline records for an image."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class for the pipeline's own errors."""


class RejectedImage(PipelineError):
    """The image can never be classified as it is: it gets a REJECTED record with this reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class ObjectChanged(PipelineError):
    """The object was overwritten after this event was sent. The newer upload's own event
    classifies the new content, so this (stale) event records nothing."""


class TransientError(PipelineError):
    """A dependency failed in a way that may pass (throttling, a cold or faulty endpoint).
    The message is retried by SQS and ends in the DLQ if it keeps failing."""


class NoCapacity(TransientError):
    """SageMaker cannot start another transform job now (the account's quota, or throttling).
    Images wait for capacity; this is never a reason to give up on them."""


class MalformedMessage(PipelineError):
    """An SQS message that is not an S3 event notification. It is retried and lands in the DLQ."""
