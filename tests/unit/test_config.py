"""Each function's settings come from the environment template.yaml gives it, with clear errors."""

from __future__ import annotations

import pytest

from devstack.provision import function_environment
from pipeline.config import CollectSettings, IngestSettings
from pipeline.logic.outcomes import Mode


def test_the_ingest_settings_are_the_template_defaults() -> None:
    settings = IngestSettings.from_env(function_environment("IngestFunction"))
    assert settings.rules.routing.mode is Mode.AUTO
    assert settings.rules.routing.auto_batch_threshold == 50
    assert settings.rules.routing.batch_max_bytes == 6_000_000  # TransformMaxPayloadMB, as MaxPayloadInMB counts
    assert settings.rules.jobs.input_prefix == "incoming/"
    assert settings.rules.max_receive_count == 5
    assert (settings.endpoint_name, settings.rules.model_name) == ("dogbreed-serverless", "dogbreed-resnet18")


def test_the_collector_needs_only_the_table() -> None:
    assert CollectSettings.from_env({"TABLE_NAME": "predictions"}) == CollectSettings("predictions")


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
