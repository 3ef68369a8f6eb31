"""The local batch transform sends requests as SageMaker documents: up to MaxConcurrentTransforms at
once to each instance, whether they come from one file's records or from many one-record files."""

from __future__ import annotations

import threading
import time

from devstack.aws.transform import TransformRunner
from tests.conftest import MODEL, Aws
from tests.pipeline import images


class CountingContainer:
    """Answers every request after a short wait, counting how many it holds at once."""

    def __init__(self) -> None:
        self.holding = 0
        self.most_at_once = 0
        self.requests = 0
        self._lock = threading.Lock()

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]:
        with self._lock:
            self.holding += 1
            self.requests += 1
            self.most_at_once = max(self.most_at_once, self.holding)
        time.sleep(0.05)
        with self._lock:
            self.holding -= 1
        return 200, "application/json", b'{"class_name": "001.Affenpinscher"}'

    def stop(self) -> None:
        pass

    def kill(self) -> int | None:
        return None


def test_an_instance_holds_up_to_max_concurrent_transforms_requests_from_one_record_files(aws: Aws) -> None:
    s3, sagemaker = aws.clients["s3"], aws.clients["sagemaker"]
    for number in range(12):  # the shape of a failed job's images queued again alone
        s3.put_object(Bucket=aws.bucket, Key=f"alone/{number:02d}.jpg", Body=images.jpeg())
    sagemaker.create_transform_job(
        TransformJobName="one-record-files",
        ModelName=MODEL,
        MaxConcurrentTransforms=4,
        MaxPayloadInMB=6,
        BatchStrategy="SingleRecord",
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{aws.bucket}/alone/"}},
            "ContentType": "image/jpeg",
            "SplitType": "None",
        },
        TransformOutput={"S3OutputPath": f"s3://{aws.bucket}/answers/"},
        TransformResources={"InstanceType": "ml.c6i.xlarge", "InstanceCount": 1},
    )
    container = CountingContainer()
    runner = TransformRunner(sagemaker, s3, lambda model, environment, job: container, publish=lambda event: None)

    event = runner.execute("one-record-files")

    assert event["detail"]["TransformJobStatus"] == "Completed"
    assert container.requests == 12 and container.most_at_once == 4  # never more, and not one file at a time
    written = s3.list_objects_v2(Bucket=aws.bucket, Prefix="answers/")["Contents"]
    assert sorted(o["Key"] for o in written) == [f"answers/{number:02d}.jpg.out" for number in range(12)]
