"""Each function's settings come from the environment template.yaml gives it, with clear errors."""

from __future__ import annotations

from datetime import timedelta

import pytest

import answers
from devstack.aws.provision import function_environment
from pipeline.config import BuildSettings, CollectSettings, IngestSettings, TransformResources
from pipeline.logic.jobs import JobLayout
from pipeline.logic.outcomes import Mode


def test_the_ingest_settings_are_the_template_defaults() -> None:
    settings = IngestSettings.from_env(function_environment("IngestFunction"))
    assert settings.rules.routing.mode is Mode.AUTO
    assert settings.rules.routing.auto_batch_threshold == 180_000  # a backlog: see test_cost.py
    # an image's base64 record, with a key of up to 1,024 characters, fits in one 6 MB request
    assert settings.rules.routing.batch_max_bytes == 4_494_000
    assert answers.record_size(4_494_000, "k" * 1024) <= 6_000_000
    assert settings.rules.shard_prefix == "batch-input/"
    assert settings.job_queue_url.endswith("/dogbreed-jobs")
    assert settings.rules.max_receive_count == 5
    assert (settings.endpoint_name, settings.rules.model_name) == ("dogbreed-serverless", "dogbreed-resnet18")


def test_the_job_builder_settings_are_the_template_defaults() -> None:
    settings = BuildSettings.from_env(function_environment("BuildJobsFunction"))
    assert settings.rules.jobs == JobLayout("dogbreed", "batch-input/", "manifests/", "transform-output/")
    assert (settings.rules.max_images_per_job, settings.rules.max_jobs_in_flight) == (20000, 2)
    assert settings.rules.max_wait == timedelta(hours=6)
    assert settings.transform == TransformResources("ml.c6i.xlarge", 1, 6)


def test_the_collector_settings_are_the_templates() -> None:
    settings = CollectSettings.from_env(function_environment("CollectFunction"))
    assert (
        settings.shard_prefix
        == BuildSettings.from_env(function_environment("BuildJobsFunction")).rules.jobs.shard_prefix
    )
    assert settings.job_queue_url and settings.table_name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"TABLE_NAME": ""}, "TABLE_NAME is not set"),
        ({"AUTO_BATCH_THRESHOLD": "fifty"}, "AUTO_BATCH_THRESHOLD='fifty' is not a whole number"),
        ({"INFERENCE_MODE": "fast"}, "INFERENCE_MODE='fast': use one of serverless, batch, auto"),
    ],
)
def test_a_bad_environment_names_the_variable(change: dict[str, str], message: str) -> None:
    env = {**function_environment("IngestFunction"), **change}
    with pytest.raises(RuntimeError, match=message):
        IngestSettings.from_env(env)
