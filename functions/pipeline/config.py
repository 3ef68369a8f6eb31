"""Each function's settings, read once from the environment template.yaml gives that function.

Handlers read these; the logic layer gets only the values it needs (IngestRules, RoutingPolicy)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.logic.ingest import IngestRules
from pipeline.logic.jobs import JobLayout
from pipeline.logic.outcomes import Mode
from pipeline.logic.routing import RoutingPolicy


class _Environment:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str:
        value = self.env.get(name, "").strip()
        if not value:
            raise RuntimeError(f"environment variable {name} is not set (template.yaml sets it)")
        return value

    def number(self, name: str) -> int:
        raw = self.text(name)
        try:
            return int(raw)
        except ValueError:
            raise RuntimeError(f"environment variable {name}={raw!r} is not a whole number") from None

    def mode(self, name: str) -> Mode:
        raw = self.text(name)
        try:
            return Mode(raw)
        except ValueError:
            raise RuntimeError(f"{name}={raw!r}: use one of {', '.join(m.value for m in Mode)}") from None


@dataclass(frozen=True)
class TransformResources:
    instance_type: str
    instance_count: int
    max_payload_mb: int

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_mb * 1_000_000  # as MaxPayloadInMB and TorchServe count


@dataclass(frozen=True)
class IngestSettings:
    table_name: str
    endpoint_name: str
    transform: TransformResources
    rules: IngestRules

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> IngestSettings:
        env = _Environment(environ)
        transform = TransformResources(
            instance_type=env.text("TRANSFORM_INSTANCE_TYPE"),
            instance_count=env.number("TRANSFORM_INSTANCE_COUNT"),
            max_payload_mb=env.number("TRANSFORM_MAX_PAYLOAD_MB"),
        )
        rules = IngestRules(
            routing=RoutingPolicy(
                mode=env.mode("INFERENCE_MODE"),
                auto_batch_threshold=env.number("AUTO_BATCH_THRESHOLD"),
                batch_max_bytes=transform.max_payload_bytes,
                max_image_pixels=env.number("MAX_IMAGE_PIXELS"),
            ),
            jobs=JobLayout(
                job_prefix=env.text("TRANSFORM_JOB_PREFIX"),
                input_prefix=env.text("INPUT_PREFIX"),
                manifest_prefix=env.text("MANIFEST_PREFIX"),
                output_prefix=env.text("OUTPUT_PREFIX"),
            ),
            model_name=env.text("MODEL_NAME"),
            max_receive_count=env.number("MAX_RECEIVE_COUNT"),
        )
        return cls(env.text("TABLE_NAME"), env.text("ENDPOINT_NAME"), transform, rules)


@dataclass(frozen=True)
class CollectSettings:
    table_name: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> CollectSettings:
        return cls(_Environment(environ).text("TABLE_NAME"))
