"""SageMaker: the serverless endpoint (InvokeEndpoint) and batch transform jobs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.adapters.retry import Backoff
from pipeline.logic.errors import RejectedImage, TransientError

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient

# Errors worth retrying in place: throttling (SageMaker sends HTTP 400 ThrottlingException),
# an endpoint that is scaling from zero, and service-side faults.
_RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ModelNotReadyException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalDependencyException",
    }
)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    """For a ModelError, the status the model container answered with."""
    try:
        return int(exc.response.get("OriginalStatusCode", 0))
    except (TypeError, ValueError):
        return 0


def is_retryable(exc: Exception) -> bool:
    if isinstance(exc, BotoCoreError):  # connection reset, read timeout
        return True
    if not isinstance(exc, ClientError):
        return False
    code = _code(exc)
    if code == "ModelError":  # a container fault (5xx) may pass, e.g. on a cold start
        return not 400 <= _status(exc) < 500
    return code in _RETRYABLE_CODES or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500


def rejection_from_model_error(exc: ClientError) -> RejectedImage:
    """The model answered 4xx: the image is bad. Its body starts with our handler's JSON error
    record; the inference toolkit appends a traceback after it."""
    message = str(exc.response.get("OriginalMessage") or exc.response.get("Error", {}).get("Message", ""))
    try:
        error = json.JSONDecoder().raw_decode(message.strip())[0]["error"]
        return RejectedImage(str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return RejectedImage("InvalidImage", message or f"the model refused the image ({_status(exc)})")


class ServerlessEndpoint:
    def __init__(self, client: SageMakerRuntimeClient, name: str, backoff: Backoff | None = None) -> None:
        self.client = client
        self.name = name
        self.backoff = backoff or Backoff()

    def invoke(self, body: bytes, content_type: str) -> bytes:
        def call() -> bytes:
            response = self.client.invoke_endpoint(
                EndpointName=self.name, Body=body, ContentType=content_type, Accept="application/json"
            )
            return bytes(response["Body"].read())

        try:
            return self.backoff.call(call, retry_on=is_retryable, what="sagemaker.invoke_endpoint")
        except ClientError as exc:
            if _code(exc) == "ModelError" and 400 <= _status(exc) < 500:
                raise rejection_from_model_error(exc) from exc
            raise TransientError(f"endpoint {self.name}: {_code(exc)}: {exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"endpoint {self.name}: {exc}") from exc


class TransformJobs:
    """Start and look up batch transform jobs; each S3 object is one request (SplitType None)."""

    def __init__(
        self,
        client: SageMakerClient,
        *,
        model_name: str,
        instance_type: str,
        instance_count: int,
        max_payload_mb: int,
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.model_name = model_name
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.max_payload_mb = max_payload_mb
        self.backoff = backoff or Backoff()

    def exists(self, name: str) -> bool:
        try:
            self.client.describe_transform_job(TransformJobName=name)
        except ClientError as exc:
            if _code(exc) in ("ValidationException", "ResourceNotFound"):
                return False
            raise TransientError(f"describing transform job {name} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"describing transform job {name} failed: {exc}") from exc
        return True

    def start(self, name: str, manifest_uri: str, output_uri: str) -> None:
        def call() -> None:
            self.client.create_transform_job(
                TransformJobName=name,
                ModelName=self.model_name,
                # One image per request; the model server takes payloads up to this size.
                MaxPayloadInMB=self.max_payload_mb,
                MaxConcurrentTransforms=max(1, 100 // self.max_payload_mb),
                # Ask the handler for per-image error records instead of failing the whole job.
                Environment={"BAD_INPUT_POLICY": "record"},
                ModelClientConfig={"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 1},
                TransformInput={
                    "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": manifest_uri}},
                    "ContentType": "application/x-image",
                    "SplitType": "None",
                },
                TransformOutput={"S3OutputPath": output_uri, "Accept": "application/json", "AssembleWith": "None"},
                TransformResources={"InstanceType": self.instance_type, "InstanceCount": self.instance_count},
            )

        try:
            self.backoff.call(call, retry_on=is_retryable, what="sagemaker.create_transform_job")
        except ClientError as exc:
            if _code(exc) == "ResourceInUse" or "already exists" in str(exc) or "must be unique" in str(exc):
                return  # a retried batch: the job with this name is already running
            raise TransientError(f"starting transform job {name} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"starting transform job {name} failed: {exc}") from exc
