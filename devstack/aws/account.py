"""The one AWS account the local stack plays: its region, account id and the credentials moto takes."""

from __future__ import annotations

REGION = "us-east-1"
ACCOUNT = "123456789012"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}  # moto accepts any


def arn(service: str, resource: str) -> str:
    """An ARN in this account and region, e.g. arn("lambda", "function:IngestFunction")."""
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


def queue_url(name: str) -> str:
    """A queue's URL as SQS gives it (moto takes the queue name from it, whatever its host)."""
    return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
