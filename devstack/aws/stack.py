"""The whole system on one machine, as one process tree on loopback, with no AWS account and no Docker.

- moto in server mode is the AWS API (S3, SQS, DynamoDB, the SageMaker control plane);
- the bucket, queues and table are created from template.yaml (devstack.aws.provision);
- the model.tar.gz is uploaded and registered as the template's SageMaker model, endpoint config
  and endpoint; a local SageMaker runtime serves the endpoint from a model container (the
  inference image's TorchServe and toolkit, devstack.aws.container);
- each Lambda function runs its unchanged handler in execution-environment processes with the
  environment the template gives it, reaching the stack only through AWS_ENDPOINT_URL*;
- Lambda's SQS trigger and the EventBridge rule are run from their translated template settings;
- a transform runner executes the batch transform jobs that moto only records.

`make stack` (devstack.workloads.up) keeps one running until Ctrl-C, for uploads with the AWS CLI or
boto3 and queries with `python -m cli.query`. A part that cannot run on this machine stops what waits
on the stack at once (StackFailed)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
import requests
from botocore.config import Config

from devstack.aws import moto_exports, moto_s3, moto_sagemaker, moto_sqs, moto_streams
from devstack.aws.account import ACCOUNT, CREDENTIALS, REGION, queue_url
from devstack.aws.container import ModelContainer, unpack_model
from devstack.aws.event_sources import ASYNC_RETRY_DELAYS_S, EventBus, RuleTarget, SqsPoller, SqsTrigger
from devstack.aws.iam import MODEL_ROLE, CallRecorder, Verdict, check, template_policies
from devstack.aws.lambda_runtime import FunctionSpec, LambdaFunction
from devstack.aws.meter import OBSERVER, RequestMeter, index_hash_keys
from devstack.aws.pipes import PipeRunner, PipeSpec
from devstack.aws.provision import (
    LocalNames,
    LocalStack,
    function_environment,
    model_environment,
    provision,
    references,
    serverless_config,
)
from devstack.aws.sagemaker_runtime import RuntimeServer
from devstack.aws.transform import Container, TransformRunner, limit_jobs_in_flight
from infra.predictions import Predictions
from infra.template import TEMPLATE_PATH, load_template, parameter_defaults, resolve, translate
from pipeline.logic.s3uri import S3Uri

log = logging.getLogger("devstack")


class StackFailed(Exception):
    """A part of the local stack could not run on this machine (an execution environment or a model
    container that cannot start): what waits on the stack stops at once with the reason."""


REPO = TEMPLATE_PATH.parent
ARTIFACTS_BUCKET = "dogbreed-artifacts-local"
ARTIFACT_KEY = "model/model.tar.gz"
DEFAULT_CONCURRENCY = 10  # functions without a MaximumConcurrency (Lambda's account limit is 1000)


@dataclass(frozen=True)
class StackOptions:
    model_archive: Path
    workdir: Path
    parameters: Mapping[str, str] = field(default_factory=dict)  # as `sam deploy --parameter-overrides`
    moto_port: int = 0
    runtime_port: int = 0
    # Local only: the template's VisibilityTimeout (12 minutes) makes a retry wait 12 minutes; tests
    # that exercise retries and the DLQ shorten it.
    visibility_timeout_s: int | None = None
    # Extra AWS_ENDPOINT_URL_<SERVICE> variables for the functions, e.g. a fault proxy (devstack.aws.faults).
    function_endpoints: Mapping[str, str] = field(default_factory=dict)
    # Waits before Lambda's two retries of a failed async invocation (AWS: about 1 and 2 minutes).
    async_retry_delays_s: tuple[float, ...] = ASYNC_RETRY_DELAYS_S
    # A transform job's instances take this long to start (on AWS: minutes).
    transform_startup_s: float = 0.0
    # The account's quota as jobs in flight: beyond it CreateTransformJob answers ResourceLimitExceeded.
    transform_quota: int | None = None
    # Settings of the model's container environment other than the template's (a test of what they guard).
    model_environment: Mapping[str, str] = field(default_factory=dict)
    # Each function's execution environments held to the share of a CPU its MemorySize buys on AWS
    # (devstack.aws.cpu_share), so that time budgets are exercised as on AWS.
    lambda_cpu_share: bool = False
    # Local only: every schedule's period (the template's rate(10 minutes)), for runs that wait on one.
    schedule_every_s: float | None = None
    # Another stack in the same local account: its name (its resources' names, LocalNames.for_stack) and
    # the account it shares with the others (give the template parameters that name account-wide
    # resources, ModelName and EndpointName, values of its own, as `sam deploy` of a second stack needs).
    name: str = "local"
    account: SharedAccount | None = None


class SharedAccount:
    """Stacks side by side in the local account. moto's state is one per process, as an account's is
    one: the first stack to start resets it, the others find it as it is. SageMaker's job events go to
    the account's default bus, where every stack's rules see every event, as on AWS."""

    def __init__(self) -> None:
        self.stacks = 0  # started in this account
        self.buses: list[EventBus] = []

    def put(self, event: dict[str, Any]) -> None:
        for bus in list(self.buses):
            bus.put(event)


class TranslatedTemplate:
    """The SAM-translated template's resources, their properties resolved for the local stack."""

    def __init__(self, translated: dict[str, Any], names: LocalNames, parameters: dict[str, Any]) -> None:
        self.translated = translated
        self.refs = references(names, parameters)

    def of_type(self, kind: str, *keys: str) -> dict[str, dict[str, Any]]:
        """The given properties of every resource of a kind, by logical id."""
        return {
            logical_id: {key: resolve(r["Properties"][key], self.refs) for key in keys if key in r["Properties"]}
            for logical_id, r in self.translated.items()
            if r["Type"] == kind
        }

    def functions(self) -> dict[str, dict[str, Any]]:
        return self.of_type(
            "AWS::Lambda::Function", "Handler", "Timeout", "MemorySize", "DeadLetterConfig",
            "ReservedConcurrentExecutions",
        )  # fmt: skip

    def sqs_event_source_mappings(self) -> list[dict[str, Any]]:
        mappings = self.of_type(
            "AWS::Lambda::EventSourceMapping", "FunctionName", "EventSourceArn", "BatchSize",
            "MaximumBatchingWindowInSeconds", "FunctionResponseTypes", "ScalingConfig",
        )  # fmt: skip
        return [p for p in mappings.values() if ":sqs:" in p["EventSourceArn"]]


class Stack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.names = LocalNames.for_stack(options.name)
        self.artifact_key = ARTIFACT_KEY if options.name == "local" else f"{options.name}/{ARTIFACT_KEY}"
        self.parameters: dict[str, Any] = {**parameter_defaults(load_template()), **options.parameters}
        self.logs = options.workdir / "logs"
        self._stoppers: list[Any] = []
        self.functions: dict[str, LambdaFunction] = {}
        self.pollers: list[SqsPoller] = []
        self.pipes: list[PipeRunner] = []
        self.resources: LocalStack | None = None
        self.runner: TransformRunner | None = None
        self.bus: EventBus | None = None
        self.runtime: RuntimeServer | None = None
        self.endpoint_container: ModelContainer | None = None
        self.meter: RequestMeter | None = None
        self.calls: CallRecorder | None = None  # every AWS call, by caller (devstack.aws.iam)
        self.endpoint_url = ""
        self.fault: Exception | None = None  # the first part that could not run (see check())
        # Containers of ended transform jobs, by model directory and environment (see keep_warm()).
        self._warm: dict[tuple[Path, tuple[tuple[str, str], ...]], list[ModelContainer]] = {}
        self._warm_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def start(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop in reverse order of start: nothing new arrives while what is in flight finishes."""
        while self._stoppers:
            stop = self._stoppers.pop()
            try:
                stop()
            except Exception:
                log.exception("stopping %s failed", stop)

    def check(self) -> None:
        """Raise StackFailed if a part of the stack could not run; what waits on the stack calls this."""
        if self.fault is not None:
            raise StackFailed(f"the local stack cannot run: {self.fault}") from self.fault

    def _on_fault(self, exc: Exception) -> None:
        if self.fault is None:
            log.error("the local stack cannot run: %s", exc)
            self.fault = exc

    def _start(self) -> None:
        """What `sam deploy` and AWS would do, in order; each part is stopped in reverse order."""
        self.options.workdir.mkdir(parents=True, exist_ok=True)
        self._start_moto()
        self._provision()
        self._register_model()
        self._start_endpoint()
        template = TranslatedTemplate(
            translate(load_template(), self.parameters, REGION)["Resources"], self.names, self.parameters
        )
        reserved = {
            name: int(props["ReservedConcurrentExecutions"])
            for name, props in template.functions().items()
            if "ReservedConcurrentExecutions" in props
        }
        triggers = [SqsTrigger.from_properties(p, reserved) for p in template.sqs_event_source_mappings()]
        self._start_functions(template, {t.function: t.max_concurrency for t in triggers})
        self._start_event_bus(template)
        self._start_pipes(template)
        self._start_transform_runner()
        self._start_pollers(triggers)

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        moto_sqs.patch()  # receives and sends that do not rescan a flood's backlog per message
        moto_sagemaker.patch()  # SageMaker's refusals that moto lacks
        moto_s3.patch()  # a missing key is 403 to a function whose role may not list the bucket
        moto_streams.patch()  # no stream record for a write that changes nothing, as DynamoDB
        moto_exports.patch()  # a table export writes DynamoDB's layout: manifests, data/, export ARN
        account = self.options.account
        fresh = account is None or account.stacks == 0
        if account is not None:
            account.stacks += 1
        if fresh:
            moto_s3.reset()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's HTTP server logs every request
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.options.moto_port, verbose=False)
        moto.start()
        self._stoppers.append(moto.stop)
        server = moto._server  # werkzeug's server, which calls its .app per request
        assert server is not None
        self.calls = CallRecorder(server.app)
        self.meter = server.app = RequestMeter(self.calls, index_keys=index_hash_keys(load_template()))
        host, port = moto.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        if fresh:
            requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10)  # moto's state is per process

    def _provision(self) -> None:
        self.resources = provision(self.clients(), self.names, self.parameters)
        if self.options.visibility_timeout_s is not None:
            for queue_url in (self.resources.queue_url, self.resources.job_queue_url):
                self.client("sqs").set_queue_attributes(
                    QueueUrl=queue_url, Attributes={"VisibilityTimeout": str(self.options.visibility_timeout_s)}
                )
        if self.options.transform_quota is not None:
            limit_jobs_in_flight(self.options.transform_quota)

    def _start_endpoint(self) -> None:
        self.endpoint_container = endpoint = self.start_container(self.parameters["ModelName"], {}, "endpoint")
        self._stoppers.append(endpoint.stop)
        self.runtime = RuntimeServer(
            {self.parameters["EndpointName"]: endpoint.invoke},
            max_concurrency=serverless_config(self.names, self.parameters)["MaxConcurrency"],
            port=self.options.runtime_port,
            recorder=self.calls,
        ).start()
        self._stoppers.append(self.runtime.stop)

    def _start_functions(self, template: TranslatedTemplate, concurrency: dict[str, int]) -> None:
        for logical_id, props in template.functions().items():
            spec = self._function_spec(logical_id, props)
            concurrent = concurrency.get(logical_id, DEFAULT_CONCURRENCY)
            function = LambdaFunction(
                spec, concurrent, self.logs, on_fault=self._on_fault, cpu_share=self.options.lambda_cpu_share
            )
            self.functions[logical_id] = function
            self._stoppers.append(function.stop)

    def _start_pipes(self, template: TranslatedTemplate) -> None:
        """The template's pipes: the table's stream to the default bus, read as each pipe's role."""
        resources = load_template()["Resources"]
        stream_arn = self.client("dynamodb").describe_table(TableName=self.names.table)["Table"]["LatestStreamArn"]
        keys = ("Source", "SourceParameters", "Target", "TargetParameters")
        for logical_id, props in template.of_type("AWS::Pipes::Pipe", *keys).items():
            role = str(resources[logical_id]["Properties"]["RoleArn"]["Fn::GetAtt"][0])
            spec = PipeSpec.of_properties(logical_id, props, role)
            assert self.bus is not None and self.calls is not None
            reader = moto_streams.StreamReader(ACCOUNT, REGION, self.names.table)
            runner = PipeRunner(spec, reader, stream_arn, self.bus, self.calls.record)
            self.pipes.append(runner.start())
            self._stoppers.append(runner.stop)

    def _start_event_bus(self, template: TranslatedTemplate) -> None:
        sqs = self.client("sqs")
        dead_letter_queues = {
            logical_id: sqs.get_queue_url(QueueName=props["DeadLetterConfig"]["TargetArn"].rsplit(":", 1)[1])[
                "QueueUrl"
            ]
            for logical_id, props in template.functions().items()
            if "DeadLetterConfig" in props
        }
        rules = template.of_type("AWS::Events::Rule", "EventPattern", "ScheduleExpression", "Targets")
        targets = [
            RuleTarget.of_rule(logical_id, rule, target["Arn"].rsplit(":", 1)[1], self.options.schedule_every_s)
            for logical_id, rule in rules.items()
            for target in rule["Targets"]
        ]
        self.bus = EventBus(
            targets,
            self.functions,
            dead_letter_queues,
            lambda function: self.client("sqs", identity=function),  # Lambda sends as the function's role
            self.options.async_retry_delays_s,
        ).start()
        self._stoppers.append(self.bus.stop)
        account = self.options.account
        if account is not None:
            account.buses.append(self.bus)
            self._stoppers.append(lambda: account.buses.remove(self.bus))

    def _start_transform_runner(self) -> None:
        assert self.bus is not None
        self.runner = TransformRunner(
            self.client("sagemaker"),
            self.client("s3", identity=MODEL_ROLE),  # a job reads and writes S3 as its model's role
            self.start_container,
            self.bus.put if self.options.account is None else self.options.account.put,
            parallel_jobs=max(2, int(self.parameters["MaxTransformJobsInFlight"])),
            startup_s=self.options.transform_startup_s,
            release=self.keep_warm,
            models=None if self.options.account is None else {self.parameters["ModelName"]},
        )
        self._stoppers.append(self._stop_warm_containers)  # after the runner, whose jobs hand theirs back
        self._stoppers.append(self.runner.start().stop)

    def _start_pollers(self, triggers: list[SqsTrigger]) -> None:
        for trigger in triggers:
            sqs = self.client("sqs", identity=trigger.function)  # the trigger reads as the function's role
            poller = SqsPoller(trigger, sqs, self.functions[trigger.function]).start()
            self.pollers.append(poller)
            self._stoppers.append(poller.stop)

    # -- parts -------------------------------------------------------------------------------

    def client(self, service: str, *, observer: bool = False, identity: str | None = None) -> Any:
        """A boto3 client for this stack (sagemaker-runtime goes to the local runtime, the rest to moto).
        An observer's requests (a user uploading and watching) are not metered; an identity's (a
        function's or a role's logical id) are checked against its role (devstack.aws.iam)."""
        local_runtime = service == "sagemaker-runtime" and self.runtime is not None
        return boto3.client(
            service,
            endpoint_url=self.runtime.url if local_runtime and self.runtime else self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=OBSERVER if observer else identity or CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            # shared by many threads: a transform instance's MaxConcurrentTransforms files, uploads
            config=Config(max_pool_connections=64),
        )

    def clients(self) -> dict[str, Any]:
        return {service: self.client(service) for service in ("s3", "sqs", "dynamodb", "sagemaker", "glue")}

    def upload(self, files: Mapping[str, bytes], threads: int = 8) -> dict[str, str]:
        """Put objects in the images bucket as a user would; returns each key's ETag."""
        s3 = self.client("s3", observer=True)

        def put(item: tuple[str, bytes]) -> tuple[str, str]:
            key, body = item
            return key, str(s3.put_object(Bucket=self.names.bucket, Key=key, Body=body)["ETag"]).strip('"')

        with ThreadPoolExecutor(threads) as pool:
            return dict(pool.map(put, files.items()))

    def wait_for_outcomes(
        self, etags: Mapping[str, str], timeout_s: float, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Poll the table until each key has a final outcome (not PENDING) for the content it was
        uploaded with, or time runs out; returns the records found. Raises StackFailed as soon as a
        part of the stack cannot run."""
        predictions = Predictions(self.client("dynamodb", observer=True), self.names.table)
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            self.check()
            missing = [key for key in etags if key not in found]
            for key, item in predictions.images(self.names.bucket, missing).items():
                if item["etag"] == etags[key] and item["status"] != "PENDING":
                    found[key] = item
            if progress:
                progress(len(found), len(etags))
            if len(found) == len(etags) or time.monotonic() > deadline:
                return found
            time.sleep(0.3 if len(etags) - len(found) <= 1000 else 2.0)  # reads cost moto CPU too

    def permissions(self) -> Verdict:
        """Every call of the functions and of the local SageMaker so far, against their roles in template.yaml."""
        assert self.calls is not None
        policies = template_policies(self.names, self.parameters, f"s3://{ARTIFACTS_BUCKET}/{self.artifact_key}")
        return check(self.calls.calls, policies)

    def user_environment(self) -> dict[str, str]:
        """What the AWS CLI, boto3 and cli.query need to talk to this stack."""
        assert self.runtime is not None
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.runtime.url,
            "AWS_DEFAULT_REGION": REGION,
            **CREDENTIALS,
            "IMAGES_BUCKET": self.names.bucket,
            "PREDICTIONS_TABLE": self.names.table,
            "RECLASSIFY_QUEUE_URL": queue_url(self.names.reclassify_queue),
            "TRANSFORM_MODEL_NAME": self.parameters["ModelName"],
            "ANALYTICS_DATABASE": str(self.parameters.get("AnalyticsDatabase", "")),  # empty: none
        }

    def _function_spec(self, logical_id: str, props: dict[str, Any]) -> FunctionSpec:
        template = load_template()  # the code's location: the translated template has an S3 stand-in
        code_uri = template["Resources"][logical_id]["Properties"].get(
            "CodeUri", template["Globals"]["Function"]["CodeUri"]
        )
        environment = {
            **function_environment(logical_id, self.names, self.parameters),
            **{k: v for k, v in self.user_environment().items() if k.startswith("AWS_")},
            **self.options.function_endpoints,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": logical_id,  # the function's own identity, as its role is on AWS
        }
        role = template["Resources"][template["Resources"][logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]]
        if not moto_s3.may_list(role, "ImagesBucket"):
            moto_s3.cannot_list(logical_id, [self.names.bucket])
        return FunctionSpec(
            name=logical_id,
            handler=props["Handler"],
            code_dir=REPO / code_uri,
            environment=environment,
            timeout_s=float(props["Timeout"]),
            memory_mb=int(props["MemorySize"]),
        )

    def _register_model(self) -> None:
        """What the template's Model, EndpointConfig and Endpoint create, on the local control plane."""
        s3, sagemaker = self.client("s3"), self.client("sagemaker")
        s3.create_bucket(Bucket=ARTIFACTS_BUCKET)  # the account's: us-east-1 answers 200 to its owner again
        s3.upload_file(str(self.options.model_archive), ARTIFACTS_BUCKET, self.artifact_key)
        model_name, endpoint_name = self.parameters["ModelName"], self.parameters["EndpointName"]
        sagemaker.create_model(
            ModelName=model_name,
            ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/dogbreed-model",
            PrimaryContainer={
                "Image": "local/pytorch-inference",
                "ModelDataUrl": f"s3://{ARTIFACTS_BUCKET}/{self.artifact_key}",
                "Environment": {**model_environment(self.names, self.parameters), **self.options.model_environment},
            },
        )  # no EnableNetworkIsolation: serverless endpoints refuse it, as the template knows
        sagemaker.create_endpoint_config(
            EndpointConfigName=endpoint_name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model_name,
                    "ServerlessConfig": serverless_config(self.names, self.parameters),
                }
            ],
        )
        sagemaker.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=endpoint_name)

    def start_container(self, model_name: str, environment: dict[str, str], job_name: str) -> ModelContainer:
        """Start a container for a registered model, as SageMaker does for an endpoint or a job."""
        model = self.client("sagemaker").describe_model(ModelName=model_name)["PrimaryContainer"]
        artifact = S3Uri.parse(model["ModelDataUrl"])
        s3 = self.client("s3", identity=MODEL_ROLE)  # SageMaker reads the artifact as the model's role
        etag = s3.head_object(Bucket=artifact.bucket, Key=artifact.key)["ETag"].strip('"')
        model_dir = self.options.workdir / "models" / etag  # unpacked once per artifact content
        if not model_dir.exists():
            with tempfile.TemporaryDirectory(dir=self.options.workdir) as tmp:
                archive = Path(tmp) / "model.tar.gz"
                s3.download_file(artifact.bucket, artifact.key, str(archive))
                unpack_model(archive, Path(tmp) / "model")
                shutil.move(Path(tmp) / "model", model_dir)
        env = {**model.get("Environment", {}), **environment}
        with self._warm_lock:
            warm = self._warm.get(_warm_key(model_dir, env), [])
            while warm:
                container = warm.pop()
                if container.alive:
                    return container
                container.stop()
        log_path = self.logs / "sagemaker" / f"{job_name}.log"
        return ModelContainer(model_dir, env, log_path, on_fault=self._on_fault).start()

    def keep_warm(self, container: Container) -> None:
        """A transform job's container when the job ends: kept running for the next job of the same
        model and environment, which then starts as if its instances were up at once (the runner still
        waits `transform_startup_s` before each job, 0 unless set). A container that died is not reused,
        nor one of a model replaced since (another artifact, another key); it logs on in its first job's log."""
        if not isinstance(container, ModelContainer) or not container.alive:
            container.stop()
            return
        with self._warm_lock:
            self._warm.setdefault(_warm_key(container.model_dir, container.environment), []).append(container)

    def _stop_warm_containers(self) -> None:
        with self._warm_lock:
            containers = [container for warm in self._warm.values() for container in warm]
            self._warm.clear()
        for container in containers:
            container.stop()


def _warm_key(model_dir: Path, environment: Mapping[str, str]) -> tuple[Path, tuple[tuple[str, str], ...]]:
    return model_dir, tuple(sorted(environment.items()))
