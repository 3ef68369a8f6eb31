"""Least privilege, checked by use: what each caller of the local stack asked AWS to do, and whether
the role template.yaml gives it allows that.

`Call` is one request as IAM authorizes it: the caller (its access key id: a function's logical id,
or the role the local SageMaker acts as), the action, the resource's ARN and the condition keys the
request sets. `calls_of` reads them off an HTTP request to moto or to the local SageMaker runtime,
for the operations the stack uses (an operation it does not know is an action of its own name, so a
new call is never silently allowed). A read of a missing S3 key answered 404 also needed
s3:ListBucket on the bucket (S3 API reference, GetObject, "Permissions"), and is recorded as both.

`Policy` evaluates a role's inline statements (or a managed policy's, for a person's role: the
reviewer's) as IAM does for the forms the template uses: Allow and Deny, Action with wildcards,
Resource patterns with * and ?, and the condition operators StringEquals, StringLike, ArnEquals,
ArnLike and Bool (a key the request lacks matches no operator), and ForAllValues: before one of
them for a key with many values (every value must match; a request without the key matches, as in
IAM); an explicit Deny wins. A DynamoDB item write sets dynamodb:LeadingKeys (its partition key)
and dynamodb:Attributes (the attributes it names: the item's, or its expressions' and the key).
Reference: IAM User Guide, "Policy evaluation logic" and "IAM JSON policy elements: Condition
operators"; DynamoDB developer guide, "Using IAM policy conditions for fine-grained access control"."""

from __future__ import annotations

import io
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from devstack.aws.account import arn
from devstack.aws.provision import LocalNames, references
from infra.template import load_template, resolve

_CREDENTIAL = re.compile(r"Credential=([^/]+)/")
_DYNAMODB_TRANSACT = {"ConditionCheck": "ConditionCheckItem", "Put": "PutItem", "Update": "UpdateItem"}
_SQS_BATCH = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage"}
_SQS_BATCH["ChangeMessageVisibilityBatch"] = "ChangeMessageVisibility"


@dataclass(frozen=True)
class Call:
    principal: str
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        keys = "".join(f" [{k}={v}]" for k, v in self.context)
        return f"{self.action} {self.resource}{keys}"


def principal_of(headers: Mapping[str, str]) -> str:
    match = _CREDENTIAL.search(headers.get("Authorization", "") or headers.get("authorization", ""))
    return match.group(1) if match else ""


def calls_of(principal: str, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> list[Call]:
    """The calls one request to moto makes, as IAM sees them."""
    target = headers.get("X-Amz-Target", "")
    if not target and method == "POST" and b"Action=GetCallerIdentity" in body:
        return []  # STS: "No permissions are required to perform this operation" (STS API reference)
    if not target:
        return _s3_calls(principal, method, path, query, headers)
    service, operation = target.split(".", 1)
    request = json.loads(body or b"{}")
    if service.startswith("DynamoDB"):
        return _dynamodb_calls(principal, operation, request)
    if service.startswith("AmazonSQS"):
        queue = request.get("QueueUrl", "").rstrip("/").rsplit("/", 1)[-1] or request.get("QueueName", "")
        return [Call(principal, f"sqs:{_SQS_BATCH.get(operation, operation)}", arn("sqs", queue))]
    if service == "SageMaker":
        return [_sagemaker_call(principal, operation, request)]
    return [Call(principal, f"{service.lower()}:{operation}", "*")]


def invoke_endpoint_call(principal: str, endpoint: str) -> Call:
    return Call(principal, "sagemaker:InvokeEndpoint", arn("sagemaker", f"endpoint/{endpoint.lower()}"))


def _s3_calls(principal: str, method: str, path: str, query: str, headers: Mapping[str, str]) -> list[Call]:
    bucket, _, key = path.lstrip("/").partition("/")
    params = parse_qs(query, keep_blank_values=True)
    if not key:
        if method == "GET" and ("list-type" in params or not params):
            prefix = params.get("prefix", [""])[0]
            return [Call(principal, "s3:ListBucket", f"arn:aws:s3:::{bucket}", (("s3:prefix", prefix),))]
        if method == "PUT" and not params:
            return [Call(principal, "s3:CreateBucket", f"arn:aws:s3:::{bucket}")]
        if method == "POST" and "delete" in params:
            return [Call(principal, "s3:DeleteObject", f"arn:aws:s3:::{bucket}/*")]
        return [Call(principal, f"s3:{method}Bucket?{query}", f"arn:aws:s3:::{bucket}")]
    obj = f"arn:aws:s3:::{bucket}/{key}"
    if params:  # a subresource (?tagging, ?acl, ?uploads, ...): named by it, so a new one is never allowed unseen
        return [Call(principal, f"s3:{method}Object?{'&'.join(sorted(params))}", obj)]
    if method in ("GET", "HEAD"):
        return [Call(principal, "s3:GetObject", obj)]
    if method == "PUT":
        source = headers.get("x-amz-copy-source", "")
        copied = [Call(principal, "s3:GetObject", f"arn:aws:s3:::{unquote(source).lstrip('/')}")] if source else []
        return [*copied, Call(principal, "s3:PutObject", obj)]
    if method == "DELETE":
        return [Call(principal, "s3:DeleteObject", obj)]
    return [Call(principal, f"s3:{method}Object", obj)]


_EXPRESSION_WORDS = frozenset(
    {"SET", "REMOVE", "ADD", "DELETE", "AND", "OR", "NOT", "BETWEEN", "IN", "attribute_exists",
     "attribute_not_exists", "attribute_type", "begins_with", "contains", "size", "if_not_exists", "list_append"}
)  # fmt: skip
_EXPRESSION_NAME = re.compile(r"(?<![:#\w])([A-Za-z_][A-Za-z0-9_]*)|#(\w+)")


def _item_context(detail: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """dynamodb:LeadingKeys and dynamodb:Attributes of one item write (PutItem, UpdateItem)."""
    key = detail.get("Key") or detail.get("Item") or {}
    leading = [next(iter(value.values())) for name, value in key.items() if name == "image_id"]
    names = set(detail.get("Item", {})) | set(detail.get("Key", {}))
    aliases = detail.get("ExpressionAttributeNames", {})
    for field_name in ("UpdateExpression", "ConditionExpression"):
        for bare, alias in _EXPRESSION_NAME.findall(detail.get(field_name, "")):
            if alias:
                names.add(aliases.get(f"#{alias}", alias))
            elif bare not in _EXPRESSION_WORDS:
                names.add(bare)
    return tuple(("dynamodb:LeadingKeys", str(v)) for v in leading) + tuple(
        ("dynamodb:Attributes", name) for name in sorted(names)
    )


def _dynamodb_calls(principal: str, operation: str, request: dict[str, Any]) -> list[Call]:
    def table(name: str, index: str | None = None) -> str:
        return arn("dynamodb", f"table/{name}" + (f"/index/{index}" if index else ""))

    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [Call(principal, f"dynamodb:{operation}", table(name)) for name in request.get("RequestItems", {})]
    if operation in ("TransactWriteItems", "TransactGetItems"):
        calls = []
        for item in request.get("TransactItems", []):
            ((kind, detail),) = item.items()
            action = _DYNAMODB_TRANSACT.get(kind, f"{kind}Item" if kind in ("Get", "Delete") else kind)
            context = _item_context(detail) if action in ("PutItem", "UpdateItem") else ()
            calls.append(Call(principal, f"dynamodb:{action}", table(detail["TableName"]), context))
        return calls
    context = _item_context(request) if operation in ("PutItem", "UpdateItem") else ()
    resource = table(request.get("TableName", ""), request.get("IndexName"))
    return [Call(principal, f"dynamodb:{operation}", resource, context)]


def _sagemaker_call(principal: str, operation: str, request: dict[str, Any]) -> Call:
    """SageMaker's ARNs carry resource names lowercased, which IAM compares."""
    if "TransformJobName" in request:
        resource = arn("sagemaker", f"transform-job/{request['TransformJobName'].lower()}")
    elif "ModelName" in request:
        resource = arn("sagemaker", f"model/{request['ModelName'].lower()}")
    elif "EndpointName" in request:
        resource = arn("sagemaker", f"endpoint/{request['EndpointName'].lower()}")
    else:
        resource = "*"
    context: tuple[tuple[str, str], ...] = ()
    if operation == "CreateTransformJob":
        context = (("sagemaker:ModelArn", arn("sagemaker", f"model/{request['ModelName'].lower()}")),)
    return Call(principal, f"sagemaker:{operation}", resource, context)


class CallRecorder:
    """A WSGI layer around moto that records every call by caller; `record` adds calls made elsewhere
    (the local SageMaker runtime). Thread-safe."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.calls: Counter[Call] = Counter()
        self._lock = threading.Lock()

    def record(self, calls: Iterable[Call]) -> None:
        with self._lock:
            self.calls.update(calls)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api"):
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        if length:
            environ["wsgi.input"] = io.BytesIO(body)
        headers = {
            "Authorization": environ.get("HTTP_AUTHORIZATION", ""),
            "X-Amz-Target": environ.get("HTTP_X_AMZ_TARGET", ""),
            "x-amz-copy-source": environ.get("HTTP_X_AMZ_COPY_SOURCE", ""),
        }
        method = environ.get("REQUEST_METHOD", "GET")
        principal = principal_of(headers)
        calls = calls_of(principal, method, path, environ.get("QUERY_STRING", ""), headers, body)

        def recording_start_response(status: str, *args: Any) -> Any:
            answered = calls
            if status.startswith("404") and [c.action for c in calls] == ["s3:GetObject"]:
                bucket = calls[0].resource.split(":::", 1)[1].split("/", 1)[0]
                # S3 tells a missing key (404) only to a caller that may list the bucket
                answered = [*calls, Call(principal, "s3:ListBucket", f"arn:aws:s3:::{bucket}")]
            self.record(answered)
            return start_response(status, *args)

        return self.app(environ, recording_start_response)


# -- evaluation ---------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(pattern: str, value: str, case_sensitive: bool = True) -> bool:
    """IAM's wildcards: * any run of characters, ? one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda expected, actual: expected == actual,
    "StringLike": _matches,
    "ArnEquals": lambda expected, actual: expected == actual,
    "ArnLike": _matches,
    "Bool": lambda expected, actual: expected.lower() == actual.lower(),
}


@dataclass(frozen=True)
class Statement:
    sid: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def applies(self, call: Call) -> bool:
        if not any(_matches(action, call.action, case_sensitive=False) for action in self.actions):
            return False
        if not any(_matches(resource, call.resource) for resource in self.resources):
            return False
        for operator, keys in self.condition.items():
            qualifier, _, name = operator.rpartition(":")
            if name not in _OPERATORS or qualifier not in ("", "ForAllValues"):
                raise ValueError(f"statement {self.sid}: condition operator {operator} is not evaluated here")
            test = _OPERATORS[name]
            for key, expected in keys.items():
                values = [value for k, value in call.context if k == key]
                if qualifier:  # every value the request sets matches; none set matches too (IAM's rule)
                    if not all(any(test(str(e), value) for e in _as_list(expected)) for value in values):
                        return False
                elif not values or not any(test(str(e), values[0]) for e in _as_list(expected)):
                    return False
        return True


@dataclass(frozen=True)
class Policy:
    """A role's statements, resolved to this stack's ARNs."""

    role: str
    statements: tuple[Statement, ...]

    @classmethod
    def of_role(cls, role: str, *parts: Mapping[str, Any]) -> Policy:
        """The statements of the parts' properties: a role's inline policies, a managed policy's document."""
        documents = [p["PolicyDocument"] for properties in parts for p in properties.get("Policies", [])]
        documents += [properties["PolicyDocument"] for properties in parts if "PolicyDocument" in properties]
        statements = [
            Statement(
                sid=str(s.get("Sid", "")),
                effect=s["Effect"],
                actions=tuple(_as_list(s["Action"])),
                resources=tuple(str(r) for r in _as_list(s["Resource"])),
                condition=s.get("Condition", {}),
            )
            for document in documents
            for s in document["Statement"]
        ]
        return cls(role, tuple(statements))

    def allowing(self, call: Call) -> list[Statement]:
        """The Allow statements that let the call through: none if a Deny applies, or no Allow does."""
        if any(s.effect == "Deny" and s.applies(call) for s in self.statements):
            return []
        return [s for s in self.statements if s.effect == "Allow" and s.applies(call)]


MODEL_ROLE = "ModelExecutionRole"  # whose access key the local SageMaker reads and writes S3 with


def attached_roles(resource: Mapping[str, Any]) -> list[str]:
    """The roles of the template a managed policy attaches itself to (its Roles, by Ref)."""
    roles = resource["Properties"].get("Roles", []) if resource["Type"] == "AWS::IAM::ManagedPolicy" else []
    return [str(role["Ref"]) for role in roles if isinstance(role, dict) and "Ref" in role]


def template_policies(names: LocalNames, parameters: Mapping[str, Any], model_data_url: str) -> dict[str, Policy]:
    """Every role of template.yaml with the managed policies attached to it, and every managed policy
    given to people, resolved for the local stack; the model's role as the stack would create it for
    `model_data_url`."""
    resources = load_template()["Resources"]
    refs = references(names, dict(parameters))
    model_refs = references(names, {**parameters, "ModelDataUrl": model_data_url})
    policies = {}
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role":
            attached = [r for r in resources.values() if logical_id in attached_roles(r)]
        elif resource["Type"] == "AWS::IAM::ManagedPolicy" and not attached_roles(resource):
            attached = []
        else:
            continue
        values = model_refs if logical_id == MODEL_ROLE else refs
        parts = [resolve(part["Properties"], values) for part in [resource, *attached]]
        policies[logical_id] = Policy.of_role(logical_id, *parts)
    return policies


def caller_roles() -> dict[str, str]:
    """The role each caller acts as: a function's (its logical id is its access key), the model's, a
    pipe's, and a managed policy's for a person given it (its logical id as the access key: the reviewer). The
    stack's own and an observer's calls have none and are not checked."""
    resources = load_template()["Resources"]
    functions = {
        logical_id: str(resource["Properties"]["Role"]["Fn::GetAtt"][0])
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    people = {
        i: i
        for i, resource in resources.items()
        if resource["Type"] == "AWS::IAM::ManagedPolicy" and not attached_roles(resource)
    }
    pipes = {  # a pipe reads its source as its role (its logical id as the access key)
        str(resource["Properties"]["RoleArn"]["Fn::GetAtt"][0]): str(resource["Properties"]["RoleArn"]["Fn::GetAtt"][0])
        for resource in resources.values()
        if resource["Type"] == "AWS::Pipes::Pipe"
    }
    return {**functions, **people, **pipes, MODEL_ROLE: MODEL_ROLE}


def role_of(principal: str) -> str | None:
    """The role a caller acts as, or None (see caller_roles)."""
    return caller_roles().get(principal)


@dataclass(frozen=True)
class Verdict:
    denied: list[tuple[str, Call]]  # (role, call) that no statement of the role allows
    used: dict[str, set[str]]  # role -> the Sids of the statements that allowed some call
    actions: dict[str, Counter[str]]  # role -> calls observed, by action

    def summary(self) -> dict[str, Any]:
        return {
            "denied": [f"{role}: {call}" for role, call in self.denied],
            "used": {role: sorted(sids) for role, sids in self.used.items()},
            "actions": {role: dict(sorted(counts.items())) for role, counts in self.actions.items()},
        }


def check(calls: Mapping[Call, int], policies: Mapping[str, Policy]) -> Verdict:
    """Each call against the role of its caller (the stack's own and a user's calls are not checked)."""
    denied: list[tuple[str, Call]] = []
    used: dict[str, set[str]] = {role: set() for role in policies}
    actions: dict[str, Counter[str]] = {role: Counter() for role in policies}
    roles = caller_roles()  # read from the template once, not per call
    for call, count in calls.items():
        role = roles.get(call.principal)
        if role is None:
            continue
        actions[role][call.action] += count
        allowing = policies[role].allowing(call)
        if not allowing:
            denied.append((role, call))
        used[role].update(statement.sid for statement in allowing)
    return Verdict(denied, used, actions)
