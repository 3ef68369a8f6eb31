"""make preflight (cli/preflight.py) against moto where moto has the calls (CloudFormation, S3,
SageMaker, CloudWatch Logs) and botocore's Stubber where it has not (Lambda's GetAccountSettings,
Service Quotas): each check's verdict, and what it tells the user to request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.stub import Stubber

from cli import preflight
from cli.preflight import Account, Check, Plan
from infra.template import load_template

REGION = "eu-west-1"
ARTIFACTS = "my-models"
TRANSFORM_QUOTA = "ml.c6i.xlarge for transform job usage"
SERVERLESS_TOTAL = "Maximum total concurrency that can be allocated across all serverless endpoints"
SERVERLESS_PER_ENDPOINT = "Maximum concurrency allowed for a serverless endpoint"


def stubbed(service: str, responses: list[tuple[str, dict[str, Any]]]) -> Any:
    client = boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    for operation, response in responses:
        stubber.add_response(operation, response)
    stubber.activate()
    return client


def quota_responses(granted: dict[str, float]) -> list[tuple[str, dict[str, Any]]]:
    defaults = {TRANSFORM_QUOTA: 0.0, SERVERLESS_TOTAL: 10.0, SERVERLESS_PER_ENDPOINT: 200.0, "Other quota": 5.0}
    as_quotas = lambda values: [{"QuotaName": n, "Value": v} for n, v in values.items()]  # noqa: E731
    return [
        ("list_aws_default_service_quotas", {"Quotas": as_quotas(defaults)}),
        ("list_service_quotas", {"Quotas": as_quotas(granted)}),
    ]


def lambda_settings(unreserved: int) -> list[tuple[str, dict[str, Any]]]:
    limit = {"ConcurrentExecutions": unreserved, "UnreservedConcurrentExecutions": unreserved}
    return [("get_account_settings", {"AccountLimit": limit})]


@pytest.fixture
def moto_clients(moto_url: str) -> dict[str, Any]:
    requests.post(f"{moto_url}/moto-api/reset", timeout=10)
    clients = {
        name: boto3.client(name, region_name=REGION, endpoint_url=moto_url)
        for name in ("cloudformation", "s3", "sagemaker", "logs", "kms")
    }
    clients["s3"].create_bucket(Bucket=ARTIFACTS, CreateBucketConfiguration={"LocationConstraint": REGION})
    clients["s3"].put_object(Bucket=ARTIFACTS, Key="model.tar.gz", Body=b"model")
    return clients


def account(moto_clients: dict[str, Any], *, unreserved: int = 10, granted: dict[str, float] | None = None) -> Account:
    return Account(
        {
            **moto_clients,
            "lambda": stubbed("lambda", lambda_settings(unreserved)),
            "service-quotas": stubbed(
                "service-quotas", quota_responses({TRANSFORM_QUOTA: 2} if granted is None else granted)
            ),
        }
    )


def plan(**parameters: str) -> Plan:
    values = {k: "" if v is None else str(v) for k, v in preflight.parameter_defaults(load_template()).items()}
    values["ModelDataUrl"] = f"s3://{ARTIFACTS}/model.tar.gz"
    return Plan("dogbreed", REGION, {**values, **parameters})


def verdicts(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_a_ready_account_passes_every_check(moto_clients: dict[str, Any]) -> None:
    checks = preflight.run_checks(plan(), account(moto_clients), load_template())
    assert {c.name: c.status for c in checks} == dict.fromkeys(
        [
            "stack",
            "parameters",
            "region",
            "model",
            "model key",
            "names",
            "lambda concurrency",
            "transform instances",
            "serverless concurrency",
            "sam build",
        ],
        "ok",
    ), checks
    assert not any(c.request for c in checks)


def test_a_new_accounts_transform_quota_of_zero_fails_and_names_the_quota_to_request(
    moto_clients: dict[str, Any],
) -> None:
    found = verdicts(preflight.run_checks(plan(), account(moto_clients, granted={}), load_template()))
    transform = found["transform instances"]
    assert transform.status == "FAIL" and "ml.c6i.xlarge for transform job usage is 0" in transform.detail
    assert transform.request == "Amazon SageMaker, ml.c6i.xlarge for transform job usage: 2"
    # serverless mode starts no jobs: the quota does not matter there
    serverless = verdicts(
        preflight.run_checks(plan(InferenceMode="serverless"), account(moto_clients, granted={}), load_template())
    )
    assert serverless["transform instances"].status == "ok"


def test_one_transform_instance_runs_one_job_of_two_and_warns(moto_clients: dict[str, Any]) -> None:
    found = verdicts(preflight.run_checks(plan(), account(moto_clients, granted={TRANSFORM_QUOTA: 1}), load_template()))
    assert found["transform instances"].status == "warn" and "1 of the 2 jobs" in found["transform instances"].detail


def test_lambda_concurrency_under_what_the_functions_run_warns_with_the_quota_code(
    moto_clients: dict[str, Any],
) -> None:
    found = verdicts(
        preflight.run_checks(plan(EndpointMaxConcurrency="10"), account(moto_clients, unreserved=10), load_template())
    )
    check = found["lambda concurrency"]
    assert check.status == "warn" and "under the 13" in check.detail
    assert check.request is not None and "L-B99A9384" in check.request


def test_serverless_concurrency_over_the_accounts_total_fails(moto_clients: dict[str, Any]) -> None:
    found = verdicts(preflight.run_checks(plan(EndpointMaxConcurrency="20"), account(moto_clients), load_template()))
    check = found["serverless concurrency"]
    assert check.status == "FAIL" and f"{SERVERLESS_TOTAL} is 10, under 20" in check.detail
    assert check.request == f"Amazon SageMaker, {SERVERLESS_TOTAL}: 20"


def test_an_artifact_in_another_region_fails_with_how_to_copy_it(moto_clients: dict[str, Any], moto_url: str) -> None:
    us_east_1 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_url)
    us_east_1.create_bucket(Bucket="us-models")
    us_east_1.put_object(Bucket="us-models", Key="model.tar.gz", Body=b"model")
    found = verdicts(
        preflight.run_checks(plan(ModelDataUrl="s3://us-models/model.tar.gz"), account(moto_clients), load_template())
    )
    assert found["model"].status == "FAIL" and "is in us-east-1" in found["model"].detail
    assert f"aws s3 cp s3://us-models/model.tar.gz s3://<bucket in {REGION}>/model.tar.gz" in found["model"].detail


def test_a_missing_artifact_fails(moto_clients: dict[str, Any]) -> None:
    found = verdicts(
        preflight.run_checks(plan(ModelDataUrl=f"s3://{ARTIFACTS}/nope.tar.gz"), account(moto_clients), load_template())
    )
    assert found["model"].status == "FAIL" and "does not exist" in found["model"].detail


def test_without_an_artifact_the_named_model_and_endpoint_must_exist(moto_clients: dict[str, Any]) -> None:
    found = verdicts(preflight.run_checks(plan(ModelDataUrl=""), account(moto_clients), load_template()))
    assert found["model"].status == "FAIL"
    assert "no model dogbreed-resnet18 and no endpoint dogbreed-serverless" in found["model"].detail


def test_names_left_by_a_deleted_stack_fail_a_new_one(moto_clients: dict[str, Any]) -> None:
    moto_clients["logs"].create_log_group(logGroupName="/aws/lambda/dogbreed-ingest")  # retained by an old stack
    found = verdicts(preflight.run_checks(plan(), account(moto_clients), load_template()))
    assert found["names"].status == "FAIL" and "log group /aws/lambda/dogbreed-ingest" in found["names"].detail


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(None, "ok"), ("UPDATE_COMPLETE", "ok"), ("ROLLBACK_COMPLETE", "FAIL"), ("UPDATE_IN_PROGRESS", "FAIL")],
)
def test_a_stack_that_failed_its_first_create_must_be_deleted_first(status: str | None, verdict: str) -> None:
    check = preflight.check_stack(plan(), status)
    assert check.status == verdict
    if status == "ROLLBACK_COMPLETE":
        assert "sam delete --stack-name dogbreed" in check.detail


def test_provisioned_concurrency_over_the_maximum_fails() -> None:
    check = preflight.check_parameters(plan(EndpointProvisionedConcurrency="6", EndpointMaxConcurrency="5"))
    assert check.status == "FAIL" and "6 is over EndpointMaxConcurrency 5" in check.detail


def test_sam_build_needs_make_and_no_python_312() -> None:
    assert preflight.check_build_tools(lambda name: None).status == "FAIL"
    assert "no python3.12 needed" in preflight.check_build_tools(lambda name: f"/usr/bin/{name}").detail


def test_the_command_reads_saved_parameters_prints_what_to_request_and_fails(
    moto_clients: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text(
        'version = 0.1\n[default.global.parameters]\nstack_name = "dogs"\n'
        "[default.deploy.parameters]\n"
        f'parameter_overrides = "ModelDataUrl=\\"s3://{ARTIFACTS}/model.tar.gz\\" InferenceMode=\\"batch\\""\n'
    )
    stubs = account(moto_clients, granted={}).clients

    class Session:
        region_name = REGION

        def client(self, name: str, region_name: str) -> Any:
            assert region_name == REGION
            return stubs[name]

    status = preflight.main(["--samconfig", str(samconfig)], session=Session())
    out = capsys.readouterr().out
    assert status == 1
    assert out.startswith(f"preflight: stack dogs in {REGION}")
    assert "FAIL  transform instances" in out
    assert "  - Amazon SageMaker, ml.c6i.xlarge for transform job usage: 2" in out


def test_an_artifact_under_a_customer_managed_key_needs_model_kms_key_arn(moto_clients: dict[str, Any]) -> None:
    """The deployer may read it; the model role may not, without kms:Decrypt on its key."""
    key = moto_clients["kms"].create_key(Description="artifacts")["KeyMetadata"]["Arn"]
    moto_clients["s3"].put_object(
        Bucket=ARTIFACTS, Key="model.tar.gz", Body=b"model", ServerSideEncryption="aws:kms", SSEKMSKeyId=key
    )
    check = verdicts(preflight.run_checks(plan(), account(moto_clients), load_template()))["model key"]
    assert check.status == "FAIL" and f"ModelKmsKeyArn={key}" in check.detail
    granted = verdicts(preflight.run_checks(plan(ModelKmsKeyArn=key), account(moto_clients), load_template()))
    assert granted["model key"].status == "ok"


@pytest.mark.parametrize(("region", "mode", "status"), [("cn-north-1", "auto", "FAIL"), ("cn-north-1", "batch", "ok"),
                                                         ("eu-west-1", "serverless", "ok")])  # fmt: skip
def test_serverless_inference_is_refused_where_aws_does_not_offer_it(region: str, mode: str, status: str) -> None:
    check = preflight.check_region(Plan("dogbreed", region, {**plan().parameters, "InferenceMode": mode}))
    assert check.status == status
