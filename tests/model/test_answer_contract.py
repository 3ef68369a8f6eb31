"""The model handler's real answers, read by the pipeline's own code: model/serving/inference.py in a
model container (TorchServe and the toolkit), behind the local SageMaker runtime, through botocore
and the endpoint adapter (BAD_INPUT_POLICY=raise), or as a transform job's output
(BAD_INPUT_POLICY=record)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from answers import Prediction
from devstack.aws.container import ModelContainer
from devstack.aws.sagemaker_runtime import RuntimeServer
from pipeline.adapters.retry import Backoff
from pipeline.adapters.sagemaker import ServerlessEndpoint
from pipeline.logic.errors import RejectedImage
from pipeline.logic.outcomes import read_model_answer
from tests.model.test_inference import BAD, sample_image

pytestmark = pytest.mark.slow  # serves a trained model


@pytest.fixture
def endpoint(endpoint_container: ModelContainer) -> Iterator[ServerlessEndpoint]:
    """The handler as the serverless endpoint serves it, reached as the ingest function reaches it."""
    runtime = RuntimeServer({"contract": endpoint_container.invoke}).start()
    client = boto3.client("sagemaker-runtime", endpoint_url=runtime.url)
    yield ServerlessEndpoint(client, "contract", Backoff(attempts=1))
    runtime.stop()


def test_a_prediction_reads_as_the_right_breed(
    endpoint: ServerlessEndpoint, job_container: ModelContainer, dataset: Path
) -> None:
    photo = sample_image(dataset, "002")
    for body in (endpoint.invoke(photo, "image/jpeg"), job_container.invoke(photo, "image/jpeg").body):
        prediction = read_model_answer(body)
        assert isinstance(prediction, Prediction)
        assert (prediction.label, prediction.class_name) == ("002", "Afghan_hound")
        assert prediction.confidence == prediction.top5[0].probability and len(prediction.top5) == 5


@pytest.mark.parametrize(("name", "data", "content_type", "status", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_reads_as_a_rejection_with_the_handler_code(
    endpoint: ServerlessEndpoint,
    job_container: ModelContainer,
    name: str,
    data: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    # On the endpoint: a ModelError carrying the 4xx, which the adapter turns into a rejection
    with pytest.raises(RejectedImage) as on_endpoint:
        endpoint.invoke(data, content_type)
    # In a transform job: a 200 whose body is the error record, read by the collector's parser
    response = job_container.invoke(data, content_type)
    assert response.status == 200
    with pytest.raises(RejectedImage) as in_job:
        read_model_answer(response.body)
    assert on_endpoint.value.code == in_job.value.code == code
    assert on_endpoint.value.reason == in_job.value.reason
