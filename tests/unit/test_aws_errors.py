"""One translation of AWS failures: which are retried in place, which are the image's fault."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

import answers
from pipeline.adapters.aws_errors import AwsError, aws_call, is_retryable
from pipeline.adapters.sagemaker import rejection
from pipeline.logic.errors import TransientError


def client_error(code: str, status: int, **extra: Any) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "..."}, "ResponseMetadata": {"HTTPStatusCode": status}, **extra}
    return ClientError(response, "InvokeEndpoint")


def translated(exc: Exception) -> AwsError:
    with pytest.raises(AwsError) as caught, aws_call("calling AWS"):
        raise exc
    return caught.value


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (client_error("ThrottlingException", 400), True),  # how SageMaker throttles
        (client_error("ModelNotReadyException", 429), True),
        (client_error("ModelError", 424, OriginalStatusCode=503), True),  # a cold or crashed container
        (client_error("ModelError", 424, OriginalStatusCode=400), False),  # the model refused the image
        (client_error("ServiceUnavailable", 503), True),
        (client_error("SomethingNew", 500), True),
        (client_error("ValidationError", 400), False),  # e.g. an unknown endpoint
        (client_error("AccessDeniedException", 400), False),
        (EndpointConnectionError(endpoint_url="https://runtime.sagemaker"), True),
    ],
)
def test_what_is_retried_in_place(exc: Exception, retryable: bool) -> None:
    error = translated(exc)
    assert isinstance(error, TransientError)  # unless an adapter knows better, the message is retried
    assert error.retryable is retryable
    assert is_retryable(error) is retryable
    assert str(error).startswith("calling AWS failed: ")


def test_other_errors_pass_through_untouched() -> None:
    with pytest.raises(KeyError), aws_call("calling AWS"):
        raise KeyError("not an AWS failure")
    assert not is_retryable(RuntimeError("boom"))


def test_a_model_refusal_becomes_a_rejection_with_the_handler_reason() -> None:
    record = answers.ErrorRecord("InvalidImage", "cannot decode the image: image file is truncated")
    message = answers.dumps(record) + "\nTraceback (most recent call last): ..."
    error = translated(client_error("ModelError", 424, OriginalStatusCode=400, OriginalMessage=message))
    assert error.model_refused
    rejected = rejection(error)
    assert (rejected.code, rejected.reason) == (record.code, record.message)


def test_a_refusal_without_a_record_keeps_the_message() -> None:
    error = translated(client_error("ModelError", 424, OriginalStatusCode=413, OriginalMessage="payload too big"))
    assert (rejection(error).code, rejection(error).reason) == ("InvalidImage", "payload too big")
