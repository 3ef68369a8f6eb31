"""A local batch transform: moto records CreateTransformJob (as Completed, at once) but never runs a
job. The runner finds each new job and runs it as SageMaker does: start the job's model container
with the model's environment plus the job's, send one request per input object (a manifest's
entries, or every object under a prefix), write `<S3OutputPath>/<relative key>.out`, fail the job
with a reason when the container fails, and publish the "SageMaker Transform Job State Change"
event to the event bus."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from devstack.account import ACCOUNT, REGION
from devstack.process import WorkerDied
from pipeline.logic.s3uri import S3Uri

log = logging.getLogger("devstack")


class Container(Protocol):
    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]: ...

    def stop(self) -> None: ...

    def kill(self) -> int | None: ...


# (model name, environment, job name) -> a started container serving that model
StartContainer = Callable[[str, dict[str, str], str], Container]


class JobFailed(Exception):
    """The job stops here; its message is the job's FailureReason."""


def set_moto_status(name: str, status: str, reason: str = "") -> None:
    """Tell the truth in DescribeTransformJob: moto keeps its state in this process, where it
    records every job as Completed at creation."""
    from moto.core.utils import utcnow
    from moto.sagemaker.models import sagemaker_backends

    job = sagemaker_backends[ACCOUNT][REGION].transform_jobs.get(name)
    if job is not None:
        job.transform_job_status, job.failure_reason = status, reason
        job.last_modified_time = utcnow()
        if status != "InProgress":
            job.transform_end_time = job.last_modified_time


class TransformRunner:
    def __init__(
        self,
        sagemaker: Any,
        s3: Any,
        start_container: StartContainer,
        publish: Callable[[dict[str, Any]], None],
        *,
        parallel_jobs: int = 2,
        poll_s: float = 0.5,
    ) -> None:
        self.sagemaker = sagemaker
        self.s3 = s3
        self.start_container = start_container
        self.publish = publish
        self.poll_s = poll_s
        self.finished: list[dict[str, Any]] = []  # the events of the jobs run so far
        self.running: dict[str, Container] = {}  # job name -> its container, while the job runs
        self.requests = 0  # requests sent to model containers, retries included
        self._count = threading.Lock()
        self._seen: set[str] = set()
        self._pool = ThreadPoolExecutor(parallel_jobs, thread_name_prefix="transform-job")
        self._running: list[Future[None]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="transform-runner", daemon=True)

    def start(self) -> TransformRunner:
        self._seen.update(self._job_names())  # jobs from before this runner are not ours to run
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _job_names(self) -> Iterator[str]:
        for page in self.sagemaker.get_paginator("list_transform_jobs").paginate():
            for summary in page["TransformJobSummaries"]:
                yield summary["TransformJobName"]

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_s):
            try:
                new = [name for name in self._job_names() if name not in self._seen]
            except Exception:
                log.exception("listing transform jobs failed")
                continue
            for name in new:
                self._seen.add(name)
                self._running.append(self._pool.submit(self._run, name))

    def _run(self, name: str) -> None:
        try:
            event = self.execute(name)
            self.finished.append(event)
            self.publish(event)
        except Exception:
            log.exception("transform job %s could not be run", name)

    def execute(self, name: str) -> dict[str, Any]:
        """Run one job to its end and return its state-change event."""
        job = self.sagemaker.describe_transform_job(TransformJobName=name)
        set_moto_status(name, "InProgress")
        status, reason = "Completed", ""
        container: Container | None = None
        try:
            container = self.start_container(job["ModelName"], dict(job.get("Environment", {})), name)
            self.running[name] = container
            self._transform(job, container)
        except JobFailed as exc:
            status, reason = "Failed", str(exc)
        except WorkerDied as exc:  # the container never became healthy
            status, reason = "Failed", f"AlgorithmError: {exc}"
        finally:
            self.running.pop(name, None)
            if container is not None:
                container.stop()
        set_moto_status(name, status, reason)
        log.info("transform job %s %s %s", name, status.lower(), reason)
        return self._event(self.sagemaker.describe_transform_job(TransformJobName=name), status, reason)

    def _inputs(self, job: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
        """(bucket, key, key relative to the input prefix) of every object the job reads."""
        source = job["TransformInput"]["DataSource"]["S3DataSource"]
        uri = S3Uri.parse(source["S3Uri"])
        if source["S3DataType"] == "ManifestFile":
            try:
                manifest = self.s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read()
                prefix_entry, *relatives = json.loads(manifest)
                prefix = S3Uri.parse(prefix_entry["prefix"])
            except Exception as exc:
                raise JobFailed(f"ClientError: cannot read the manifest {uri}: {exc}") from exc
            for relative in relatives:
                yield prefix.bucket, prefix.key + relative, relative
        else:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=uri.bucket, Prefix=uri.key):
                for obj in page.get("Contents", []):
                    yield uri.bucket, obj["Key"], obj["Key"][len(uri.key) :]

    def _transform(self, job: dict[str, Any], container: Container) -> None:
        output = S3Uri.parse(job["TransformOutput"]["S3OutputPath"].rstrip("/") + "/")
        content_type = job["TransformInput"].get("ContentType", "application/octet-stream")
        accept = job["TransformOutput"].get("Accept", "application/json")
        max_bytes = int(job.get("MaxPayloadInMB", 6)) * 1_000_000
        retries = int(job.get("ModelClientConfig", {}).get("InvocationsMaxRetries", 3))
        for bucket, key, relative in self._inputs(job):
            try:
                body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except Exception as exc:
                raise JobFailed(f"ClientError: cannot read s3://{bucket}/{key}: {exc}") from exc
            if len(body) > max_bytes:
                raise JobFailed(f"ClientError: s3://{bucket}/{key} is larger than MaxPayloadInMB")
            for _ in range(retries + 1):
                with self._count:
                    self.requests += 1
                status, _, answer = container.invoke(body, content_type, accept)
                if status < 500:
                    break
            if status != 200:
                raise JobFailed(
                    f"AlgorithmError: the model container answered {status} for s3://{bucket}/{key}: "
                    f"{answer[:200].decode(errors='replace')}"
                )
            self.s3.put_object(Bucket=output.bucket, Key=f"{output.key}{relative}.out", Body=answer)

    @staticmethod
    def _event(job: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
        detail = {k: v for k, v in job.items() if k != "ResponseMetadata"}
        detail.update(TransformJobStatus=status)
        if reason:
            detail["FailureReason"] = reason
        for stamp in ("CreationTime", "TransformStartTime", "TransformEndTime", "LastModifiedTime"):
            if isinstance(detail.get(stamp), datetime):
                detail[stamp] = int(detail[stamp].timestamp() * 1000)  # epoch milliseconds, as real events carry
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "SageMaker Transform Job State Change",
            "source": "aws.sagemaker",
            "account": ACCOUNT,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [job["TransformJobArn"]],
            "detail": detail,
        }
