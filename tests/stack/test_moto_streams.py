"""devstack/aws/moto_streams.py: moto's DynamoDB stream writes a record for a change only, as DynamoDB
does, and keeps reading in order when it trims its oldest records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devstack.aws import moto_streams
from devstack.aws.account import ACCOUNT, REGION


@pytest.fixture
def table() -> Iterator[Any]:
    moto_streams.patch()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName="t",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )
        yield dynamodb


def reader() -> moto_streams.StreamReader:
    return moto_streams.StreamReader(ACCOUNT, REGION, "t")


def test_a_write_that_changes_nothing_writes_no_record(table: Any) -> None:
    stream = reader()  # from LATEST: what is written from now on
    item = {"id": {"S": "a"}, "status": {"S": "CLASSIFIED"}}
    table.put_item(TableName="t", Item=item)
    table.put_item(TableName="t", Item=item)  # the same item again
    table.update_item(  # a SET to the value it has
        TableName="t", Key={"id": {"S": "a"}}, UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":s": {"S": "CLASSIFIED"}},
    )  # fmt: skip
    table.put_item(TableName="t", Item={**item, "status": {"S": "FAILED"}})  # a change
    assert [r["eventName"] for r in stream.read(100)] == ["INSERT", "MODIFY"]
    assert stream.read(100) == []  # read once


def test_the_oldest_records_are_trimmed_and_a_reader_keeps_its_place(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(moto_streams, "RETAINED", 3)
    stream = reader()
    for n in range(2):
        table.put_item(TableName="t", Item={"id": {"S": f"i{n}"}})
    assert [r["dynamodb"]["Keys"]["id"]["S"] for r in stream.read(1)] == ["i0"]
    for n in range(2, 4):
        table.put_item(TableName="t", Item={"id": {"S": f"i{n}"}})  # i0 trimmed: 3 kept
    assert [r["dynamodb"]["Keys"]["id"]["S"] for r in stream.read(100)] == ["i1", "i2", "i3"]
    for n in range(4, 9):
        table.put_item(TableName="t", Item={"id": {"S": f"i{n}"}})  # past the reader: DynamoDB refuses the read
    with pytest.raises(RuntimeError, match="trimmed"):
        stream.read(100)
