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

    python -m devstack.aws.stack up [--model model.tar.gz] [--parameter Key=Value ...]

keeps it running until Ctrl-C, for uploads with the AWS CLI or boto3 and queries with
`python -m cli.query`. `make stack` does the same."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
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

from cli.query import Predictions
from devstack.aws import moto_s3, moto_sagemaker, moto_sqs
from devstack.aws.account import ACCOUNT, CREDENTIALS, REGION
from devstack.aws.container import ModelContainer, unpack_model
from devstack.aws.event_sources import ASYNC_RETRY_DELAYS_S, EventBus, RuleTarget, SqsPoller, SqsTrigger
from devstack.aws.iam import MODEL_ROLE, CallRecorder, Verdict, check, template_policies
from devstack.aws.lambda_runtime import FunctionSpec, LambdaFunction
from devstack.aws.meter import OBSERVER, RequestMeter
from devstack.aws.provision import (
    LocalNames,
    LocalStack,
    function_environment,
    model_environment,
    provision,
    references,
    resolve,
    serverless_config,
)
from devstack.aws.sagemaker_runtime import RuntimeServer
from devstack.aws.template import TEMPLATE_PATH, load_template, parameter_defaults, translate
from devstack.aws.transform import TransformRunner, limit_jobs_in_flight
from pipeline.logic.s3uri import S3Uri

log = logging.getLogger("devstack")

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
        self.names = LocalNames()
        self.parameters: dict[str, Any] = {**parameter_defaults(load_template()), **options.parameters}
        self.logs = options.workdir / "logs"
        self._stoppers: list[Any] = []
        self.functions: dict[str, LambdaFunction] = {}
        self.pollers: list[SqsPoller] = []
        self.resources: LocalStack | None = None
        self.runner: TransformRunner | None = None
        self.bus: EventBus | None = None
        self.runtime: RuntimeServer | None = None
        self.endpoint_container: ModelContainer | None = None
        self.meter: RequestMeter | None = None
        self.calls: CallRecorder | None = None  # every AWS call, by caller (devstack.aws.iam)
        self.endpoint_url = ""

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

    def _start(self) -> None:
        """What `sam deploy` and AWS would do, in order; each part is stopped in reverse order."""
        self.options.workdir.mkdir(parents=True, exist_ok=True)
        self._start_moto()
        self._provision()
        self._register_model()
        self._start_endpoint()
        template = TranslatedTemplate(
            translate(load_template(), self.parameters)["Resources"], self.names, self.parameters
        )
        reserved = {
            name: int(props["ReservedConcurrentExecutions"])
            for name, props in template.functions().items()
            if "ReservedConcurrentExecutions" in props
        }
        triggers = [SqsTrigger.from_properties(p, reserved) for p in template.sqs_event_source_mappings()]
        self._start_functions(template, {t.function: t.max_concurrency for t in triggers})
        self._start_event_bus(template)
        self._start_transform_runner()
        self._start_pollers(triggers)

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        moto_sqs.patch()  # receives and sends that do not rescan a flood's backlog per message
        moto_sagemaker.patch()  # SageMaker's refusals that moto lacks
        moto_s3.patch()  # a missing key is 403 to a function whose role may not list the bucket
        moto_s3.reset()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's HTTP server logs every request
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.options.moto_port, verbose=False)
        moto.start()
        self._stoppers.append(moto.stop)
        server = moto._server  # werkzeug's server, which calls its .app per request
        assert server is not None
        self.calls = CallRecorder(server.app)
        self.meter = server.app = RequestMeter(self.calls)
        host, port = moto.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
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
            function = LambdaFunction(spec, concurrency.get(logical_id, DEFAULT_CONCURRENCY), self.logs)
            self.functions[logical_id] = function
            self._stoppers.append(function.stop)

    def _start_event_bus(self, template: TranslatedTemplate) -> None:
        sqs = self.client("sqs")
        dead_letter_queues = {
            logical_id: sqs.get_queue_url(QueueName=props["DeadLetterConfig"]["TargetArn"].rsplit(":", 1)[1])[
                "QueueUrl"
            ]
            for logical_id, props in template.functions().items()
            if "DeadLetterConfig" in props
        }
        targets = [
            RuleTarget(logical_id, rule["EventPattern"], target["Arn"].rsplit(":", 1)[1])
            for logical_id, rule in template.of_type("AWS::Events::Rule", "EventPattern", "Targets").items()
            for target in rule["Targets"]
        ]
        self.bus = EventBus(
            targets,
            self.functions,
            dead_letter_queues,
            lambda function: self.client("sqs", identity=function),  # Lambda sends as the function's role
            self.options.async_retry_delays_s,
        )

    def _start_transform_runner(self) -> None:
        assert self.bus is not None
        self.runner = TransformRunner(
            self.client("sagemaker"),
            self.client("s3", identity=MODEL_ROLE),  # a job reads and writes S3 as its model's role
            self.start_container,
            self.bus.put,
            parallel_jobs=max(2, int(self.parameters["MaxTransformJobsInFlight"])),
            startup_s=self.options.transform_startup_s,
        )
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
        )

    def clients(self) -> dict[str, Any]:
        return {service: self.client(service) for service in ("s3", "sqs", "dynamodb", "sagemaker")}

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
        uploaded with, or time runs out; returns the records found."""
        predictions = Predictions(self.client("dynamodb", observer=True), self.names.table)
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while True:
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
        policies = template_policies(self.names, self.parameters, f"s3://{ARTIFACTS_BUCKET}/{ARTIFACT_KEY}")
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
        s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
        s3.upload_file(str(self.options.model_archive), ARTIFACTS_BUCKET, ARTIFACT_KEY)
        model_name, endpoint_name = self.parameters["ModelName"], self.parameters["EndpointName"]
        sagemaker.create_model(
            ModelName=model_name,
            ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/dogbreed-model",
            PrimaryContainer={
                "Image": "local/pytorch-inference",
                "ModelDataUrl": f"s3://{ARTIFACTS_BUCKET}/{ARTIFACT_KEY}",
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
        log_path = self.logs / "sagemaker" / f"{job_name}.log"
        env = {**model.get("Environment", {}), **environment}
        return ModelContainer(model_dir, env, log_path).start()


# -- command line ----------------------------------------------------------------------------


def venv_command(name: str) -> str:
    """A program of this Python's environment (the AWS CLI, python), as a user types it from the
    repository root: `.venv/bin/aws` when run by make."""
    path = Path(sys.executable).parent / name
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up"], help="start the stack and keep it up until Ctrl-C")
    parser.add_argument(
        "--model", type=Path, help="a model.tar.gz from model/training/train.py (default: train a small one)"
    )
    parser.add_argument("--workdir", type=Path, default=REPO / ".devstack", help="logs and unpacked models")
    parser.add_argument("--moto-port", type=int, default=5000)
    parser.add_argument("--runtime-port", type=int, default=8080)
    parser.add_argument(
        "--parameter", action="append", default=[], metavar="KEY=VALUE", help="a template parameter override"
    )
    parser.add_argument("--visibility-timeout", type=int, help="shorten the queue's VisibilityTimeout (seconds)")
    return parser


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("werkzeug", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        from devstack.workloads.quickmodel import train_small_model

        print("no --model given: training a small one on generated images ...", flush=True)
        model = train_small_model(args.workdir / "quickmodel").archive
    options = StackOptions(
        model_archive=model,
        workdir=args.workdir,
        parameters=dict(p.split("=", 1) for p in args.parameter),
        moto_port=args.moto_port,
        runtime_port=args.runtime_port,
        visibility_timeout_s=args.visibility_timeout,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    with Stack(options) as stack:
        exports = " ".join(f"{k}={v}" for k, v in stack.user_environment().items())
        print(f"\nThe stack is up. In another shell:\n\n  export {exports}\n", flush=True)
        print(f"  {venv_command('aws')} s3 cp my-dog.jpg 's3://{stack.names.bucket}/incoming/my dog.jpg'")
        print(f"  {venv_command('python')} -m cli.query image 'incoming/my dog.jpg'")
        print(f"  {venv_command('python')} -m cli.query problems\n")
        print(f"Function and model logs: {stack.logs}/. Ctrl-C stops everything.", flush=True)
        print("READY", flush=True)
        stopping.wait()
        print("stopping ...", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
