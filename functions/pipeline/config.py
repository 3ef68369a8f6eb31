"""Each function's settings, read once from the environment template.yaml gives that function.

Handlers read these; the logic layer gets only the values it needs (IngestRules, BuildRules)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from pipeline.logic.build import BuildRules
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


def batch_max_bytes(max_payload_mb: int) -> int:
    """The largest image a transform job takes: its base64 record, with a key of up to 1,024
    characters, must fit in one request of MaxPayloadInMB. SageMaker counts it in MiB by the SDK's
    local mode and "MB" by its pages: this counts 10**6 bytes, the smaller, so it fits under either."""
    return (max_payload_mb * 1_000_000 - 8_000) * 3 // 4


@dataclass(frozen=True)
class IngestSettings:
    table_name: str
    endpoint_name: str
    job_queue_url: str
    rules: IngestRules
    upload_queue_url: str  # its backlog routes in auto mode

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> IngestSettings:
        env = _Environment(environ)
        rules = IngestRules(
            routing=RoutingPolicy(
                mode=env.mode("INFERENCE_MODE"),
                auto_batch_threshold=env.number("AUTO_BATCH_THRESHOLD"),
                batch_max_bytes=batch_max_bytes(env.number("TRANSFORM_MAX_PAYLOAD_MB")),
                max_image_pixels=env.number("MAX_IMAGE_PIXELS"),
            ),
            shard_prefix=env.text("SHARD_PREFIX"),
            model_name=env.text("MODEL_NAME"),
            max_receive_count=env.number("MAX_RECEIVE_COUNT"),
        )
        return cls(
            env.text("TABLE_NAME"),
            env.text("ENDPOINT_NAME"),
            env.text("JOB_QUEUE_URL"),
            rules,
            env.text("UPLOAD_QUEUE_URL"),
        )


@dataclass(frozen=True)
class BuildSettings:
    table_name: str
    job_queue_url: str  # the builder's own event source: shards that wait are made visible again sooner
    transform: TransformResources
    rules: BuildRules

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BuildSettings:
        env = _Environment(environ)
        transform = TransformResources(
            instance_type=env.text("TRANSFORM_INSTANCE_TYPE"),
            instance_count=env.number("TRANSFORM_INSTANCE_COUNT"),
            max_payload_mb=env.number("TRANSFORM_MAX_PAYLOAD_MB"),
        )
        rules = BuildRules(
            jobs=JobLayout(
                job_prefix=env.text("TRANSFORM_JOB_PREFIX"),
                shard_prefix=env.text("SHARD_PREFIX"),
                manifest_prefix=env.text("MANIFEST_PREFIX"),
                output_prefix=env.text("OUTPUT_PREFIX"),
            ),
            model_name=env.text("MODEL_NAME"),
            max_images_per_job=env.number("MAX_IMAGES_PER_JOB"),
            max_jobs_in_flight=env.number("MAX_TRANSFORM_JOBS_IN_FLIGHT"),
            max_wait=timedelta(minutes=env.number("MAX_BATCH_WAIT_MINUTES")),
        )
        return cls(env.text("TABLE_NAME"), env.text("JOB_QUEUE_URL"), transform, rules)


@dataclass(frozen=True)
class CollectSettings:
    table_name: str
    job_queue_url: str  # where a failed job's images go back, each alone in a shard
    shard_prefix: str
    late_job: timedelta  # the sweep collects a job whose end is not collected this long after it

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> CollectSettings:
        env = _Environment(environ)
        return cls(
            env.text("TABLE_NAME"),
            env.text("JOB_QUEUE_URL"),
            env.text("SHARD_PREFIX"),
            timedelta(seconds=env.number("LATE_JOB_SECONDS")),
        )
