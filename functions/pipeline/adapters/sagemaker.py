"""SageMaker: the serverless endpoint (InvokeEndpoint) and batch transform jobs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import answers
from pipeline.adapters.aws_errors import AwsError, aws_call, is_retryable
from pipeline.adapters.retry import Backoff
from pipeline.logic.errors import NoCapacity, RejectedImage
from pipeline.logic.jobs import JobEvent

T = TypeVar("T")

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient


def rejection(exc: AwsError) -> RejectedImage:
    """The model answered 4xx: the image is bad. Its message starts with the handler's error record."""
    message = str(exc.response.get("OriginalMessage") or exc.response.get("Error", {}).get("Message", ""))
    record = answers.leading_error(message)
    if record is None:
        return RejectedImage("InvalidImage", message or f"the model refused the image ({exc.model_status})")
    return RejectedImage(record.code, record.message)


class ServerlessEndpoint:
    def __init__(self, client: SageMakerRuntimeClient, name: str, backoff: Backoff | None = None) -> None:
        self.client = client
        self.name = name
        self.backoff = backoff or Backoff()

    def invoke(self, body: bytes, content_type: str, accept: str = "application/json") -> bytes:
        def call() -> bytes:
            with aws_call(f"endpoint {self.name}"):
                response = self.client.invoke_endpoint(
                    EndpointName=self.name, Body=body, ContentType=content_type, Accept=accept
                )
                return bytes(response["Body"].read())

        try:
            return self.backoff.call(call, retry_on=is_retryable, what="sagemaker.invoke_endpoint")
        except AwsError as exc:
            if exc.model_refused:
                raise rejection(exc) from exc
            raise


def transform_job_request(
    name: str,
    *,
    model_name: str,
    source: dict[str, str],
    output_uri: str,
    instance_type: str,
    instance_count: int,
    max_payload_mb: int,
    multi_record: bool = True,
) -> dict[str, Any]:
    """CreateTransformJob's request for our model.

    multi_record (the pipeline's shards): JSON Lines split by line, as many records per request as
    fit in MaxPayloadInMB, answers assembled a line per record in input order. Otherwise one raw
    image per object and request. Either way bad images become error records
    (BAD_INPUT_POLICY=record), so one bad image never fails a job.

    source: the S3DataSource, e.g. {"S3DataType": "ManifestFile", "S3Uri": "s3://b/manifests/job.json"}."""
    if multi_record:
        content, split, assemble = answers.JSON_LINES, "Line", "Line"
    else:
        content, split, assemble = "application/x-image", "None", "None"
    return {
        "TransformJobName": name,
        "ModelName": model_name,
        "MaxPayloadInMB": max_payload_mb,
        # SageMaker caps payload x concurrency at 100 MB.
        "MaxConcurrentTransforms": max(1, 100 // max_payload_mb),
        "BatchStrategy": "MultiRecord" if multi_record else "SingleRecord",
        "Environment": {"BAD_INPUT_POLICY": "record"},
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 1},
        "TransformInput": {"DataSource": {"S3DataSource": source}, "ContentType": content, "SplitType": split},
        "TransformOutput": {
            "S3OutputPath": output_uri,
            "Accept": answers.JSON_LINES if multi_record else "application/json",
            "AssembleWith": assemble,
        },
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
    }


# CreateTransformJob refused for want of capacity: the images wait, they are not failed.
NO_CAPACITY_CODES = frozenset({"ResourceLimitExceeded", "ThrottlingException", "LimitExceededException"})


class TransformJobLookup:
    """Look up the pipeline's batch transform jobs."""

    def __init__(self, client: SageMakerClient, backoff: Backoff | None = None) -> None:
        self.client = client
        self.backoff = backoff or Backoff()

    def _call(self, what: str, operation: str, fn: Callable[[], T]) -> T:
        """Every control-plane call, under one retry policy: the project's backoff on throttling and
        5xx (botocore's own retries are off for SageMaker, see clients.py)."""

        def attempt() -> T:
            with aws_call(what):
                return fn()

        return self.backoff.call(attempt, retry_on=is_retryable, what=f"sagemaker.{operation}")

    def status(self, name: str) -> str | None:
        """The job's TransformJobStatus, or None if SageMaker has no such job."""
        job = self._describe(name)
        return None if job is None else job["TransformJobStatus"]

    def describe(self, name: str) -> JobEvent | None:
        """The job as its state change event gives it (the event's detail is this answer)."""
        job = self._describe(name)
        return None if job is None else JobEvent.from_detail(job)

    def _describe(self, name: str) -> Mapping[str, Any] | None:
        try:
            return self._call(
                f"describing transform job {name}",
                "describe_transform_job",
                lambda: self.client.describe_transform_job(TransformJobName=name),
            )
        except AwsError as exc:
            if exc.code in ("ValidationException", "ResourceNotFound"):
                return None
            raise


class TransformJobs(TransformJobLookup):
    """Start and look up the pipeline's batch transform jobs, each reading a manifest."""

    def __init__(
        self,
        client: SageMakerClient,
        *,
        model_name: str,
        instance_type: str,
        instance_count: int,
        max_payload_mb: int,
        job_prefix: str,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(client, backoff)
        self.job_prefix = job_prefix
        self.model_name = model_name
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.max_payload_mb = max_payload_mb

    def start(self, name: str, manifest_uri: str, output_uri: str) -> None:
        request = transform_job_request(
            name,
            model_name=self.model_name,
            source={"S3DataType": "ManifestFile", "S3Uri": manifest_uri},
            output_uri=output_uri,
            instance_type=self.instance_type,
            instance_count=self.instance_count,
            max_payload_mb=self.max_payload_mb,
        )
        try:
            self._call(
                f"starting transform job {name}",
                "create_transform_job",
                lambda: self.client.create_transform_job(**request),
            )
        except AwsError as exc:
            if exc.code == "ResourceInUse" or "already exists" in str(exc) or "must be unique" in str(exc):
                return  # a retried request (botocore's) whose first attempt created the job: it runs
            if exc.code in NO_CAPACITY_CODES:
                raise NoCapacity(f"{exc.code}: {exc}") from exc
            raise
