"""boto3 clients, made on first use and reused by a warm Lambda container.

Endpoints come from the standard AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> variables, so
the same code talks to AWS or to a local stack."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from pipeline.adapters.concurrent import THREADS

# botocore's standard retry mode handles DynamoDB and S3 throttling. SageMaker calls are retried
# by our own backoff (pipeline.adapters.retry), which also covers ModelError: one layer of retries.
_STANDARD = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=THREADS,  # one connection for each of the calls made at once
)
# A serverless invocation may take up to 60 s.
_SAGEMAKER = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=70)


@cache
def client(service: str) -> Any:
    return boto3.client(service, config=_SAGEMAKER if service.startswith("sagemaker") else _STANDARD)
