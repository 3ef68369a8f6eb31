"""template.yaml: valid SAM, linted, least-privilege IAM, and the settings the pipeline relies on."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from devstack.aws.account import REGION
from devstack.aws.provision import LocalNames, function_environment, references
from devstack.workloads.cost import HOSTS
from infra.template import declared_environment, load_template, resolve, translate
from pipeline.config import BuildSettings, CollectSettings, IngestSettings
from tests.conftest import REPO

SAM = REPO / ".venv-sam" / "bin"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"

# Actions that support no resource-level permissions, so `Resource: "*"` is the only choice.
STAR_RESOURCE_ALLOWED = {
    "xray:PutTraceSegments": "X-Ray has no resource-level permissions",
    "xray:PutTelemetryRecords": "X-Ray has no resource-level permissions",
    "ecr:GetAuthorizationToken": "the ECR login token is account-wide",
    "cloudwatch:PutMetricData": "metrics have no ARN; limited by a cloudwatch:namespace condition instead",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def translated(template: dict[str, Any]) -> dict[str, Any]:
    return translate(template)


@pytest.fixture(scope="module")
def translated_file(translated: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfn") / "translated.json"
    path.write_text(json.dumps(translated, indent=1))
    return path


def tool(path: Path) -> list[str]:
    """A program of a virtual environment, run by that environment's Python: pip writes some scripts
    (checkov's, the AWS CLI's) a `#!` line that Linux cannot run when the checkout's path has a space."""
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make install` (make test does it)")
    return [str(path.parent / "python"), str(path)]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": REGION, "SAM_CLI_TELEMETRY": "0", "HOME": "/tmp"}
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)


# -- linters -------------------------------------------------------------------------------


@pytest.mark.slow  # an external linter
def test_sam_validate_lint() -> None:
    result = run(*tool(SAM / "sam"), "validate", "--lint", "--template-file", "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # an external linter
def test_cfn_lint_on_the_translated_template(translated_file: Path) -> None:
    result = run(*tool(SAM / "cfn-lint"), str(translated_file))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # an external linter
def test_checkov_on_the_translated_template_finds_nothing_unexplained(translated_file: Path) -> None:
    result = run(
        *tool(CHECKOV), "-f", str(translated_file), "--framework", "cloudformation", "--skip-download", "-o", "json"
    )
    report = json.loads(result.stdout)
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 30
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 20, f"{check['check_id']} is skipped without a reason"


def test_every_checkov_skip_in_the_template_carries_a_reason(template: dict[str, Any]) -> None:
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "")) > 20, f"{name} skips {skip['id']} without a reason"


# -- least privilege -----------------------------------------------------------------------


def statements(translated: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM policy statement attached to an identity (roles, policies, managed policies)."""
    for name, resource in translated["Resources"].items():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] == "AWS::IAM::Role":
            assert not props.get("ManagedPolicyArns"), f"{name} attaches managed policies"
            documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents = [props["PolicyDocument"]]
        for document in documents:
            for statement in document["Statement"]:
                if "Fn::If" in statement:  # a statement only under a condition: each branch that is one
                    for branch in statement["Fn::If"][1:]:
                        if branch != {"Ref": "AWS::NoValue"}:
                            yield name, branch
                else:
                    yield name, statement


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def literal(value: Any) -> str:
    """The text of a resource, with Fn::Sub / Fn::GetAtt left as readable placeholders."""
    if isinstance(value, str):
        return value
    if "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    if "Fn::GetAtt" in value:
        return "${" + ".".join(as_list(value["Fn::GetAtt"])) + "}"
    if "Ref" in value:
        return "${" + value["Ref"] + "}"
    if "Fn::If" in value:
        return " | ".join(literal(v) for v in value["Fn::If"][1:])
    raise AssertionError(f"unexpected resource expression {value}")


def test_no_iam_wildcard_outside_the_allow_list(translated: dict[str, Any]) -> None:
    found = list(statements(translated))
    assert len(found) > 10
    for role, statement in found:
        if statement["Effect"] != "Allow":
            continue
        actions = as_list(statement["Action"])
        for action in actions:
            assert "*" not in action, f"{role}: wildcard action {action}"
        for resource in as_list(statement["Resource"]):
            text = literal(resource)
            if text == "*":
                unexplained = set(actions) - set(STAR_RESOURCE_ALLOWED)
                assert not unexplained, f"{role}: Resource '*' for {unexplained}"
            elif "*" in text:
                # A trailing wildcard after a fixed prefix (an S3 key prefix, a job-name prefix, log streams), and
                # at most one whole key segment besides (a trial's id: trials/*/input/*, trials/*/model.tar.gz).
                trailing, segment = bool(re.search(r"[/:-]\*$", text)), text.count("/*/")
                assert trailing or segment, f"{role}: wildcard in {text}"
                assert segment <= 1 and text.count("*") == trailing + segment, f"{role}: wildcard in {text}"
                assert not segment or "/trials/*/" in text, f"{role}: wildcard segment in {text}"
                assert not text.endswith("${ImagesBucket.Arn}/*"), f"{role}: a whole bucket in {text}"


def policy(translated: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for r, s in statements(translated) if r == role}


def test_ingest_role_grants_only_what_the_function_calls(translated: dict[str, Any]) -> None:
    ingest = policy(translated, "IngestRole")
    assert literal(ingest["ReadUploadedImages"]["Resource"]) == "${ImagesBucket.Arn}/incoming/*"
    assert literal(ingest["WriteShards"]["Resource"]) == "${ImagesBucket.Arn}/batch-input/*"
    assert ingest["QueueShards"] == {
        "Sid": "QueueShards",
        "Effect": "Allow",
        "Action": "sqs:SendMessage",
        "Resource": {"Fn::GetAtt": ["JobQueue", "Arn"]},
    }
    assert sorted(ingest["RecordOutcomes"]["Action"]) == ["dynamodb:BatchGetItem", "dynamodb:PutItem"]
    endpoint = literal(ingest["InvokeServerlessEndpoint"]["Resource"])
    assert endpoint.endswith(":endpoint/${EndpointName}")
    # jobs are the job builder's: the ingest function cannot start or list them
    assert not any(
        a.startswith("sagemaker:") and "Invoke" not in a for st in ingest.values() for a in as_list(st["Action"])
    )


def test_job_builder_role_starts_only_our_jobs_of_our_model(translated: dict[str, Any]) -> None:
    builder = policy(translated, "BuildJobsRole")
    assert literal(builder["WriteManifests"]["Resource"]) == "${ImagesBucket.Arn}/manifests/*"
    create = builder["StartTransformJobsOfOurModel"]
    assert literal(create["Resource"]).endswith(":transform-job/${TransformJobPrefix}-*")
    # its own transform model's ARN as SageMaker writes it, or the named model's
    allowed = create["Condition"]["ArnEquals"]["sagemaker:ModelArn"]["Fn::If"]
    assert allowed[:2] == ["CreateModel", {"Fn::GetAtt": ["TransformModel", "ModelArn"]}]
    assert literal(allowed[2]).endswith(":model/${ModelName}")
    # jobs in flight are counted from the job items, not listed from SageMaker
    assert not any(a == "sagemaker:ListTransformJobs" for st in builder.values() for a in as_list(st["Action"]))
    assert "iam:PassRole" not in json.dumps(builder)
    assert not any(a.startswith("s3:GetObject") for st in builder.values() for a in as_list(st["Action"]))


def test_collector_role_reads_a_jobs_files_and_queues_only_retried_shards(translated: dict[str, Any]) -> None:
    collect = policy(translated, "CollectRole")
    reads = sorted(literal(r) for r in collect["ReadManifestsShardsAndTransformOutput"]["Resource"])
    assert reads == [
        "${ImagesBucket.Arn}/batch-input/*",
        "${ImagesBucket.Arn}/manifests/*",
        "${ImagesBucket.Arn}/transform-output/*",
    ]
    # a failed job's images go back to the job queue, each alone in a new shard, and nowhere else
    assert literal(collect["WriteRetriedShards"]["Resource"]) == "${ImagesBucket.Arn}/batch-input/*"
    assert collect["QueueRetriedShards"]["Resource"] == {"Fn::GetAtt": ["JobQueue", "Arn"]}
    # and it only looks up its own jobs (the sweep)
    sagemaker = [(sid, a) for sid, s in collect.items() for a in as_list(s["Action"]) if a.startswith("sagemaker:")]
    assert sagemaker == [("LookUpOurTransformJobs", "sagemaker:DescribeTransformJob")]
    assert literal(collect["LookUpOurTransformJobs"]["Resource"]).endswith(":transform-job/${TransformJobPrefix}-*")


def test_the_events_pipe_reads_only_the_tables_stream_and_puts_only_on_the_default_bus(
    translated: dict[str, Any],
) -> None:
    pipe = policy(translated, "OutcomeEventsPipeRole")
    assert set(pipe) == {"ReadTableStream", "PublishOutcomes", "DeadLetterUnpublished"}
    assert pipe["ReadTableStream"]["Resource"] == {"Fn::GetAtt": ["PredictionsTable", "StreamArn"]}
    assert literal(pipe["PublishOutcomes"]["Resource"]).endswith(":event-bus/default")
    assert pipe["PublishOutcomes"]["Action"] == "events:PutEvents"
    props = translated["Resources"]["OutcomeEventsPipe"]["Properties"]
    (only,) = props["SourceParameters"]["FilterCriteria"]["Filters"]
    # the records of final outcomes and collected jobs: those that carry a detail-type
    assert json.loads(only["Pattern"])["dynamodb"] == {"NewImage": {"detail_type": {"S": [{"exists": True}]}}}
    assert (
        props["TargetParameters"]["EventBridgeEventBusParameters"]["DetailType"] == "$.dynamodb.NewImage.detail_type.S"
    )
    stream = translated["Resources"]["PredictionsTable"]["Properties"]["StreamSpecification"]
    assert stream == {"StreamViewType": "NEW_IMAGE"}


def test_sagemaker_names_are_lowercase(template: dict[str, Any]) -> None:
    """SageMaker ARNs carry lowercased names; IAM compares them case-sensitively."""
    for name in ("EndpointName", "ModelName", "TransformJobPrefix"):
        spec = template["Parameters"][name]
        assert re.fullmatch(spec["AllowedPattern"], spec["Default"])
        assert not re.fullmatch(spec["AllowedPattern"], spec["Default"].upper())


# -- secure defaults -----------------------------------------------------------------------


def test_bucket_denies_plain_http_and_blocks_public_access(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    (deny,) = resources["ImagesBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    block = resources["ImagesBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(block, True) and len(block) == 4
    assert resources["ImagesBucket"]["Properties"]["BucketEncryption"]


def test_queues_are_encrypted_and_the_queue_policy_is_scoped(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for name, resource in resources.items():
        if resource["Type"] == "AWS::SQS::Queue":
            assert resource["Properties"]["SqsManagedSseEnabled"] is True, name
    (allow,) = resources["ImageQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert set(allow["Condition"]) == {"ArnEquals", "StringEquals"}
    assert "aws:SourceArn" in allow["Condition"]["ArnEquals"]
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_table_is_encrypted_with_point_in_time_recovery(template: dict[str, Any]) -> None:
    table = template["Resources"]["PredictionsTable"]["Properties"]
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_alarms_watch_every_dead_letter_queue_and_failed_or_waiting_images(template: dict[str, Any]) -> None:
    alarms = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    watched = {a["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in alarms if a.get("Namespace") == "AWS/SQS"}
    dead_letter_queues = {
        "ImageDeadLetterQueue",
        "JobDeadLetterQueue",
        "JobEventsDeadLetterQueue",
        "OutcomeEventsDeadLetterQueue",
    }
    assert watched == dead_letter_queues | {"ImageQueue", "JobQueue"}  # and the age of what waits
    ours = {a["MetricName"]: a for a in alarms if a.get("Namespace") == "DogBreedPipeline"}  # metric math: test_alarms
    assert set(ours) == {"ImagesFailed", "ImagesWaitingForCapacity", "JobsCollectedBySweep"}
    for alarm in ours.values():  # the dimension every metric of the functions carries (Powertools' service)
        assert alarm["Dimensions"] == [{"Name": "service", "Value": "dogbreed"}]
    assert all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms)
    # waiting alarms before MaxBatchWaitMinutes' default turns the images FAILED
    waiting = ours["ImagesWaitingForCapacity"]
    assert (
        waiting["Period"] * waiting["EvaluationPeriods"] < template["Parameters"]["MaxBatchWaitMinutes"]["Default"] * 60
    )


def test_cloudwatch_may_publish_to_the_alarm_topic(template: dict[str, Any]) -> None:
    """CloudWatch cannot use the AWS managed key alias/aws/sns: the alarm would fire and no mail
    arrive. The topic's key is ours, and its policy lets CloudWatch encrypt to it."""
    resources = template["Resources"]
    key = resources["AlarmTopic"]["Properties"]["KmsMasterKeyId"]
    assert key == {"Ref": "AlarmTopicKey"} and resources["AlarmTopicKey"]["Type"] == "AWS::KMS::Key"
    policy = resources["AlarmTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
    (cloudwatch,) = [s for s in policy if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert resources["AlarmTopicKey"]["Properties"]["EnableKeyRotation"] is True


def emitted_metrics() -> set[str]:
    """Every metric name the functions emit: the literal names of the handlers' add_metric calls,
    and observe.py's outcome counters and by-mode metric."""
    from pipeline.handlers import observe

    names = {*observe.OUTCOME_COUNTERS.values(), observe.BY_MODE}
    names |= {observe.ASSESSED, observe.UNDER, observe.EXPECTED, observe.CONFIDENCE_TOTAL}
    for path in (REPO / "functions" / "pipeline" / "handlers").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "name" and isinstance(node.value, ast.Constant):
                names.add(str(node.value.value))
    return names


def test_the_dashboard_shows_only_metrics_that_exist(template: dict[str, Any]) -> None:
    body = json.loads(
        resolve(template["Resources"]["Dashboard"]["Properties"]["DashboardBody"], references(LocalNames()))
    )
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert len(titles) == 10
    named: dict[str, set[str]] = {}
    for widget in body["widgets"]:
        previous: list[Any] = []
        for line in widget["properties"]["metrics"]:
            parts = [p for p in line if not isinstance(p, dict)]
            if not parts:  # a metric math expression over the lines that follow it
                continue
            if parts[0] == "...":  # CloudWatch's shorthand: the previous line with its last values replaced
                parts = previous[: len(previous) - len(parts) + 1] + parts[1:]
            parts = [previous[i] if p == "." else p for i, p in enumerate(parts)]
            named.setdefault(parts[0], set()).add(parts[1])
            previous = parts
    assert named["DogBreedPipeline"] <= emitted_metrics()
    assert {"ImagesByMode", "InferenceLatency", "TransformJobsInFlight"} <= named["DogBreedPipeline"]
    assert named["AWS/SQS"] == {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"}
    assert {"Invocations", "Invocation5XXErrors", "ModelSetupTime"} <= named["AWS/SageMaker"]
    assert named["AWS/Lambda"] == {"Errors"}
    drift = template["Resources"]["ConfidenceDriftAlarm"]["Properties"]["Metrics"]
    assert {q["MetricStat"]["Metric"]["MetricName"] for q in drift if "MetricStat" in q} <= emitted_metrics()


# -- timing and delivery -------------------------------------------------------------------


def test_visibility_timeout_is_six_times_the_function_timeout(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    timeout = resources["IngestFunction"]["Properties"]["Timeout"]
    for queue in ("ImageQueue", "ReclassifyQueue"):  # the ingest function's two event sources
        assert resources[queue]["Properties"]["VisibilityTimeout"] >= 6 * timeout, queue
    # a serverless cold start plus the 60 s invocation limit must fit
    assert timeout >= 60 + 30
    builder = resources["BuildJobsFunction"]["Properties"]["Timeout"]
    assert resources["JobQueue"]["Properties"]["VisibilityTimeout"] >= 6 * builder


def test_waiting_for_capacity_never_sends_a_shard_to_the_dlq_before_its_maximum_wait(template: dict[str, Any]) -> None:
    """A shard that waits comes back once per visibility timeout; its images are FAILED after
    MaxBatchWaitMinutes, which must come before the job queue's redrive."""
    queue = template["Resources"]["JobQueue"]["Properties"]
    longest_wait_s = template["Parameters"]["MaxBatchWaitMinutes"]["MaxValue"] * 60
    gather_s = template["Parameters"]["GatherWindowSeconds"]["MaxValue"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] * queue["VisibilityTimeout"] > longest_wait_s + gather_s


def test_the_job_builder_gathers_large_batches_one_at_a_time(template: dict[str, Any]) -> None:
    builder = template["Resources"]["BuildJobsFunction"]["Properties"]
    shards = builder["Events"]["Shards"]["Properties"]
    assert shards["BatchSize"] == 10000 and shards["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert shards["MaximumBatchingWindowInSeconds"] == {"Ref": "GatherWindowSeconds"}
    assert template["Parameters"]["GatherWindowSeconds"]["MaxValue"] <= 300  # Lambda's longest window
    # a single writer by its lease, not by a reservation a new account cannot make; the fewest pollers SQS allows
    assert "ReservedConcurrentExecutions" not in builder
    assert shards["ScalingConfig"] == {"MaximumConcurrency": 2}


def test_nothing_needs_more_than_a_new_accounts_default_quotas(translated: dict[str, Any]) -> None:
    """A new account's Lambda concurrency can be 10, and a reservation must leave 10 unreserved:
    any ReservedConcurrentExecutions fails the first deploy there (first-deploy.md, Lambda)."""
    for name, resource in translated["Resources"].items():
        props = resource.get("Properties", {})
        assert "ReservedConcurrentExecutions" not in props, name
        assert "ProvisionedConcurrencyConfig" not in props, name


def test_partial_batch_failures_and_bounded_concurrency(template: dict[str, Any]) -> None:
    uploads = template["Resources"]["IngestFunction"]["Properties"]["Events"]["Uploads"]["Properties"]
    assert uploads["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # consumers never outnumber what the endpoint serves: one parameter drives both
    assert uploads["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "EndpointMaxConcurrency"}
    endpoint_config = template["Resources"]["EndpointConfig"]["Properties"]["ProductionVariants"][0]
    assert endpoint_config["ServerlessConfig"]["MaxConcurrency"] == {"Ref": "EndpointMaxConcurrency"}
    # batch sizes over 10 need a batching window of at least one second
    assert template["Parameters"]["BatchingWindowSeconds"]["MinValue"] >= 1
    # reclassify requests: an image a message as an upload, so the same work per invocation and the same
    # timeout; the fewest pollers Lambda allows, so a backfill leaves the account's concurrency to the uploads
    requests = template["Resources"]["IngestFunction"]["Properties"]["Events"]["ReclassifyRequests"]["Properties"]
    for setting in ("BatchSize", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes"):
        assert requests[setting] == uploads[setting], setting
    assert requests["ScalingConfig"] == {"MaximumConcurrency": 2}


@pytest.mark.parametrize(("provisioned", "kept_warm"), [(None, None), ("0", None), ("2", "2")])
def test_endpoint_workers_are_kept_warm_only_when_asked(
    template: dict[str, Any], provisioned: str | None, kept_warm: str | None
) -> None:
    parameters = {"ModelDataUrl": "s3://bucket/model.tar.gz"}
    if provisioned is not None:
        parameters["EndpointProvisionedConcurrency"] = provisioned
    variant = template["Resources"]["EndpointConfig"]["Properties"]["ProductionVariants"][0]
    serverless = resolve(variant["ServerlessConfig"], references(LocalNames(), parameters))
    assert serverless.get("ProvisionedConcurrency") == kept_warm  # 0 leaves the property out: none is billed
    assert serverless["MaxConcurrency"] == template["Parameters"]["EndpointMaxConcurrency"]["Default"]


def test_one_receive_count_for_the_redrive_and_the_functions(template: dict[str, Any]) -> None:
    for queue in ("ImageQueue", "ReclassifyQueue"):  # the ingest function gives up on the last delivery of either
        redrive = template["Resources"][queue]["Properties"]["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
        assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["ImageDeadLetterQueue", "Arn"]}  # alarmed
    assert declared_environment("IngestFunction", template)["MAX_RECEIVE_COUNT"] == {"Ref": "MaxReceiveCount"}


class _Recorder(dict[str, str]):
    """An environment that records which variables are read."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize(
    ("function", "settings"),
    [("IngestFunction", IngestSettings), ("BuildJobsFunction", BuildSettings), ("CollectFunction", CollectSettings)],
)
def test_each_function_is_given_only_the_variables_it_reads(function: str, settings: Any) -> None:
    env = _Recorder(function_environment(function))
    settings.from_env(env)
    # Powertools and boto3 read their own variables; the rest are the function's settings.
    declared = {k for k in declared_environment(function) if not k.startswith(("POWERTOOLS_", "AWS_ENDPOINT_URL"))}
    assert env.read == declared


def test_collector_sees_only_our_finished_jobs(template: dict[str, Any]) -> None:
    events = template["Resources"]["CollectFunction"]["Properties"]["Events"]["TransformJobFinished"]["Properties"]
    pattern = events["Pattern"]
    assert pattern["detail-type"] == ["SageMaker Transform Job State Change"]
    assert sorted(pattern["detail"]["TransformJobStatus"]) == ["Completed", "Failed", "Stopped"]
    assert pattern["detail"]["TransformJobName"] == [{"prefix": {"Fn::Sub": "${TransformJobPrefix}-"}}]
    assert events["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["JobEventsDeadLetterQueue", "Arn"]}


def test_model_resources_exist_only_with_a_model_artifact(template: dict[str, Any]) -> None:
    for name in ("Model", "TransformModel", "ModelExecutionRole"):
        assert template["Resources"][name]["Condition"] == "CreateModel"
    # the endpoint, where Serverless Inference is offered (not the China Regions: the Rules take batch mode only)
    for name in ("EndpointConfig", "Endpoint", "EndpointLogGroup"):
        assert template["Resources"][name]["Condition"] == "CreateEndpoint"
    for region, endpoint in (("us-east-1", True), ("cn-north-1", False), ("cn-northwest-1", False)):
        refs = {**references(LocalNames(), {"ModelDataUrl": "s3://bucket/model.tar.gz"}), "AWS::Region": region}
        for name, condition in template["Conditions"].items():
            refs[f"Condition::{name}"] = bool(resolve(condition, refs))
        assert refs["Condition::CreateEndpoint"] is endpoint and refs["Condition::CreateModel"] is True
    rule = template["Rules"]["ServerlessInferenceOffered"]
    batch_only = {"Assert": {"Fn::Equals": [{"Ref": "InferenceMode"}, "batch"]}, "AssertDescription": ANY}
    assert rule["Assertions"] == [batch_only]
    # SageMaker creates the endpoint's log group, with no retention, unless it exists: the stack's comes first
    assert template["Resources"]["Endpoint"]["DependsOn"] == "EndpointLogGroup"
    assert template["Resources"]["EndpointLogGroup"]["Properties"]["RetentionInDays"] == 30
    # serverless endpoints do not support network isolation (SageMaker's "Feature exclusions"); jobs keep it
    assert "EnableNetworkIsolation" not in template["Resources"]["Model"]["Properties"]
    assert template["Resources"]["TransformModel"]["Properties"]["EnableNetworkIsolation"] is True


def test_a_confidence_threshold_reaches_both_models_and_needs_a_model_the_stack_creates(
    template: dict[str, Any],
) -> None:
    for name in ("Model", "TransformModel"):
        environment = template["Resources"][name]["Properties"]["PrimaryContainer"]["Environment"]
        assert environment["CONFIDENCE_THRESHOLD"] == {"Ref": "ConfidenceThreshold"}
    rule = template["Rules"]["ThresholdNeedsOwnModel"]
    for url, threshold, allowed in (("", "", True), ("", "0.6", False), ("s3://b/model.tar.gz", "0.6", True)):
        refs = {"ModelDataUrl": url, "ConfidenceThreshold": threshold}
        holds = not resolve(rule["RuleCondition"], refs) or all(resolve(a["Assert"], refs) for a in rule["Assertions"])
        assert holds is allowed, (url, threshold)
    pattern = re.compile(template["Parameters"]["ConfidenceThreshold"]["AllowedPattern"])
    assert all(pattern.match(value) for value in ("", "0.6", ".75", "1", "1.0", "0.9999", "0.0"))
    assert not any(pattern.match(value) for value in ("1.5", "abc", "-0.1", "0.", "60", "0.12345"))


# -- Lambda packages -----------------------------------------------------------------------


def test_functions_import_only_boto3_powertools_and_the_standard_library() -> None:
    """And Pillow and pillow-heif, in the one module that downsizes large photos and converts phones'
    formats (their import waits for one)."""
    allowed = {
        "boto3",
        "botocore",
        "aws_lambda_powertools",
        "pipeline",
        "answers",
        "mypy_boto3_s3",
        "mypy_boto3_dynamodb",
    }
    allowed |= {"mypy_boto3_sagemaker", "mypy_boto3_sagemaker_runtime", "mypy_boto3_sqs"}
    downsize = REPO / "functions" / "pipeline" / "logic" / "downsize.py"
    only_in = {"PIL": downsize, "pillow_heif": downsize}
    import sys

    for path in (REPO / "functions").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if only_in.get(top) == path:
                    assert node not in tree.body, f"{path}: {name} is imported when the module is"
                    continue
                assert top in allowed or top in sys.stdlib_module_names or top == "__future__", f"{path}: {name}"


def makefile_variable(name: str) -> str:
    match = re.search(rf"^{name} \?= (\S+)$", (REPO / "functions" / "Makefile").read_text(), re.MULTILINE)
    assert match, f"functions/Makefile sets no {name}"
    return match.group(1)


def test_the_functions_are_built_by_their_makefile_for_the_template_runtime(template: dict[str, Any]) -> None:
    """`sam build` runs functions/Makefile's build-<LogicalId> for each function, and the Makefile
    fetches wheels for the runtime and architecture the template deploys."""
    functions = {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    globals_ = template["Globals"]["Function"]
    assert globals_["CodeUri"] == "functions/"
    assert makefile_variable("RUNTIME_PYTHON") == globals_["Runtime"].removeprefix("python")
    assert makefile_variable("ARCH") == {"arm64": "aarch64", "x86_64": "x86_64"}[globals_["Architectures"][0]]
    for name, resource in functions.items():
        assert resource["Metadata"]["BuildMethod"] == "makefile", name
        assert not {"Runtime", "Architectures", "CodeUri"} & resource["Properties"].keys(), name
        dry_run = subprocess.run(["make", "-n", "-C", "functions", f"build-{name}"], cwd=REPO, capture_output=True)
        assert dry_run.returncode == 0, f"functions/Makefile has no target build-{name}"


ELF_MACHINES = {183: "arm64", 62: "x86_64"}  # e_machine: EM_AARCH64, EM_X86_64


@pytest.mark.slow  # sam build fetches the functions' wheels
def test_sam_build_packages_the_functions_with_any_python(template: dict[str, Any], tmp_path: Path) -> None:
    """A real `sam build`, on a PATH that has make and this machine's Python only (no python3.12):
    each package holds the answer contract as a file, the pipeline without bytecode, and its
    dependencies' compiled parts built for Lambda's architecture and Python."""
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("make", "cp", "find", "rm"):
        found = subprocess.run(["which", command], capture_output=True, text=True, check=True).stdout.strip()
        (bin_dir / command).symlink_to(found)
    # The machine's own package-index settings (pip's and its proxy's variables, and HOME for a user
    # pip.conf) travel; of commands, only make, cp, find, rm and this Python.
    network = ("PIP_", "SSL_", "REQUESTS_CA", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
    env = {k: v for k, v in os.environ.items() if k.upper().startswith(network) or k == "HOME"}
    env |= {"PATH": str(bin_dir), "PYTHON": sys.executable, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": REGION}
    build_dir = tmp_path / "build"
    command = [*tool(SAM / "sam"), "build", "--build-dir", str(build_dir), "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    architecture = template["Globals"]["Function"]["Architectures"][0]
    runtime_tag = "cpython-" + template["Globals"]["Function"]["Runtime"].removeprefix("python").replace(".", "")
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        package = build_dir / name
        contract = package / "answers.py"
        assert contract.is_file() and not contract.is_symlink()
        assert contract.read_bytes() == (REPO / "functions" / "answers.py").read_bytes()
        handler = resource["Properties"]["Handler"].rpartition(".")[0].replace(".", "/") + ".py"
        assert (package / handler).is_file(), handler
        assert not list(package.rglob("__pycache__")) and not (package / "Makefile").exists()
        compiled = list(package.rglob("*.so"))
        assert compiled, "no compiled dependency in the package"  # Pillow's
        for library in compiled:
            header = library.read_bytes()[:20]
            assert header[:4] == b"\x7fELF" and ELF_MACHINES[int.from_bytes(header[18:20], "little")] == architecture
        assert all(runtime_tag in so.name for so in compiled if ".cpython-" in so.name)


def test_samconfig_holds_the_stack_defaults_and_leaves_parameters_to_guided() -> None:
    config = tomllib.loads((REPO / "samconfig.toml").read_text())["default"]
    assert config["global"]["parameters"]["stack_name"] == "dogbreed"
    deploy = config["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"  # the template creates roles, without custom names
    assert deploy["confirm_changeset"] is True
    assert "parameter_overrides" not in deploy  # `sam deploy --guided` asks for them
    roles = [r for r in load_template()["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert roles and not any("RoleName" in r["Properties"] for r in roles)  # else CAPABILITY_NAMED_IAM


@pytest.mark.parametrize(
    ("instance_type", "device"),
    [
        ("ml.m5.xlarge", "cpu"),
        ("ml.c5.2xlarge", "cpu"),
        ("ml.g4dn.xlarge", "gpu"),
        ("ml.g5.2xlarge", "gpu"),
        ("ml.p3.2xlarge", "gpu"),
        ("ml.c6i.xlarge", "cpu"),
    ],
)
def test_transform_jobs_get_the_gpu_image_on_a_gpu_instance(
    template: dict[str, Any], instance_type: str, device: str
) -> None:
    parameters = {"TransformInstanceType": instance_type, "ModelDataUrl": "s3://bucket/model.tar.gz"}
    refs = references(LocalNames(), parameters)
    resources = template["Resources"]
    image = resolve(resources["TransformModel"]["Properties"]["PrimaryContainer"]["Image"], refs)
    assert image.endswith(f"/pytorch-inference:2.6.0-{device}-py312")
    # the serverless endpoint stays on the CPU image (serverless endpoints have no GPU)
    assert resolve(resources["Model"]["Properties"]["PrimaryContainer"]["Image"], refs).endswith("-cpu-py312")
    # the job builder starts jobs of the transform model, and IAM allows exactly that model
    model = function_environment("BuildJobsFunction", parameters=parameters)["MODEL_NAME"]
    assert model == refs["TransformModel.ModelName"]
    allowed = policy(template, "BuildJobsRole")["StartTransformJobsOfOurModel"]["Condition"]["ArnEquals"]
    assert resolve(allowed["sagemaker:ModelArn"], refs) == refs["TransformModel.ModelArn"]
    # the image's repository is the one the model role may pull
    pull = resolve(policy(template, "ModelExecutionRole")["PullInferenceImage"]["Resource"], refs)
    assert pull.endswith(":repository/pytorch-inference") and "/pytorch-inference:" in image


@pytest.mark.parametrize(
    ("instance_type", "asked", "batch_serves"),
    [
        ("ml.m5.xlarge", "int8", "int8"),
        ("ml.m5.xlarge", "fp32", "fp32"),
        ("ml.g4dn.xlarge", "int8", "fp16"),  # the fast path of a GPU
        ("ml.g5.2xlarge", "fp32", "fp32"),
    ],
)
def test_transform_jobs_serve_fp16_on_a_gpu_unless_fp32_is_asked(
    template: dict[str, Any], instance_type: str, asked: str, batch_serves: str
) -> None:
    parameters = {"TransformInstanceType": instance_type, "ModelDataUrl": "s3://bucket/model.tar.gz"}
    refs = references(LocalNames(), {**parameters, "ModelPrecision": asked})
    resources = template["Resources"]
    environment = resources["TransformModel"]["Properties"]["PrimaryContainer"]["Environment"]
    assert resolve(environment["MODEL_PRECISION"], refs) == batch_serves
    endpoint = resources["Model"]["Properties"]["PrimaryContainer"]["Environment"]
    assert resolve(endpoint["MODEL_PRECISION"], refs) == asked


def test_without_a_model_artifact_jobs_use_the_named_model() -> None:
    assert function_environment("BuildJobsFunction")["MODEL_NAME"] == "dogbreed-resnet18"


# Transform instance families with NVIDIA GPUs that the PyTorch 2.6 image's CUDA 12 runs on, and the
# families of botocore's enum the template leaves out, with the reason.
GPU_FAMILIES = {"g4dn", "g5", "g6", "g6e", "p3"}
LEFT_OUT = {"p2": "K80 GPUs: no CUDA 12 kernels", "inf2": "Neuron chips", "trn1": "Neuron chips"}
# Families whose every host has AVX-512 VNNI (Ice Lake and Sapphire Rapids): they serve the int8 network.
VNNI_FAMILIES = {
    name.split(".")[1] for name, host in HOSTS.items() if host.classes and set(host.classes) <= {"AMX", "AVX-512 VNNI"}
}


def family(instance_type: str) -> str:
    return instance_type.split(".")[1]


def test_transform_instance_types_are_botocores_and_the_default_has_vnni(template: dict[str, Any]) -> None:
    import botocore.session

    service = botocore.session.get_session().get_service_model("sagemaker")
    valid = service.shape_for("TransformInstanceType").enum
    parameter = template["Parameters"]["TransformInstanceType"]
    # every type a job may ask for is one SageMaker accepts, and every one this model can use is offered
    assert parameter["AllowedValues"] == [t for t in valid if family(t) not in LEFT_OUT]
    assert set(LEFT_OUT) <= {family(t) for t in valid}  # nothing left out that botocore does not have
    # the default always gets the int8 fast path (see networks.py)
    assert family(parameter["Default"]) in VNNI_FAMILIES and parameter["Default"] in valid
    # the GPU condition names exactly the GPU families that botocore has
    checks = template["Conditions"]["GpuTransform"]["Fn::Or"]
    named = {check["Fn::Equals"][1] for check in checks}
    assert named == GPU_FAMILIES and {family(t) for t in valid} >= GPU_FAMILIES


@pytest.mark.parametrize("payload_mb", [1, 6, 100])
def test_the_model_server_accepts_the_largest_request_a_job_sends(template: dict[str, Any], payload_mb: int) -> None:
    """MaxPayloadInMB counts MiB (first-deploy.md): the local runner packs requests that large, and the
    request limit the template gives TorchServe accepts them (a 413 would fail the whole job)."""
    import answers
    from devstack.aws.transform import TransformRunner, max_request_bytes
    from pipeline.config import batch_max_bytes

    # the largest image ingest sends to batch, under the longest key, fits under either reading of "MB"
    largest_record = answers.dumps_record("k" * 1024, bytes(batch_max_bytes(payload_mb)))
    assert len(largest_record) + 1 <= payload_mb * 1_000_000
    # a shard of more than one request's worth of records
    record = answers.dumps_record("image", bytes(48_000))
    body = b"\n".join([largest_record] + [record] * (payload_mb * 1_100_000 // len(record) + 1))
    job = {"MaxPayloadInMB": payload_mb, "TransformInput": {"SplitType": "Line"}, "BatchStrategy": "MultiRecord"}
    largest = max(len(payload) for payload, _ in TransformRunner._requests(job, body, "a shard"))
    assert payload_mb * 1_000_000 < largest <= max_request_bytes(payload_mb)  # packed in MiB, as SageMaker does
    refs = references(LocalNames(), {"ModelDataUrl": "s3://bucket/model.tar.gz", "TransformMaxPayloadMB": payload_mb})
    for model in ("Model", "TransformModel"):
        environment = template["Resources"][model]["Properties"]["PrimaryContainer"]["Environment"]
        assert largest <= int(resolve(environment["TS_MAX_REQUEST_SIZE"], refs)), model


# -- a real account: updates, regions, name limits -----------------------------------------


def resource_schema(kind: str) -> dict[str, Any]:
    """CloudFormation's own resource provider schema for a type, as cfn-lint ships it."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    return dict(PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", kind).schema)


def name_property(kind: str, schema: dict[str, Any]) -> str | None:
    """The property that gives a resource a custom name: `Name` or `<Type>Name`, when create-only."""
    create_only = {p.removeprefix("/properties/") for p in schema.get("createOnlyProperties", [])}
    for candidate in ("Name", f"{kind.rsplit('::', 1)[1]}Name"):
        if candidate in create_only:
            return candidate
    return None


def parameters_in(value: Any, template: dict[str, Any]) -> set[str]:
    """The template parameters a value depends on (Ref, Fn::Sub names, conditions, through them)."""
    found: set[str] = set()
    parameters, conditions = template["Parameters"], template.get("Conditions", {})
    if isinstance(value, dict):
        for key, arg in value.items():
            if key == "Ref" and arg in parameters:
                found.add(arg)
            elif key == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                found |= {n for n in re.findall(r"\$\{([^}.!]+)\}", text) if n in parameters}
            elif key in ("Fn::If", "Condition"):
                name = arg[0] if key == "Fn::If" else arg
                found |= parameters_in(conditions[name], template)
            found |= parameters_in(arg, template)
    elif isinstance(value, list):
        for item in value:
            found |= parameters_in(item, template)
    return found


def test_no_custom_named_resource_is_replaced_by_a_parameter_change(translated: dict[str, Any]) -> None:
    """CloudFormation cannot replace a resource with a custom name (CloudFormation User Guide, "Name
    type"). A property a change of which forces replacement (createOnlyProperties in the resource's
    provider schema) must not depend on a parameter in a resource the template names itself; the
    name itself may: a new name is a new resource."""
    named = 0
    for logical_id, resource in translated["Resources"].items():
        schema = resource_schema(resource["Type"])
        name = name_property(resource["Type"], schema)
        props = resource.get("Properties", {})
        if name is None or name not in props:
            continue
        named += 1
        for path in schema.get("createOnlyProperties", []):
            prop = path.removeprefix("/properties/")
            if prop != name and prop in props:
                depends = parameters_in(props[prop], translated)
                assert not depends, f"{logical_id} has a custom name, and {prop} depends on {depends}"
    assert named >= 4  # the bucket, the log groups, the endpoint: the check does see named resources
    # the models are replaced by every new artifact: CloudFormation names them
    for model in ("Model", "TransformModel"):
        assert "ModelName" not in translated["Resources"][model]["Properties"]


def test_every_name_fits_its_limit_for_the_longest_stack_name(template: dict[str, Any]) -> None:
    """Names made of the stack name must fit their type's limit (the provider schema's maxLength)
    for the longest stack name CloudFormation allows (128 characters)."""
    longest = "s" * 128
    refs = {
        **references(LocalNames()),
        "AWS::StackName": longest,
        "AWS::StackId": f"arn:aws:cloudformation:{REGION}:123456789012:stack/{longest}/{'f' * 8}-{'f' * 4}-{'f' * 4}-"
        f"{'f' * 4}-{'f' * 12}",
    }
    translated = translate(template)
    checked = 0
    for logical_id, resource in translated["Resources"].items():
        schema = resource_schema(resource["Type"])
        name = name_property(resource["Type"], schema)
        if name is None or name not in resource.get("Properties", {}):
            continue
        value = str(resolve(resource["Properties"][name], refs))
        limit = schema["properties"][name].get("maxLength")
        if limit is not None:
            checked += 1
            assert len(value) <= limit, f"{logical_id}.{name} is {len(value)} characters, over {limit}: {value}"
    assert checked >= 4


def model_role_during_an_update(template: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> tuple[Any, Any]:
    """The model role's policy while CloudFormation updates the stack from the old parameters to the
    new, and after the update's cleanup. A managed policy whose create-only property changes is
    replaced: "CloudFormation creates the new resource first, then changes references ... and then
    deletes the old resource" in the cleanup phase (User Guide, "Update behaviors of stack
    resources"); any other change is made in place."""
    from devstack.aws.iam import Policy, attached_roles

    resources = template["Resources"]
    before, after = references(LocalNames(), old), references(LocalNames(), new)
    updated = [resolve(resources["ModelExecutionRole"]["Properties"], after)]  # its inline policies
    replaced = []
    for resource in resources.values():
        if "ModelExecutionRole" in attached_roles(resource):
            props = resource["Properties"]
            updated.append(resolve(props, after))
            create_only = [
                p.removeprefix("/properties/") for p in resource_schema(resource["Type"])["createOnlyProperties"]
            ]
            if any(resolve(props.get(p), before) != resolve(props.get(p), after) for p in create_only):
                replaced.append(resolve(props, before))  # attached until the cleanup deletes it
    return Policy.of_role("ModelExecutionRole", *updated, *replaced), Policy.of_role("ModelExecutionRole", *updated)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            {"ModelDataUrl": "s3://models-bucket/v1/model.tar.gz"},
            {"ModelDataUrl": "s3://models-bucket/v2/model.tar.gz"},
        ),
        (
            {"ModelDataUrl": "s3://models-bucket/v1/model.tar.gz"},
            {
                "ModelDataUrl": "s3://other-bucket/v2.tar.gz",
                "ModelKmsKeyArn": f"arn:aws:kms:{REGION}:123456789012:key/k2",
            },
        ),
    ],
)
def test_the_model_role_reads_the_replaced_models_artifact_until_the_update_ends(
    template: dict[str, Any], old: dict[str, Any], new: dict[str, Any]
) -> None:
    from devstack.aws.iam import Call

    def reads(policy: Any, url: str) -> bool:
        return bool(policy.allowing(Call("ModelExecutionRole", "s3:GetObject", f"arn:aws:s3:::{url[len('s3://') :]}")))

    during, after = model_role_during_an_update(template, old, new)
    # while the new models start and the old ones still serve (a transform job started with one), both read
    assert reads(during, old["ModelDataUrl"]) and reads(during, new["ModelDataUrl"])
    # once the update's cleanup has deleted the old models, only the new artifact
    assert reads(after, new["ModelDataUrl"]) and not reads(after, old["ModelDataUrl"])
    if "ModelKmsKeyArn" in new:
        key = Call("ModelExecutionRole", "kms:Decrypt", new["ModelKmsKeyArn"])
        assert during.allowing(key) and after.allowing(key)
    # and a new model is created only once its artifact is readable
    for model in ("Model", "TransformModel"):
        assert template["Resources"][model]["DependsOn"] == "ModelArtifactPolicy"


def test_the_model_artifact_policys_description_fits_iams_limit(template: dict[str, Any]) -> None:
    """The policy's Description names the artifact (that is what replaces it); IAM takes at most the
    schema's maxLength, for the longest ModelDataUrl the parameter allows and the longest stack name."""
    parameter = template["Parameters"]["ModelDataUrl"]
    longest = "s3://" + "b" * 63 + "/" + "k" * (parameter["MaxLength"] - len("s3://") - 64 - len(".tar.gz")) + ".tar.gz"
    assert len(longest) == parameter["MaxLength"] and re.fullmatch(parameter["AllowedPattern"], longest)
    refs = {
        **references(
            LocalNames(),
            {"ModelDataUrl": longest, "ModelKmsKeyArn": f"arn:aws:kms:{REGION}:123456789012:key/{'f' * 36}"},
        ),
        "AWS::StackName": "s" * 128,
    }
    for name, condition in template["Conditions"].items():
        refs[f"Condition::{name}"] = bool(resolve(condition, refs))
    description = resolve(template["Resources"]["ModelArtifactPolicy"]["Properties"]["Description"], refs)
    limit = resource_schema("AWS::IAM::ManagedPolicy")["properties"]["Description"]["maxLength"]
    assert longest in description and len(description) <= limit, (len(description), limit)


def test_the_image_account_of_every_region_is_the_sagemaker_sdks(template: dict[str, Any]) -> None:
    """The Deep Learning Container images live in another AWS account in some regions, and under
    another domain in China: the mapping must be what the SageMaker SDK retrieves, CPU and GPU."""
    import json as _json

    from sagemaker.core import image_uris

    config = Path(image_uris.__file__).parent / "image_uri_config" / "pytorch.json"
    regions = sorted(_json.loads(config.read_text())["inference"]["versions"]["2.6.0"]["registries"])
    mapping = template["Mappings"]["DeepLearningImages"]
    assert sorted(mapping) == regions
    resources = template["Resources"]
    for region in regions:
        suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        refs = {
            **references(LocalNames(), {"ModelDataUrl": "s3://bucket/model.tar.gz"}),
            "AWS::Region": region,
            "AWS::URLSuffix": suffix,
        }
        for instance_type, model in (("ml.c6i.xlarge", "Model"), ("ml.g5.xlarge", "TransformModel")):
            refs["Condition::GpuTransform"] = instance_type.startswith("ml.g")
            ours = resolve(resources[model]["Properties"]["PrimaryContainer"]["Image"], refs)
            sdk = image_uris.retrieve(
                "pytorch", region=region, version="2.6.0", py_version="py312",
                instance_type=instance_type, image_scope="inference",
            )  # fmt: skip
            assert ours == sdk, region
        pull = resolve(policy(template, "ModelExecutionRole")["PullInferenceImage"]["Resource"], refs)
        assert pull == f"arn:aws:ecr:{region}:{mapping[region]['Account']}:repository/pytorch-inference"
