"""The one AWS account the local stack plays: its region, account id and the credentials moto takes."""

from __future__ import annotations

REGION = "us-east-1"
ACCOUNT = "123456789012"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}  # moto accepts any


def arn(service: str, resource: str) -> str:
    """An ARN in this account and region, e.g. arn("lambda", "function:IngestFunction")."""
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"
