"""moto's S3, answering a read of a missing key as S3 does: 404 NoSuchKey only to a caller that may
list the bucket, 403 AccessDenied to any other (S3 API reference, GetObject and HeadObject,
"Permissions"). moto answers 404 to everyone, so code that told a deleted upload from a refusal by
404 alone passed here and failed on AWS.

A caller is known by its access key id. The local stack gives each function its own (its logical
id) and registers those whose role lacks an unconditioned s3:ListBucket on the bucket: a grant
limited by s3:prefix is taken not to count, the stricter of the two readings AWS's documentation
leaves open (first-deploy.md, S3). Other keys (a user, the tests) may list, as an admin may.
The local stack (devstack/aws/stack.py) and the tests' moto server (tests/conftest.py) apply it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_CREDENTIAL = re.compile(r"Credential=([^/]+)/")
_CANNOT_LIST: dict[str, set[str]] = {}  # access key id -> buckets it may not list


def cannot_list(access_key: str, buckets: Iterable[str]) -> None:
    """Register a caller that S3 must not tell a missing key from a refused one."""
    _CANNOT_LIST.setdefault(access_key, set()).update(buckets)


def reset() -> None:
    _CANNOT_LIST.clear()


def may_list(role: dict[str, Any], bucket_logical_id: str) -> bool:
    """Whether a template role grants s3:ListBucket on the bucket without a condition."""
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if (
                statement["Effect"] == "Allow"
                and "s3:ListBucket" in actions
                and statement["Resource"] == {"Fn::GetAtt": [bucket_logical_id, "Arn"]}
                and "Condition" not in statement
            ):
                return True
    return False


def _refused(response: Any) -> bool:
    match = _CREDENTIAL.search(response.headers.get("Authorization", ""))
    return match is not None and response.bucket_name in _CANNOT_LIST.get(match.group(1), set())


def patch() -> None:
    """Make moto's GetObject and HeadObject answer as S3 does (idempotent)."""
    from moto.s3 import responses
    from moto.s3.exceptions import MissingKey, S3AccessDeniedError

    if getattr(responses.S3Response._get_key, "as_s3", False):
        return
    get_key, head_object = responses.S3Response._get_key, responses.S3Response.head_object

    def get_key_as_s3(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return get_key(self, *args, **kwargs)
        except MissingKey:
            if _refused(self):
                raise S3AccessDeniedError() from None
            raise

    def head_object_as_s3(self: Any, *args: Any, **kwargs: Any) -> Any:
        status, headers, body = head_object(self, *args, **kwargs)
        if status == 404 and _refused(self):
            return 403, headers, body
        return status, headers, body

    get_key_as_s3.as_s3 = True  # type: ignore[attr-defined]
    responses.S3Response._get_key = get_key_as_s3  # type: ignore[method-assign]
    responses.S3Response.head_object = head_object_as_s3  # type: ignore[method-assign]
