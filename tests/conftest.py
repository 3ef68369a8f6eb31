"""Shared fixtures: moto in server mode as the AWS API, a fake SageMaker runtime, and the
stack's resources provisioned on them from template.yaml; a trained model for the model and stack
tests. Heavy imports (moto, torch) happen in the fixtures that need them, so tests/unit starts fast."""

from __future__ import annotations

import json
import logging
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devstack.aws import moto_s3
from devstack.aws.account import ACCOUNT, REGION, arn
from devstack.aws.lambda_runtime import LambdaContext, sqs_event
from devstack.aws.provision import LocalStack, function_environment
from tests.training import dataset, served_here, trained  # noqa: F401 - session fixtures for every test folder

if TYPE_CHECKING:
    from tests.fakes.sagemaker_runtime import FakeRuntime

REPO = Path(__file__).resolve().parents[1]
EVENTS = REPO / "events"
ENDPOINT = "dogbreed-serverless"
MODEL = "dogbreed-resnet18"
# The import roots pytest uses (pyproject.toml), for the Python processes a test starts.
IMPORT_PATH = os.pathsep.join(
    str(REPO / root)
    for root in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["pythonpath"]
)

# No test may reach real AWS: fixed fake credentials and region for every boto3 client.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION=REGION,
    AWS_REGION=REGION,
)
# Powertools reads these when the handler modules are imported, before any fixture runs.
_template_env = function_environment("IngestFunction")
os.environ.update({k: v for k, v in _template_env.items() if k.startswith("POWERTOOLS_")})
logging.getLogger("werkzeug").setLevel(logging.ERROR)
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_var, None)


def pytest_report_header() -> str:
    """Which case of networks.choose the tests that serve a real model check on this machine."""
    import networks

    return f"CPU flags: {networks.read_cpu_flags().summary}; MODEL_PRECISION=int8 serves {served_here().precision} here"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from devstack.aws import moto_s3, moto_sagemaker

    moto_sagemaker.patch()  # SageMaker's refusals that moto lacks, as the local stack has them
    moto_s3.patch()  # S3's 403 for a missing key to a caller that may not list the bucket
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def runtime() -> Iterator[FakeRuntime]:
    from tests.fakes.sagemaker_runtime import FakeRuntime

    fake = FakeRuntime({ENDPOINT}).start()
    yield fake
    fake.stop()


@dataclass
class Aws:
    clients: dict[str, Any]
    stack: LocalStack
    runtime: FakeRuntime

    @property
    def bucket(self) -> str:
        return self.stack.names.bucket

    def upload(self, key: str, data: bytes) -> str:
        return str(self.clients["s3"].put_object(Bucket=self.bucket, Key=key, Body=data)["ETag"].strip('"'))

    def receive_event(
        self, queue_url: str | None = None, max_messages: int = 10, visibility_timeout: int | None = None
    ) -> dict[str, Any]:
        """Receive what S3 notified, shaped as Lambda's SQS trigger delivers it."""
        url = queue_url or self.stack.queue_url
        extra = {} if visibility_timeout is None else {"VisibilityTimeout": visibility_timeout}
        response = self.clients["sqs"].receive_message(
            QueueUrl=url, MaxNumberOfMessages=max_messages, AttributeNames=["All"], WaitTimeSeconds=0, **extra
        )
        messages = response.get("Messages", [])
        arn = self.clients["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        return sqs_event(messages, arn)

    def item(self, key: str) -> dict[str, Any] | None:
        from boto3.dynamodb.types import TypeDeserializer

        raw = (
            self.clients["dynamodb"]
            .get_item(
                TableName=self.stack.names.table, Key={"image_id": {"S": f"{self.bucket}/{key}"}}, ConsistentRead=True
            )
            .get("Item")
        )
        return {k: TypeDeserializer().deserialize(v) for k, v in raw.items()} if raw else None

    def drain(self, queue_url: str | None = None) -> None:
        self.clients["sqs"].purge_queue(QueueUrl=queue_url or self.stack.queue_url)


@pytest.fixture
def function_env() -> dict[str, str]:
    """Overrides of the functions' environment; a test module redefines this fixture."""
    return {}


@pytest.fixture
def aws(
    moto_url: str, runtime: FakeRuntime, function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Aws]:
    """A fresh local stack per test, with the ingest function's environment from template.yaml."""
    import boto3
    import requests

    from devstack.aws.provision import provision

    requests.post(f"{moto_url}/moto-api/reset", timeout=10)
    moto_s3.reset()
    runtime.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
    functions = ("IngestFunction", "BuildJobsFunction", "CollectFunction")
    environment = {k: v for f in functions for k, v in function_environment(f).items()}
    for key, value in {**environment, **function_env}.items():
        monkeypatch.setenv(key, value)
    _clear_function_caches()
    clients = {name: boto3.client(name) for name in ("s3", "sqs", "dynamodb", "sagemaker")}
    stack = provision(clients)
    clients["sagemaker"].create_model(
        ModelName=MODEL,
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/dogbreed-model",
        PrimaryContainer={"Image": f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"},
    )
    clients["sqs"].purge_queue(QueueUrl=stack.queue_url)  # the s3:TestEvent sent on notification setup
    yield Aws(clients, stack, runtime)
    _clear_function_caches()


def _clear_function_caches() -> None:
    from pipeline.adapters.clients import client
    from pipeline.handlers.build_jobs import build_jobs, job_queue
    from pipeline.handlers.collect import build_collect
    from pipeline.handlers.ingest import build_ingest

    client.cache_clear()
    build_ingest.cache_clear()
    build_jobs.cache_clear()
    job_queue.cache_clear()
    build_collect.cache_clear()


@pytest.fixture(autouse=True)
def backoff_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries back off without sleeping in tests; the waits they would take are recorded."""
    import pipeline.adapters.retry

    waits: list[float] = []
    monkeypatch.setattr(pipeline.adapters.retry, "_sleep", waits.append)
    return waits


@pytest.fixture
def context() -> LambdaContext:
    return LambdaContext("IngestFunction", arn("lambda", "function:IngestFunction"))


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


# The modules that take longest, longest first (their seconds in 4 workers, `--durations=0`, 2026-12-05,
# 2-core AMD EPYC): a hint for the order below, which only the suite's speed depends on.
LONGEST_MODULES = (
    "tests/stack/test_supervision.py",  # 180 s
    "tests/model/test_train.py",  # 178 s
    "tests/stack/test_stack.py",  # 169 s
    "tests/stack/test_stack_failures.py",  # 149 s
    "tests/stack/test_lifecycle.py",  # 128 s
    "tests/stack/test_soak.py",  # 119 s
    "tests/stack/test_pipeline_benchmark.py",  # 96 s
    "tests/iac/test_template.py",  # 70 s
    "tests/stack/test_job_events.py",  # about 60 s (two tests of 21 s and 40 s, measured apart)
    "tests/stack/test_review_loop.py",  # about 50 s (a stack, a second training, a reclassification)
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first, then the others that start stacks, containers or trainings (marked
    slow): `make pytest` hands whole modules to parallel workers in this order (pytest-xdist's
    loadscope), so the long ones start early rather than leaving one worker busy at the end while the
    others wait."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> tuple[int, bool]:
        module = item.nodeid.split("::")[0]
        longest = LONGEST_MODULES.index(module) if module in LONGEST_MODULES else len(LONGEST_MODULES)
        return longest, module not in slow

    items.sort(key=rank)  # stable: each module's order kept
