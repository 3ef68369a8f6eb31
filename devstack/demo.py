"""`make demo`: the serverless path end to end on one machine, with no AWS account and no Docker.

1. generate a small labelled image set and train a model on it with model/train.py (seconds);
2. start moto in server mode (the AWS API) and a local SageMaker runtime serving that model
   through the SageMaker PyTorch inference toolkit, and create the bucket, queues and table from
   template.yaml;
3. upload a mixed set of images as a user would (a few bad ones, names with spaces and unicode);
4. deliver the queue's messages to the unchanged ingest handler as Lambda's SQS trigger does;
5. print every image's outcome from DynamoDB; exit 0 only if every upload has one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer
from moto.server import ThreadedMotoServer
from PIL import Image

from devstack.lambda_runtime import LambdaContext, sqs_event
from devstack.provision import LocalStack, function_environment, provision
from devstack.runtime import RuntimeServer
from devstack.toolkit import ToolkitHost

ENDPOINT = "dogbreed-serverless"


def train_model(workdir: Path) -> tuple[Path, Path]:
    import dataset_tool
    import train

    data = dataset_tool.synthesize(workdir / "dogImages", classes=5, per_split=(16, 4, 6), size=(320, 240))
    flags = "--pretrained none --fine-tune all --image-size 64 --batch-size 16 --lr 0.003 --workers 0 --epochs 6"
    out = workdir / "training"
    args = [f"--data-dir={data}", f"--model-dir={out}/model", f"--output-dir={out}/output"]
    args += [f"--checkpoint-dir={out}/checkpoints", f"--tensorboard-dir={out}/tb", *flags.split()]
    with contextlib.redirect_stdout(io.StringIO()):  # the per-epoch metric lines
        result = train.main(train.get_args_parser().parse_args(args))
    print(f"trained: validation accuracy {result['best_validation_accuracy']:.0%}, test {result['test_accuracy']:.0%}")
    return out / "model", data


def uploads(data: Path) -> dict[str, bytes]:
    """What a user drops in: photos of each breed under various names, and a few bad files."""
    files: dict[str, bytes] = {}
    for folder in sorted((data / "test").iterdir()):
        for n, path in enumerate(sorted(folder.glob("*.jpg"))[:2]):
            name = f"incoming/{folder.name[4:].replace('_', ' ')} {n + 1}.jpg"
            files[name] = path.read_bytes()
    photo = next((data / "test").rglob("*.jpg"))
    buffer = io.BytesIO()
    Image.open(photo).save(buffer, "PNG")
    files["incoming/café/chien été (1).png"] = buffer.getvalue()
    files["incoming/notes.jpg"] = b"shopping list: kibble, leash, tennis balls\n"
    files["incoming/empty.jpg"] = b""
    whole = photo.read_bytes()
    files["incoming/half a dog.jpg"] = whole[: len(whole) // 2]
    return files


def deliver(clients: dict[str, Any], stack: LocalStack, expected: int, timeout_s: float = 120) -> None:
    """Lambda's SQS trigger in miniature: receive a batch, invoke, delete what succeeded."""
    from pipeline.handlers.ingest import lambda_handler

    sqs = clients["sqs"]
    arn = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    deadline, done = time.monotonic() + timeout_s, 0
    while done < expected and time.monotonic() < deadline:
        messages = sqs.receive_message(
            QueueUrl=stack.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=5
        ).get("Messages", [])
        if not messages:
            done = count_outcomes(clients, stack)
            continue
        response = lambda_handler(sqs_event(messages, arn), LambdaContext(function_name="ingest"))
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
        done = count_outcomes(clients, stack)
        bar = "#" * int(30 * done / expected)
        print(f"\r[{bar:<30}] {done}/{expected} images have an outcome", end="", flush=True)
    print()


def items(clients: dict[str, Any], stack: LocalStack) -> list[dict[str, Any]]:
    deserialize = TypeDeserializer().deserialize
    pages = clients["dynamodb"].get_paginator("scan").paginate(TableName=stack.names.table)
    return [{k: deserialize(v) for k, v in item.items()} for page in pages for item in page["Items"]]


def count_outcomes(clients: dict[str, Any], stack: LocalStack) -> int:
    return sum(item["status"] != "PENDING" for item in items(clients, stack))


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.CRITICAL)  # the inference toolkit logs rejected images' tracebacks
    os.environ.update(
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",  # noqa: S106 - moto accepts any credentials
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
    )
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data = train_model(Path(tmp))
        host = ToolkitHost(model_dir)

        def container(body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]:
            response = host.invoke(body, content_type, accept or "application/json")
            return response.status, response.content_type, response.body

        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        runtime = RuntimeServer({ENDPOINT: container}).start()
        try:
            host_port = moto.get_host_and_port()
            os.environ["AWS_ENDPOINT_URL"] = f"http://{host_port[0]}:{host_port[1]}"
            os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = runtime.url
            os.environ.update(function_environment("IngestFunction"))
            os.environ["INFERENCE_MODE"] = "serverless"
            clients = {name: boto3.client(name) for name in ("s3", "sqs", "dynamodb")}
            stack = provision(clients)
            clients["sqs"].purge_queue(QueueUrl=stack.queue_url)  # S3's test event
            files = uploads(data)
            for key, body in files.items():
                clients["s3"].put_object(Bucket=stack.names.bucket, Key=key, Body=body)
            print(f"uploaded {len(files)} objects to s3://{stack.names.bucket}/incoming/")
            deliver(clients, stack, len(files))
            return summarize(items(clients, stack), files)
        finally:
            runtime.stop()
            moto.stop()


def summarize(records: list[dict[str, Any]], files: dict[str, bytes]) -> int:
    by_key = {item["key"]: item for item in records}
    print(f"\n{'image':<34} {'breed':<24} {'conf.':>6}  {'status':<10} {'mode':<10} reason")
    for key in files:
        item = by_key.get(key, {})
        confidence = f"{float(item['confidence']):.2f}" if "confidence" in item else ""
        print(
            f"{key.removeprefix('incoming/'):<34} {item.get('breed', ''):<24} {confidence:>6}  "
            f"{item.get('status', 'MISSING'):<10} {item.get('mode', ''):<10} {item.get('reason', '')[:60]}"
        )
    missing = [key for key in files if key not in by_key]
    print(f"\n{len(files) - len(missing)}/{len(files)} uploads have an outcome.")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())  # run with PYTHONPATH=functions:model (make demo sets it)
