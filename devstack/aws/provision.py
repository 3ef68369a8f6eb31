"""Create the stack's bucket, queues and table on a local AWS API (moto), from template.yaml.

moto's CloudFormation drops bucket notifications and queue policies, so resources are created
with direct API calls instead; every setting is read from the template, never restated here."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from devstack.aws.account import ACCOUNT, REGION, arn, queue_url
from infra.template import declared_environment, load_template, parameter_defaults, resolve


@dataclass(frozen=True)
class LocalNames:
    """Physical names on the local stack (CloudFormation would generate them on AWS)."""

    bucket: str = "dogbreed-images-local"
    table: str = "dogbreed-predictions"
    queue: str = "dogbreed-uploads"
    dead_letter_queue: str = "dogbreed-uploads-dlq"
    job_queue: str = "dogbreed-jobs"
    job_dead_letter_queue: str = "dogbreed-jobs-dlq"
    job_events_dead_letter_queue: str = "dogbreed-job-events-dlq"
    reclassify_queue: str = "dogbreed-reclassify"
    outcome_events_dead_letter_queue: str = "dogbreed-outcome-events-dlq"

    @classmethod
    def for_stack(cls, stack: str) -> LocalNames:
        """The names of another stack in the same local account ("local" is the default one's): each
        default with the stack's name in place of "-local", or after it."""
        if stack == "local":
            return cls()
        return cls(**{f.name: f"{str(f.default).removesuffix('-local')}-{stack}" for f in fields(cls)})


@dataclass(frozen=True)
class LocalStack:
    names: LocalNames
    queue_url: str
    dead_letter_queue_url: str
    job_queue_url: str
    job_dead_letter_queue_url: str
    job_events_dead_letter_queue_url: str
    reclassify_queue_url: str
    outcome_events_dead_letter_queue_url: str


def references(names: LocalNames, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    template = load_template()
    refs: dict[str, Any] = {**parameter_defaults(template), **(parameters or {})}
    refs.update(
        {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "dogbreed-local",
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/dogbreed-local/0-0-0-0-000000000000",
            "ImagesBucket": names.bucket,
            "ImagesBucket.Arn": f"arn:aws:s3:::{names.bucket}",
            "PredictionsTable": names.table,
            "PredictionsTable.Arn": arn("dynamodb", f"table/{names.table}"),
            "ImageQueue": queue_url(names.queue),
            "ImageQueue.Arn": arn("sqs", names.queue),
            "ImageDeadLetterQueue.Arn": arn("sqs", names.dead_letter_queue),
            "JobQueue": queue_url(names.job_queue),
            "JobQueue.Arn": arn("sqs", names.job_queue),
            "JobDeadLetterQueue.Arn": arn("sqs", names.job_dead_letter_queue),
            "JobEventsDeadLetterQueue.Arn": arn("sqs", names.job_events_dead_letter_queue),
            "ImageQueue.QueueName": names.queue,
            "JobQueue.QueueName": names.job_queue,
            "ImageDeadLetterQueue.QueueName": names.dead_letter_queue,
            "JobDeadLetterQueue.QueueName": names.job_dead_letter_queue,
            "JobEventsDeadLetterQueue.QueueName": names.job_events_dead_letter_queue,
            "ReclassifyQueue": queue_url(names.reclassify_queue),
            "ReclassifyQueue.Arn": arn("sqs", names.reclassify_queue),
            "ReclassifyQueue.QueueName": names.reclassify_queue,
            "OutcomeEventsDeadLetterQueue.Arn": arn("sqs", names.outcome_events_dead_letter_queue),
            "OutcomeEventsDeadLetterQueue.QueueName": names.outcome_events_dead_letter_queue,
            # the label of a stream is the time it was enabled: IAM's view of it, any label
            "PredictionsTable.StreamArn": arn("dynamodb", f"table/{names.table}/stream/*"),
            # the names CloudFormation generates for the stack's own models (ModelDataUrl set);
            # SageMaker's ARNs carry the name lowercased
            "TransformModel.ModelName": "TransformModel-local",
            "TransformModel.ModelArn": arn("sagemaker", "model/transformmodel-local"),
            "AnalyticsGlueDatabase": refs["AnalyticsDatabase"],  # a Glue database's Ref is its name
        }
    )
    refs.update({f"Mapping::{name}": mapping for name, mapping in template.get("Mappings", {}).items()})
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":  # the function's name is its logical id
            refs[logical_id] = logical_id
            refs[f"{logical_id}.Arn"] = arn("lambda", f"function:{logical_id}")
        elif resource["Type"] == "AWS::IAM::Role":  # a role's Ref is its name: here, its logical id
            refs[logical_id] = logical_id
    for name, condition in template.get("Conditions", {}).items():
        refs[f"Condition::{name}"] = bool(resolve(condition, refs))
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Logs::LogGroup":  # its Arn attribute ends in :*
            group = resolve(resource["Properties"]["LogGroupName"], refs)
            refs[logical_id] = group
            refs[f"{logical_id}.Arn"] = arn("logs", f"log-group:{group}:*")
    return refs


def function_environment(
    function: str, names: LocalNames = LocalNames(), parameters: dict[str, Any] | None = None
) -> dict[str, str]:
    """The environment template.yaml gives a function, resolved for the local stack."""
    refs = references(names, parameters)
    resolved = {key: str(resolve(value, refs)) for key, value in declared_environment(function).items()}
    return {key: value for key, value in resolved.items() if value}  # leave AWS_ENDPOINT_URL* to the caller


def model_environment(names: LocalNames = LocalNames(), parameters: dict[str, Any] | None = None) -> dict[str, str]:
    """The environment template.yaml gives the SageMaker model's container."""
    model = load_template()["Resources"]["Model"]["Properties"]
    environment = resolve(model["PrimaryContainer"]["Environment"], references(names, parameters))
    return {key: str(value) for key, value in environment.items()}


def serverless_config(names: LocalNames = LocalNames(), parameters: dict[str, Any] | None = None) -> dict[str, int]:
    """The endpoint's ServerlessConfig (memory size, MaxConcurrency) from template.yaml."""
    (variant,) = load_template()["Resources"]["EndpointConfig"]["Properties"]["ProductionVariants"]
    config = resolve(variant["ServerlessConfig"], references(names, parameters))
    return {key: int(value) for key, value in config.items()}


def provision(
    clients: dict[str, Any], names: LocalNames = LocalNames(), parameters: dict[str, Any] | None = None
) -> LocalStack:
    """Create the bucket (with its notification), queues and table as template.yaml defines them."""
    template = load_template()
    resources = template["Resources"]
    refs = references(names, parameters)
    sqs, s3, dynamodb = clients["sqs"], clients["s3"], clients["dynamodb"]

    def queue(logical_id: str, name: str) -> str:
        props = resolve(resources[logical_id]["Properties"], refs)
        attributes = {
            key: json.dumps(value) if isinstance(value, dict) else str(value)
            for key, value in props.items()
            if key in ("VisibilityTimeout", "MessageRetentionPeriod", "RedrivePolicy", "SqsManagedSseEnabled")
        }
        if "SqsManagedSseEnabled" in attributes:
            attributes["SqsManagedSseEnabled"] = attributes["SqsManagedSseEnabled"].lower()
        return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])

    dlq_url = queue("ImageDeadLetterQueue", names.dead_letter_queue)
    job_dlq_url = queue("JobEventsDeadLetterQueue", names.job_events_dead_letter_queue)
    upload_queue_url = queue("ImageQueue", names.queue)
    job_dead_letter_queue_url = queue("JobDeadLetterQueue", names.job_dead_letter_queue)
    job_queue_url = queue("JobQueue", names.job_queue)
    reclassify_queue_url = queue("ReclassifyQueue", names.reclassify_queue)
    outcome_events_dlq_url = queue("OutcomeEventsDeadLetterQueue", names.outcome_events_dead_letter_queue)

    table = resolve(resources["PredictionsTable"]["Properties"], refs)
    dynamodb.create_table(
        TableName=names.table,
        **{key: table[key] for key in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")},
        StreamSpecification={"StreamEnabled": True, **table["StreamSpecification"]},
        SSESpecification={"Enabled": table["SSESpecification"]["SSEEnabled"]},
    )

    dynamodb.update_continuous_backups(
        TableName=names.table, PointInTimeRecoverySpecification=table["PointInTimeRecoverySpecification"]
    )
    if refs["Condition::CreateAnalytics"]:  # the Glue database and table over make export-table's exports
        database = resolve(resources["AnalyticsGlueDatabase"]["Properties"], refs)["DatabaseInput"]
        clients["glue"].create_database(DatabaseInput=database)
        export_table = resolve(resources["PredictionsExportTable"]["Properties"], refs)
        clients["glue"].create_table(DatabaseName=database["Name"], TableInput=export_table["TableInput"])

    bucket = resolve(resources["ImagesBucket"]["Properties"], refs)
    s3.create_bucket(Bucket=names.bucket)
    s3.put_public_access_block(
        Bucket=names.bucket, PublicAccessBlockConfiguration=bucket["PublicAccessBlockConfiguration"]
    )
    s3.put_bucket_encryption(
        Bucket=names.bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                for rule in bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
        },
    )
    s3.put_bucket_notification_configuration(
        Bucket=names.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": rule["Queue"],
                    "Events": [rule["Event"]],
                    "Filter": {"Key": {"FilterRules": rule["Filter"]["S3Key"]["Rules"]}},
                }
                for rule in bucket["NotificationConfiguration"]["QueueConfigurations"]
            ]
        },
    )
    return LocalStack(
        names,
        upload_queue_url,
        dlq_url,
        job_queue_url,
        job_dead_letter_queue_url,
        job_dlq_url,
        reclassify_queue_url,
        outcome_events_dlq_url,
    )
