"""Check an AWS account before the first `sam deploy`: what would fail the stack, or leave images
waiting, and what to ask Service Quotas for.

    make preflight ARGS="--region eu-west-1 --parameter ModelDataUrl=s3://my-bucket/model.tar.gz"

The parameters are template.yaml's defaults, then those `sam deploy --guided` saved in samconfig.toml,
then each --parameter. Read-only: it calls only Describe, Get, List and Head APIs. Exit status 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import ClientError

from infra.template import load_template, parameter_defaults, resolve
from pipeline.logic.s3uri import S3Uri

REPO = Path(__file__).resolve().parents[1]
LAMBDA_CONCURRENCY_QUOTA = "L-B99A9384"  # Lambda's "Concurrent executions"
BUILDER_CONCURRENCY = 2  # the job builder's event source: MaximumConcurrency, the fewest SQS allows
COLLECTOR_CONCURRENCY = 1  # one collection per finished job
FAILED_STACK_STATES = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED", "CREATE_FAILED")
# Serverless Inference is offered in "all AWS commercial Regions where SageMaker is available (except
# the AWS China Regions)" (SageMaker developer guide, serverless-endpoints); template.yaml's Rules agree.
NO_SERVERLESS_INFERENCE = ("cn-north-1", "cn-northwest-1")

Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    request: str | None = None  # what to ask for in Service Quotas, when that is the fix


@dataclass(frozen=True)
class Plan:
    """What `sam deploy` would create: the stack, its region and its parameters."""

    stack: str
    region: str
    parameters: Mapping[str, str]

    def number(self, name: str) -> int:
        return int(self.parameters[name])

    @property
    def creates_model(self) -> bool:
        return bool(self.parameters["ModelDataUrl"])

    def log_groups(self, template: dict[str, Any]) -> list[str]:
        refs = {"AWS::StackName": self.stack, **self.parameters}
        return [
            str(resolve(resource["Properties"]["LogGroupName"], refs))
            for resource in template["Resources"].values()
            if resource["Type"] == "AWS::Logs::LogGroup" and (self.creates_model or "Condition" not in resource)
        ]


class Account:
    """The read-only calls the checks make, over injected boto3 clients."""

    def __init__(self, clients: Mapping[str, Any]) -> None:
        self.clients = clients

    def stack_status(self, stack: str) -> str | None:
        try:
            stacks = self.clients["cloudformation"].describe_stacks(StackName=stack)["Stacks"]
        except ClientError as exc:
            if "does not exist" in str(exc):
                return None
            raise
        return str(stacks[0]["StackStatus"])

    def unreserved_lambda_concurrency(self) -> int:
        settings = self.clients["lambda"].get_account_settings()
        return int(settings["AccountLimit"]["UnreservedConcurrentExecutions"])

    def quotas(self, service: str) -> dict[str, float]:
        """Quota name -> value: the defaults, overlaid with what the account has been granted."""
        client = self.clients["service-quotas"]
        values: dict[str, float] = {}
        for operation in ("list_aws_default_service_quotas", "list_service_quotas"):
            for page in client.get_paginator(operation).paginate(ServiceCode=service):
                values.update({quota["QuotaName"]: float(quota["Value"]) for quota in page["Quotas"]})
        return values

    def bucket_region(self, bucket: str) -> str:
        # S3 writes no constraint for us-east-1, and "EU" for buckets made as EU in eu-west-1.
        location = self.clients["s3"].get_bucket_location(Bucket=bucket)["LocationConstraint"] or "us-east-1"
        return "eu-west-1" if location == "EU" else str(location)

    def object_readable(self, uri: S3Uri) -> bool:
        return self._exists(lambda: self.clients["s3"].head_object(Bucket=uri.bucket, Key=uri.key))

    def object_kms_key(self, uri: S3Uri) -> str | None:
        """The KMS key an SSE-KMS object is encrypted under (its ARN), or None."""
        head = self.clients["s3"].head_object(Bucket=uri.bucket, Key=uri.key)
        return str(head["SSEKMSKeyId"]) if head.get("ServerSideEncryption") == "aws:kms" else None

    def key_is_aws_managed(self, key: str) -> bool:
        return bool(self.clients["kms"].describe_key(KeyId=key)["KeyMetadata"]["KeyManager"] == "AWS")

    def endpoint_exists(self, name: str) -> bool:
        return self._exists(lambda: self.clients["sagemaker"].describe_endpoint(EndpointName=name))

    def model_exists(self, name: str) -> bool:
        return self._exists(lambda: self.clients["sagemaker"].describe_model(ModelName=name))

    def log_group_exists(self, name: str) -> bool:
        groups = self.clients["logs"].describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        return any(group["logGroupName"] == name for group in groups)

    @staticmethod
    def _exists(call: Callable[[], Any]) -> bool:
        try:
            call()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound", "403", "ValidationException"):
                return False
            raise
        return True


# -- the checks ----------------------------------------------------------------------------------


def check_stack(plan: Plan, status: str | None) -> Check:
    if status is None:
        return Check("stack", "ok", f"{plan.stack} is new: sam deploy creates it")
    if status in FAILED_STACK_STATES:
        return Check(
            "stack", "FAIL", f"{plan.stack} is {status}: delete it first (sam delete --stack-name {plan.stack})"
        )
    if status.endswith("_IN_PROGRESS"):
        return Check("stack", "FAIL", f"{plan.stack} is {status}: wait until it settles")
    return Check("stack", "ok", f"{plan.stack} exists ({status}): sam deploy updates it")


def check_parameters(plan: Plan) -> Check:
    provisioned, maximum = plan.number("EndpointProvisionedConcurrency"), plan.number("EndpointMaxConcurrency")
    if provisioned > maximum:
        return Check(
            "parameters",
            "FAIL",
            f"EndpointProvisionedConcurrency {provisioned} is over EndpointMaxConcurrency {maximum}; "
            "SageMaker refuses the endpoint config",
        )
    return Check("parameters", "ok", f"provisioned concurrency {provisioned} <= max concurrency {maximum}")


def check_model(plan: Plan, account: Account) -> Check:
    if not plan.creates_model:
        missing = (
            [f"model {plan.parameters['ModelName']}"] if not account.model_exists(plan.parameters["ModelName"]) else []
        )
        if not account.endpoint_exists(plan.parameters["EndpointName"]):
            missing.append(f"endpoint {plan.parameters['EndpointName']}")
        if missing:
            return Check(
                "model",
                "FAIL",
                f"ModelDataUrl is empty, so the stack uses an existing model and endpoint, and there is no "
                f"{' and no '.join(missing)}: set ModelDataUrl to your model.tar.gz",
            )
        return Check("model", "ok", "ModelDataUrl is empty: the stack uses the existing model and endpoint")
    uri = S3Uri.parse(plan.parameters["ModelDataUrl"])
    try:
        region = account.bucket_region(uri.bucket)
    except ClientError as exc:
        return Check("model", "FAIL", f"cannot read the bucket of {uri}: {exc.response['Error']['Code']}")
    if region != plan.region:
        return Check(
            "model",
            "FAIL",
            f"{uri} is in {region}; SageMaker reads model artifacts from the stack's region, {plan.region}: "
            f"copy it to a bucket there (aws s3 cp {uri} s3://<bucket in {plan.region}>/{uri.key}) "
            "and set ModelDataUrl to the copy",
        )
    if not account.object_readable(uri):
        return Check("model", "FAIL", f"{uri} does not exist, or these credentials cannot read it")
    return Check("model", "ok", f"{uri} is in {region}")


def check_model_key(plan: Plan, account: Account) -> Check:
    """SageMaker reads the artifact as the model's role, which needs kms:Decrypt on a customer managed
    key (SageMaker developer guide, "SageMaker roles"); these credentials' reading it proves nothing."""
    if not plan.creates_model:
        return Check("model key", "ok", "the stack creates no model")
    uri = S3Uri.parse(plan.parameters["ModelDataUrl"])
    try:
        key = account.object_kms_key(uri)
    except ClientError as exc:
        return Check("model key", "warn", f"cannot read how {uri} is encrypted: {exc.response['Error']['Code']}")
    if key is None:
        return Check("model key", "ok", f"{uri} is not under a KMS key")
    if account.key_is_aws_managed(key):
        return Check("model key", "ok", f"{uri} is under the AWS managed key {key}, which the account's roles may use")
    if plan.parameters["ModelKmsKeyArn"] != key:
        return Check(
            "model key",
            "FAIL",
            f"{uri} is encrypted with the KMS key {key}: set ModelKmsKeyArn={key} so the model role may decrypt it "
            "(and let the account use it in the key's policy), or SageMaker cannot read the model",
        )
    return Check("model key", "ok", f"{uri} is under {key}, which ModelKmsKeyArn grants the model role")


def check_region(plan: Plan) -> Check:
    if plan.region in NO_SERVERLESS_INFERENCE and plan.parameters["InferenceMode"] != "batch":
        return Check(
            "region",
            "FAIL",
            f"SageMaker Serverless Inference is not offered in {plan.region}: deploy with InferenceMode=batch",
        )
    return Check("region", "ok", f"{plan.region} offers what InferenceMode={plan.parameters['InferenceMode']} uses")


def check_names(plan: Plan, account: Account, template: dict[str, Any], new_stack: bool) -> Check:
    """Names the stack gives its resources that another stack, or a deleted one, may hold."""
    if not new_stack:
        return Check("names", "ok", "the stack exists: it holds its own names")
    taken = [f"log group {name}" for name in plan.log_groups(template) if account.log_group_exists(name)]
    if plan.creates_model and account.endpoint_exists(plan.parameters["EndpointName"]):
        taken.append(f"endpoint {plan.parameters['EndpointName']} (set EndpointName to another name)")
    if taken:
        return Check("names", "FAIL", f"already taken: {'; '.join(taken)}; delete them or use another stack name")
    return Check("names", "ok", "no name the stack creates is taken")


def check_lambda_concurrency(plan: Plan, account: Account) -> Check:
    need = plan.number("EndpointMaxConcurrency") + BUILDER_CONCURRENCY + COLLECTOR_CONCURRENCY
    unreserved = account.unreserved_lambda_concurrency()
    if unreserved < need:
        return Check(
            "lambda concurrency",
            "warn",
            f"{unreserved} unreserved concurrent executions, under the {need} the functions may run at once "
            f"(ingest {plan.number('EndpointMaxConcurrency')}, job builder {BUILDER_CONCURRENCY}, collector "
            f"{COLLECTOR_CONCURRENCY}): batches are throttled and come back later",
            request=f"AWS Lambda, Concurrent executions ({LAMBDA_CONCURRENCY_QUOTA}): at least {need + 10}",
        )
    return Check("lambda concurrency", "ok", f"{unreserved} unreserved concurrent executions (needs {need})")


def check_transform_quota(plan: Plan, quotas: Mapping[str, float]) -> Check:
    if plan.parameters["InferenceMode"] == "serverless":
        return Check("transform instances", "ok", "serverless mode starts no transform jobs")
    instance = plan.parameters["TransformInstanceType"]
    name = f"{instance} for transform job usage"
    per_job, jobs = plan.number("TransformInstanceCount"), plan.number("MaxTransformJobsInFlight")
    if name not in quotas:
        return Check("transform instances", "warn", f"Service Quotas lists no quota {name!r}: check it in the console")
    have = int(quotas[name])
    request = f"Amazon SageMaker, {name}: {per_job * jobs}"
    if have < per_job:
        return Check(
            "transform instances",
            "FAIL",
            f"{name} is {have}, under the {per_job} a job needs: every transform job is refused "
            f"and batched images wait, then are FAILED after MaxBatchWaitMinutes",
            request=request,
        )
    if have < per_job * jobs:
        return Check(
            "transform instances",
            "warn",
            f"{name} is {have}: {have // per_job} of the {jobs} jobs MaxTransformJobsInFlight allows can run",
            request=request,
        )
    return Check("transform instances", "ok", f"{name} is {have} (needs {per_job * jobs})")


def check_serverless_quotas(plan: Plan, quotas: Mapping[str, float]) -> Check:
    if not plan.creates_model:
        return Check("serverless concurrency", "ok", "the stack creates no endpoint")
    serverless = {n: v for n, v in quotas.items() if "serverless" in n.lower() and "concurrency" in n.lower()}
    if not serverless:
        return Check(
            "serverless concurrency", "warn", "Service Quotas lists no serverless concurrency quota: check the console"
        )
    maximum, provisioned = plan.number("EndpointMaxConcurrency"), plan.number("EndpointProvisionedConcurrency")
    short = []
    for name, value in sorted(serverless.items()):
        need = provisioned if "provisioned" in name.lower() else maximum
        if value < need:
            short.append((name, int(value), need))
    if short:
        return Check(
            "serverless concurrency",
            "FAIL",
            "; ".join(f"{name} is {value}, under {need}" for name, value, need in short)
            + ": CreateEndpoint is refused (lower EndpointMaxConcurrency, or ask for more)",
            request="; ".join(f"Amazon SageMaker, {name}: {need}" for name, _, need in short),
        )
    return Check("serverless concurrency", "ok", f"{len(serverless)} serverless quotas cover concurrency {maximum}")


def check_build_tools(which: Callable[[str], str | None] = shutil.which) -> Check:
    if which("make") is None:
        return Check("sam build", "FAIL", "make is not on PATH: sam build runs functions/Makefile with it")
    return Check("sam build", "ok", "functions/Makefile fetches python3.12 arm64 wheels: no python3.12 needed")


def run_checks(plan: Plan, account: Account, template: dict[str, Any]) -> list[Check]:
    status = account.stack_status(plan.stack)
    quotas = account.quotas("sagemaker")
    return [
        check_stack(plan, status),
        check_parameters(plan),
        check_region(plan),
        check_model(plan, account),
        check_model_key(plan, account),
        check_names(plan, account, template, new_stack=status is None),
        check_lambda_concurrency(plan, account),
        check_transform_quota(plan, quotas),
        check_serverless_quotas(plan, quotas),
        check_build_tools(),
    ]


# -- the command ---------------------------------------------------------------------------------


def saved_parameters(samconfig: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The parameter overrides and deploy settings `sam deploy --guided` saved, if any."""
    if not samconfig.exists():
        return {}, {}
    config = tomllib.loads(samconfig.read_text()).get("default", {})
    deploy = config.get("deploy", {}).get("parameters", {})
    overrides = deploy.get("parameter_overrides", [])
    words = shlex.split(overrides) if isinstance(overrides, str) else list(overrides)
    settings = {**config.get("global", {}).get("parameters", {}), **deploy}
    return dict(word.split("=", 1) for word in words), settings


def plan_from(args: argparse.Namespace, template: dict[str, Any], default_region: str | None) -> Plan:
    saved, settings = saved_parameters(args.samconfig)
    parameters = {name: "" if value is None else str(value) for name, value in parameter_defaults(template).items()}
    parameters.update(saved)
    for pair in args.parameter:
        name, _, value = pair.partition("=")
        if name not in parameters:
            raise SystemExit(f"--parameter {name}: template.yaml has no such parameter")
        parameters[name] = value
    region = args.region or settings.get("region") or default_region
    if not region:
        raise SystemExit("no region: pass --region, or set one in your AWS configuration")
    return Plan(args.stack_name or settings.get("stack_name", "dogbreed"), region, parameters)


def report(plan: Plan, checks: list[Check]) -> str:
    lines = [f"preflight: stack {plan.stack} in {plan.region}"]
    lines += [f"  {c.status:<4}  {c.name:<22} {c.detail}" for c in checks]
    requests = [c.request for c in checks if c.request]
    if requests:
        lines.append("Ask Service Quotas (console, or aws service-quotas request-service-quota-increase) for:")
        lines += [f"  - {request}" for request in requests]
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack-name", help="default: samconfig.toml's, else dogbreed")
    parser.add_argument("--region", help="default: samconfig.toml's, else your AWS configuration's")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE", help="a template parameter")
    parser.add_argument("--samconfig", type=Path, default=REPO / "samconfig.toml")
    return parser


def main(argv: list[str] | None = None, session: Any = None) -> int:
    import boto3

    args = get_args_parser().parse_args(argv)
    session = session or boto3.session.Session()
    template = load_template()
    plan = plan_from(args, template, session.region_name)
    services = ("cloudformation", "lambda", "service-quotas", "s3", "sagemaker", "logs", "kms")
    account = Account({name: session.client(name, region_name=plan.region) for name in services})
    checks = run_checks(plan, account, template)
    print(report(plan, checks))
    return 1 if any(c.status == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
