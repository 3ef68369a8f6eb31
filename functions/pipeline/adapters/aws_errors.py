"""One translation of AWS failures for every adapter: whatever botocore raises becomes an AwsError,
a TransientError (the message is retried, then dead-lettered) that keeps the error's code, so an
adapter can turn the codes it understands into domain outcomes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.logic.errors import TransientError

# Worth retrying in place: throttling (SageMaker sends it as HTTP 400), an endpoint scaling from
# zero, and service-side faults.
RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ModelNotReadyException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalDependencyException",
    }
)
NOT_FOUND = frozenset({"NoSuchKey", "404", "ResourceNotFound"})
PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412"})
# S3 answers a read of a missing key 403 to a caller without s3:ListBucket (S3 API reference, GetObject).
ACCESS_DENIED = frozenset({"AccessDenied", "403"})


class AwsError(TransientError):
    def __init__(self, what: str, exc: ClientError | BotoCoreError) -> None:
        self.response: dict[str, Any] = dict(exc.response) if isinstance(exc, ClientError) else {}
        self.code = str(self.response.get("Error", {}).get("Code", ""))
        self.connection_failed = isinstance(exc, BotoCoreError)  # reset, timeout: no answer at all
        super().__init__(f"{what} failed: {exc}")

    @property
    def http_status(self) -> int:
        return int(self.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))

    @property
    def model_status(self) -> int:
        """For a SageMaker ModelError, the status the model container answered with."""
        try:
            return int(self.response.get("OriginalStatusCode", 0))
        except (TypeError, ValueError):
            return 0

    @property
    def model_refused(self) -> bool:
        """The model container answered 4xx: the request (the image) is bad, not the service."""
        return self.code == "ModelError" and 400 <= self.model_status < 500

    @property
    def retryable(self) -> bool:
        if self.connection_failed:
            return True
        if self.code == "ModelError":  # a container fault (5xx) may pass, e.g. on a cold start
            return not self.model_refused
        return self.code in RETRYABLE_CODES or self.http_status >= 500


def is_retryable(exc: Exception) -> bool:
    return isinstance(exc, AwsError) and exc.retryable


@contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Run AWS calls; a failure is raised as AwsError naming `what` failed."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise AwsError(what, exc) from exc
