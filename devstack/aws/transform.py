"""A local batch transform: moto records CreateTransformJob (as Completed, at once) but never runs a
job. The runner finds each new job and runs it as SageMaker does:
- after a simulated instance start-up delay, start InstanceCount model containers with the model's
  environment plus the job's; the input objects (a manifest's entries, or every object under a
  prefix) are partitioned between them by object;
- SplitType=None sends each object whole; SplitType=Line splits it into records, and
  BatchStrategy=MultiRecord packs as many whole records as fit in MaxPayloadInMB into one request
  (SingleRecord sends one each); up to MaxConcurrentTransforms requests per instance at once, from
  as many of its objects as keep them busy;
- AssembleWith=Line writes the answers of an object in input order, a newline after each, to
  `<S3OutputPath>/<relative key>.out`;
- a failed request (after InvocationsMaxRetries) leaves its input file without output and fails
  the job with a reason once the other files are done ("a transform job continues to process input
  files even if it fails to process one", the developer guide's batch-transform-errors page); a
  container that never becomes healthy fails it at once. The "SageMaker Transform Job State
  Change" event goes to the event bus.

`limit_jobs_in_flight` makes moto's CreateTransformJob answer ResourceLimitExceeded, as an
account's transform-instance quota does."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

import answers
from devstack.aws.account import ACCOUNT, REGION
from devstack.aws.container import ContainerFailed
from devstack.aws.event_sources import bus_event
from pipeline.logic.s3uri import S3Uri

log = logging.getLogger("devstack")


class Container(Protocol):
    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]: ...

    def stop(self) -> None: ...

    def kill(self) -> int | None: ...


# (model name, environment, job name) -> a started container serving that model
StartContainer = Callable[[str, dict[str, str], str], Container]


MIB = 1_048_576


def max_request_bytes(max_payload_mb: int) -> int:
    """The largest request SageMaker sends a transform job's container: MaxPayloadInMB in MiB (the
    SageMaker SDK's local mode multiplies it by 1024 x 1024; AWS's pages say "MB"), the larger of the
    two readings, so the container's limits are tested against the worse one."""
    return max_payload_mb * MIB


class JobFailed(Exception):
    """The job stops here; its message is the job's FailureReason."""


def limit_jobs_in_flight(limit: int) -> Callable[[], None]:
    """Make CreateTransformJob refuse a job while `limit` jobs are InProgress, as SageMaker does when
    the account's quota of transform instances is used up. moto runs in this process. Returns what
    lifts the limit."""
    from moto.sagemaker.exceptions import SagemakerClientError
    from moto.sagemaker.models import SageMakerModelBackend, sagemaker_backends

    class ResourceLimitExceeded(SagemakerClientError):
        code = "ResourceLimitExceeded"

    backend = sagemaker_backends[ACCOUNT][REGION]
    create = SageMakerModelBackend.create_transform_job

    def create_within_quota(*args: Any, **kwargs: Any) -> Any:
        running = sum(job.transform_job_status == "InProgress" for job in backend.transform_jobs.values())
        if running >= limit:
            instance_type = kwargs.get("transform_resources", {}).get("InstanceType", "ml.c6i.xlarge")
            raise ResourceLimitExceeded(
                f"The account-level service limit '{instance_type} for transform job usage' is {limit} Instances, "
                f"with current utilization of {running} Instances and a request delta of 1 Instances."
            )
        job = create(backend, *args, **kwargs)
        job.transform_job_status = "InProgress"  # the truth until the runner finishes it
        return job

    backend.create_transform_job = create_within_quota  # type: ignore[method-assign]
    return lambda: vars(backend).pop("create_transform_job", None)


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
        startup_s: float = 0.0,
        release: Callable[[Container], None] | None = None,
        models: Collection[str] | None = None,
    ) -> None:
        self.sagemaker = sagemaker
        # SageMaker runs every job of the account; a local stack runs those of its own models (None:
        # every job), whose containers it starts, beside another stack in the same account.
        self.models = models
        self.s3 = s3
        self.start_container = start_container
        # What becomes of a job's containers when it ends: stopped, unless the caller keeps them warm.
        self.release = release or (lambda container: container.stop())
        self.publish = publish
        self.poll_s = poll_s
        self.startup_s = startup_s  # each job's instances take this long to start (SageMaker: minutes)
        self.finished: list[dict[str, Any]] = []  # the events of the jobs run so far
        self.running: dict[str, list[Container]] = {}  # job name -> its instances' containers, while it runs
        self.requests = 0  # requests sent to model containers, retries included
        self.records = 0  # records (images) in those requests
        self.job_records: dict[str, int] = {}  # job name -> records its requests carried
        self.instance_seconds: dict[str, float] = {}  # job name -> its instances' running time, start-up excluded
        self.poisoned: list[str] = []  # record ids whose every request fails (poison_next_request)
        self._poison_armed = False
        self.failed_unanswered: list[str] = []  # jobs failed before answering anything (fail_next_job)
        self._fail_armed = False
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
        """Start no more jobs, and end the running ones now: their containers are stopped, so their
        requests fail at once (as StopTransformJob ends a job) instead of running to the end."""
        self._stopping.set()
        self._thread.join()
        for containers in list(self.running.values()):
            for container in containers:
                container.stop()
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
                if self._ours(name):
                    self._running.append(self._pool.submit(self._run, name))

    def _ours(self, name: str) -> bool:
        if self.models is None:
            return True
        try:
            return self.sagemaker.describe_transform_job(TransformJobName=name)["ModelName"] in self.models
        except Exception:
            log.exception("describing transform job %s failed", name)
            self._seen.discard(name)  # asked again on the next look
            return False

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
        containers: list[Container] = []
        try:
            time.sleep(self.startup_s)
            running_since = time.perf_counter()
            if self._fail_armed:
                self._fail_armed = False
                self.failed_unanswered.append(name)
                raise ContainerFailed("the model container did not pass /ping (a fault: fail_next_job)")
            count = int(job["TransformResources"].get("InstanceCount", 1))
            for number in range(count):
                job_env = dict(job.get("Environment", {}))
                containers.append(self.start_container(job["ModelName"], job_env, f"{name}-{number + 1}"))
            self.running[name] = containers
            self._transform(job, containers)
        except JobFailed as exc:
            status, reason = "Failed", str(exc)
        except ContainerFailed as exc:  # the container never became healthy
            status, reason = "Failed", f"AlgorithmError: {exc}"
        finally:
            self.running.pop(name, None)
            for container in containers:
                self.release(container)
            if containers:
                self.instance_seconds[name] = (time.perf_counter() - running_since) * len(containers)
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

    def _transform(self, job: dict[str, Any], containers: list[Container]) -> None:
        objects = list(self._inputs(job))
        with ThreadPoolExecutor(len(containers), thread_name_prefix="transform-instance") as instances:
            runs = [
                instances.submit(self._run_instance, job, container, objects[number :: len(containers)])
                for number, container in enumerate(containers)
            ]
            for run in runs:
                run.result()  # the first instance to fail fails the job

    def _run_instance(self, job: dict[str, Any], container: Container, objects: list[tuple[str, str, str]]) -> None:
        """One instance's share of the objects: up to MaxConcurrentTransforms requests at once, from as
        many objects as keep them busy (a file of one record is one request); each file's answers are
        written, in its records' order, once it is done."""
        output = S3Uri.parse(job["TransformOutput"]["S3OutputPath"].rstrip("/") + "/")
        newline = job["TransformOutput"].get("AssembleWith", "None") == "Line"
        concurrency = int(job.get("MaxConcurrentTransforms") or 1)
        failures: list[JobFailed] = []

        def transform(bucket: str, key: str, relative: str) -> None:
            try:
                try:
                    body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                except Exception as exc:
                    raise JobFailed(f"ClientError: cannot read s3://{bucket}/{key}: {exc}") from exc
                batches = self._requests(job, body, f"s3://{bucket}/{key}")
                answers = list(requests.map(self._invoke, [job] * len(batches), [container] * len(batches), batches))
            except JobFailed as exc:  # no output for this file; the job goes on with the others, then fails
                failures.append(exc)
                return
            assembled = b"".join(answer + b"\n" if newline else answer for answer in answers)
            self.s3.put_object(Bucket=output.bucket, Key=f"{output.key}{relative}.out", Body=assembled)

        with (
            ThreadPoolExecutor(concurrency, thread_name_prefix="transform-request") as requests,
            ThreadPoolExecutor(concurrency, thread_name_prefix="transform-file") as files,
        ):
            for done in [files.submit(transform, *entry) for entry in objects]:
                done.result()
        if failures:
            raise failures[0]

    @staticmethod
    def _requests(job: dict[str, Any], body: bytes, where: str) -> list[tuple[bytes, int]]:
        """The requests (payload, record count) an object becomes under the job's split and batch strategy."""
        max_bytes = max_request_bytes(int(job.get("MaxPayloadInMB", 6)))
        if job["TransformInput"].get("SplitType", "None") != "Line":
            if len(body) > max_bytes:
                raise JobFailed(f"ClientError: {where} is larger than MaxPayloadInMB")
            return [(body, 1)]
        records = [line for line in body.split(b"\n") if line.strip()]
        if job.get("BatchStrategy", "MultiRecord") != "MultiRecord":
            return [(record, 1) for record in records]
        batches: list[tuple[bytes, int]] = []
        current: list[bytes] = []
        size = 0
        for record in records:
            if len(record) > max_bytes:
                raise JobFailed(f"ClientError: a record of {where} is larger than MaxPayloadInMB")
            if current and size + 1 + len(record) > max_bytes:
                batches.append((b"\n".join(current), len(current)))
                current, size = [], 0
            current.append(record)
            size += len(record) + 1
        if current:
            batches.append((b"\n".join(current), len(current)))
        return batches

    def fail_next_job(self) -> None:
        """A fault: the next job fails before answering anything, as when its container never
        becomes healthy: no output at all, every image unanswered."""
        self._fail_armed = True

    def poison_next_request(self) -> None:
        """A fault: the first record of the next multi-record request becomes poison, and every
        request that holds it fails with a 500, as a model container that crashes on one input does."""
        self._poison_armed = True

    def _poisoned(self, body: bytes, content_type: str) -> bool:
        if content_type != answers.JSON_LINES or not (self._poison_armed or self.poisoned):
            return False
        ids = [answers.loads_record(line)[0] for line in body.split(b"\n") if line.strip()]
        with self._count:
            if self._poison_armed and ids:
                self._poison_armed = False
                self.poisoned.append(ids[0])
                log.info("record %s poisoned: every request holding it fails", ids[0])
            return any(record_id in self.poisoned for record_id in ids)

    def _invoke(self, job: dict[str, Any], container: Container, batch: tuple[bytes, int]) -> bytes:
        content_type = job["TransformInput"].get("ContentType", "application/octet-stream")
        accept = job["TransformOutput"].get("Accept", "application/json")
        retries = int(job.get("ModelClientConfig", {}).get("InvocationsMaxRetries", 3))
        body, records = batch
        poisoned = self._poisoned(body, content_type)
        for _ in range(retries + 1):
            with self._count:
                self.requests += 1
                self.records += records
                name = job["TransformJobName"]
                self.job_records[name] = self.job_records.get(name, 0) + records
            if poisoned:
                status, answer = 500, b"the model container crashed on a record of this request"
                continue
            status, _, answer = container.invoke(body, content_type, accept)
            if status < 500:
                break
        if status != 200:
            raise JobFailed(
                f"AlgorithmError: the model container answered {status} for a request: "
                f"{answer[:200].decode(errors='replace')}"
            )
        return answer

    @staticmethod
    def _event(job: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
        detail = {k: v for k, v in job.items() if k != "ResponseMetadata"}
        detail.update(TransformJobStatus=status)
        if reason:
            detail["FailureReason"] = reason
        for stamp in ("CreationTime", "TransformStartTime", "TransformEndTime", "LastModifiedTime"):
            if isinstance(detail.get(stamp), datetime):
                detail[stamp] = int(detail[stamp].timestamp() * 1000)  # epoch milliseconds, as real events carry
        return bus_event("aws.sagemaker", "SageMaker Transform Job State Change", [job["TransformJobArn"]], detail)
