"""devstack.aws.iam: requests read as IAM authorizes them, and the template's statements evaluated as IAM does."""

from __future__ import annotations

import json

import pytest

from devstack.aws.account import arn
from devstack.aws.iam import Call, Policy, Statement, calls_of, check, role_of, template_policies
from devstack.aws.provision import LocalNames

BUCKET = "arn:aws:s3:::images"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"AWS4-HMAC-SHA256 Credential={key}/20261201/us-east-1/s3/aws4_request, ..."}


def test_s3_requests_are_read_as_their_actions_and_resources() -> None:
    assert calls_of("F", "GET", "/images/incoming/a b.jpg", "", {}, b"") == [
        Call("F", "s3:GetObject", f"{BUCKET}/incoming/a b.jpg")
    ]
    assert calls_of("F", "HEAD", "/images/k", "", {}, b"")[0].action == "s3:GetObject"
    listing = calls_of("F", "GET", "/images", "list-type=2&prefix=incoming%2Fa.jpg", {}, b"")
    assert listing == [Call("F", "s3:ListBucket", BUCKET, (("s3:prefix", "incoming/a.jpg"),))]
    copied = calls_of("F", "PUT", "/images/incoming/a.jpg", "", {"x-amz-copy-source": "images/incoming/a.jpg"}, b"")
    assert [c.action for c in copied] == ["s3:GetObject", "s3:PutObject"]
    # a subresource is an action of its own name: never allowed by a statement written for another
    assert calls_of("F", "GET", "/images/k", "tagging", {}, b"")[0].action == "s3:GETObject?tagging"


def test_dynamodb_sqs_and_sagemaker_requests_name_their_resources() -> None:
    def target(name: str) -> dict[str, str]:
        return {"X-Amz-Target": name}

    batch = json.dumps({"RequestItems": {"t": {"Keys": []}}}).encode()
    assert calls_of("F", "POST", "/", "", target("DynamoDB_20120810.BatchGetItem"), batch) == [
        Call("F", "dynamodb:BatchGetItem", arn("dynamodb", "table/t"))
    ]
    query = json.dumps({"TableName": "t", "IndexName": "by-status"}).encode()
    assert calls_of("F", "POST", "/", "", target("DynamoDB_20120810.Query"), query)[0].resource == arn(
        "dynamodb", "table/t/index/by-status"
    )
    send = json.dumps({"QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs"}).encode()
    assert calls_of("F", "POST", "/", "", target("AmazonSQS.SendMessageBatch"), send) == [
        Call("F", "sqs:SendMessage", arn("sqs", "jobs"))
    ]
    job = json.dumps({"TransformJobName": "Dogbreed-1", "ModelName": "My-Model"}).encode()
    (create,) = calls_of("F", "POST", "/", "", target("SageMaker.CreateTransformJob"), job)
    assert create.resource == arn("sagemaker", "transform-job/dogbreed-1")  # lowercased, as SageMaker's ARNs
    assert create.context == (("sagemaker:ModelArn", arn("sagemaker", "model/my-model")),)


POLICY = Policy(
    "R",
    (
        Statement("Read", "Allow", ("s3:Get*",), (f"{BUCKET}/incoming/*",)),
        Statement("List", "Allow", ("s3:ListBucket",), (BUCKET,), {"StringLike": {"s3:prefix": "incoming/*"}}),
        Statement("Job", "Allow", ("sagemaker:CreateTransformJob",), (arn("sagemaker", "transform-job/dog-*"),),
                  {"ArnEquals": {"sagemaker:ModelArn": arn("sagemaker", "model/ours")}}),
        Statement("NoTls", "Deny", ("s3:*",), ("*",), {"Bool": {"aws:SecureTransport": "false"}}),
    ),
)  # fmt: skip


@pytest.mark.parametrize(
    ("call", "allowed"),
    [
        (Call("F", "s3:GetObject", f"{BUCKET}/incoming/a.jpg"), True),
        (Call("F", "s3:GetObject", f"{BUCKET}/manifests/a.json"), False),
        (Call("F", "s3:PutObject", f"{BUCKET}/incoming/a.jpg"), False),
        (Call("F", "s3:ListBucket", BUCKET, (("s3:prefix", "incoming/a.jpg"),)), True),
        (Call("F", "s3:ListBucket", BUCKET, (("s3:prefix", "other/"),)), False),
        (Call("F", "s3:ListBucket", BUCKET), False),  # a key the request lacks matches no operator
        (Call("F", "sagemaker:CreateTransformJob", arn("sagemaker", "transform-job/dog-1"),
              (("sagemaker:ModelArn", arn("sagemaker", "model/ours")),)), True),
        (Call("F", "sagemaker:CreateTransformJob", arn("sagemaker", "transform-job/dog-1"),
              (("sagemaker:ModelArn", arn("sagemaker", "model/theirs")),)), False),
        (Call("F", "s3:GetObject", f"{BUCKET}/incoming/a.jpg", (("aws:SecureTransport", "false"),)), False),
    ],
)  # fmt: skip
def test_statements_are_evaluated_as_iam_does(call: Call, allowed: bool) -> None:
    assert bool(POLICY.allowing(call)) is allowed


def test_every_role_of_the_template_resolves_and_each_caller_acts_as_its_role() -> None:
    policies = template_policies(LocalNames(), {}, "s3://artifacts/model/model.tar.gz")
    assert {"IngestRole", "BuildJobsRole", "CollectRole", "ModelExecutionRole"} <= set(policies)
    assert role_of("IngestFunction") == "IngestRole" and role_of("ModelExecutionRole") == "ModelExecutionRole"
    assert role_of("local") is None and role_of("observer") is None
    upload = Call("IngestFunction", "s3:GetObject", f"arn:aws:s3:::{LocalNames().bucket}/incoming/a.jpg")
    shard = Call("IngestFunction", "s3:GetObject", f"arn:aws:s3:::{LocalNames().bucket}/batch-input/s.jsonl")
    verdict = check({upload: 1, shard: 1}, policies)
    assert verdict.denied == [("IngestRole", shard)]
    assert verdict.used["IngestRole"] == {"ReadUploadedImages"}
    assert verdict.actions["IngestRole"]["s3:GetObject"] == 2


@pytest.mark.parametrize("function", ["IngestFunction", "CollectFunction"])
def test_a_function_may_list_every_prefix_it_reads_to_tell_missing_from_denied(function: str) -> None:
    """S3 answers a read of a missing key 403 to a caller without s3:ListBucket (S3 API reference,
    GetObject), and the adapter lists the key to tell a deleted upload or an expired shard from a
    refusal: each prefix a role reads, it must list. The collector once could not, and a job event
    replayed after the lifecycle rule expired its shards failed into the DLQ again."""
    names = LocalNames()
    policies = template_policies(names, {}, "s3://artifacts/model/model.tar.gz")
    role = role_of(function)
    assert role is not None
    bucket = f"arn:aws:s3:::{names.bucket}"
    read = [
        resource.removeprefix(f"{bucket}/").removesuffix("*")
        for statement in policies[role].statements
        if statement.effect == "Allow" and "s3:GetObject" in statement.actions
        for resource in statement.resources
        if resource.startswith(f"{bucket}/")
    ]
    assert read, f"{role} reads nothing in the images bucket"
    for prefix in read:
        key = f"{prefix}20261205T000000-gone.jsonl"
        get = Call(function, "s3:GetObject", f"{bucket}/{key}")
        listing = Call(function, "s3:ListBucket", bucket, (("s3:prefix", key),))
        assert check({get: 1, listing: 1}, policies).denied == [], prefix


def test_the_reviewer_may_write_labels_and_take_an_image_out_of_the_queue_and_nothing_else() -> None:
    """The template's ReviewerPolicy, for a person's role, against the requests cli.label and cli.query
    review make (their dynamodb:LeadingKeys and dynamodb:Attributes read off the request as IAM reads them)."""
    names = LocalNames()
    policies = template_policies(names, {}, "s3://artifacts/model/model.tar.gz")
    assert role_of("ReviewerPolicy") == "ReviewerPolicy"
    table = f"arn:aws:dynamodb:us-east-1:123456789012:table/{names.table}"
    image = f"{names.bucket}/incoming/rex.jpg"

    def dynamodb(operation: str, request: dict[str, object]) -> list[Call]:
        body = json.dumps({"TableName": names.table, **request}).encode()
        return calls_of("ReviewerPolicy", "POST", "/", "", {"X-Amz-Target": f"DynamoDB_20120810.{operation}"}, body)

    label = dynamodb("TransactWriteItems", {"TransactItems": [
        {"Update": {"TableName": names.table, "Key": {"image_id": {"S": image}}, "UpdateExpression": "REMOVE #review",
                    "ConditionExpression": "etag = :etag AND #status = :classified",
                    "ExpressionAttributeNames": {"#review": "review", "#status": "status"}}},
        {"Put": {"TableName": names.table, "Item": {"image_id": {"S": f"#label/{image}"}, "breed": {"S": "Beagle"}}}},
    ]})  # fmt: skip
    assert [c.action for c in label] == ["dynamodb:UpdateItem", "dynamodb:PutItem"]
    assert dict(label[0].context)["dynamodb:LeadingKeys"] == image
    assert {v for k, v in label[0].context if k == "dynamodb:Attributes"} == {"image_id", "review", "etag", "status"}
    queue = dynamodb("Query", {"IndexName": "by-review"})
    assert check(dict.fromkeys([*label, *queue], 1), policies).denied == []
    # what the reviewer may not do: rewrite a model's answer, write any other item, scan the table
    answer = dynamodb("UpdateItem", {"Key": {"image_id": {"S": image}}, "UpdateExpression": "SET breed = :b"})
    record = dynamodb("PutItem", {"Item": {"image_id": {"S": image}, "status": {"S": "CLASSIFIED"}}})
    scan = dynamodb("Scan", {})
    denied = check(dict.fromkeys([*answer, *record, *scan], 1), policies).denied
    assert sorted(call.action for _, call in denied) == ["dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem"]
    assert table in {call.resource for _, call in denied}
    sts = calls_of("ReviewerPolicy", "POST", "/", "", {}, b"Action=GetCallerIdentity&Version=2011-06-15")
    assert sts == []  # needs no permission
