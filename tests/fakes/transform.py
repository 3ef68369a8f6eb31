"""Run a transform job recorded in moto (which never runs one) the way SageMaker does:
one request per manifest entry, `<key>.out` outputs, then the EventBridge state-change event."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.fakes.sagemaker_runtime import model_answer


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def run_transform_job(
    clients: dict[str, Any],
    name: str,
    *,
    fail_on: Callable[[str], bool] = lambda key: False,
    failure_reason: str = "AlgorithmError: See job logs for more information",
) -> dict[str, Any]:
    """Write outputs for the job's images and return its "Transform Job State Change" event.

    With BAD_INPUT_POLICY=record the handler answers 200 with an error record for a bad image.
    An image for which `fail_on` is true makes the job fail there, as a server fault would."""
    s3 = clients["s3"]
    job = clients["sagemaker"].describe_transform_job(TransformJobName=name)
    record_errors = job.get("Environment", {}).get("BAD_INPUT_POLICY") == "record"
    bucket, manifest_key = _split(job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"])
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    in_bucket, in_prefix = _split(manifest[0]["prefix"])
    out_bucket, out_prefix = _split(job["TransformOutput"]["S3OutputPath"].rstrip("/") + "/")
    status, reason = "Completed", None
    for relative in manifest[1:]:
        key = in_prefix + relative
        body = s3.get_object(Bucket=in_bucket, Key=key)["Body"].read()
        code, answer = model_answer(body, job["TransformInput"]["ContentType"])
        if fail_on(key) or (code != 200 and not record_errors):
            status, reason = "Failed", failure_reason
            break
        s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}{relative}.out", Body=json.dumps(answer).encode())
    detail = {k: v for k, v in job.items() if k != "ResponseMetadata"}
    detail.update(TransformJobStatus=status, FailureReason=reason)
    for stamp in ("CreationTime", "TransformStartTime", "TransformEndTime"):
        detail[stamp] = int(detail[stamp].timestamp() * 1000)  # epoch milliseconds, as real events carry
    return {
        "version": "0",
        "id": "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9",
        "detail-type": "SageMaker Transform Job State Change",
        "source": "aws.sagemaker",
        "account": "123456789012",
        "time": "2026-11-21T10:13:00Z",
        "region": "us-east-1",
        "resources": [job["TransformJobArn"]],
        "detail": detail,
    }
