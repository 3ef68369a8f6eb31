"""The fault proxy passes requests through to moto, and in a fault window answers as the service
does when it throttles, or late; botocore reads its answers as it reads AWS's."""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devstack.aws.faults import FaultProxy

NO_RETRIES = Config(retries={"total_max_attempts": 1})


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    started = FaultProxy(moto_url).start()
    yield started
    started.stop()


def test_requests_pass_through_unchanged(proxy: FaultProxy) -> None:
    s3 = boto3.client("s3", endpoint_url=proxy.url)
    s3.create_bucket(Bucket="through-the-proxy")
    s3.put_object(Bucket="through-the-proxy", Key="a b.jpg", Body=b"bytes")
    assert s3.get_object(Bucket="through-the-proxy", Key="a b.jpg")["Body"].read() == b"bytes"
    with pytest.raises(ClientError, match="NoSuchKey"):
        s3.get_object(Bucket="through-the-proxy", Key="missing.jpg")
    assert proxy.requests == 4 and proxy.faulted == 0


def test_a_throttled_table_answers_as_dynamodb_does(proxy: FaultProxy) -> None:
    dynamodb = boto3.client("dynamodb", endpoint_url=proxy.url, config=NO_RETRIES)
    proxy.throttle(0.5)
    with pytest.raises(ClientError) as caught:
        dynamodb.list_tables()
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    time.sleep(0.6)
    dynamodb.list_tables()  # the window has closed
    assert proxy.faulted == 1


def test_a_delay_holds_each_request(proxy: FaultProxy) -> None:
    s3 = boto3.client("s3", endpoint_url=proxy.url)
    proxy.delay(5, by_s=0.3)
    started = time.monotonic()
    s3.list_buckets()
    assert time.monotonic() - started >= 0.3
