"""Function settings, read once from the environment that template.yaml sets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.logic.outcomes import Mode

# SageMaker serverless endpoints take request payloads of at most 4 MB (counted as 10**6 bytes to be safe).
SERVERLESS_MAX_BYTES = 4_000_000


@dataclass(frozen=True)
class Settings:
    table_name: str
    mode: Mode
    auto_batch_threshold: int
    endpoint_name: str
    model_name: str
    input_prefix: str
    manifest_prefix: str
    output_prefix: str
    job_prefix: str
    transform_instance_type: str
    transform_instance_count: int
    transform_max_payload_mb: int
    max_receive_count: int
    max_image_pixels: int

    @property
    def batch_max_bytes(self) -> int:
        return self.transform_max_payload_mb * 1_000_000  # as MaxPayloadInMB and TorchServe count

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def need(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise RuntimeError(f"environment variable {name} is not set (template.yaml sets it)")
            return value

        def number(name: str) -> int:
            raw = need(name)
            try:
                return int(raw)
            except ValueError:
                raise RuntimeError(f"environment variable {name}={raw!r} is not a whole number") from None

        try:
            mode = Mode(need("INFERENCE_MODE"))
        except ValueError:
            raise RuntimeError(
                f"INFERENCE_MODE={env.get('INFERENCE_MODE')!r}: use one of {', '.join(m.value for m in Mode)}"
            ) from None
        return cls(
            table_name=need("TABLE_NAME"),
            mode=mode,
            auto_batch_threshold=number("AUTO_BATCH_THRESHOLD"),
            endpoint_name=need("ENDPOINT_NAME"),
            model_name=need("MODEL_NAME"),
            input_prefix=need("INPUT_PREFIX"),
            manifest_prefix=need("MANIFEST_PREFIX"),
            output_prefix=need("OUTPUT_PREFIX"),
            job_prefix=need("TRANSFORM_JOB_PREFIX"),
            transform_instance_type=need("TRANSFORM_INSTANCE_TYPE"),
            transform_instance_count=number("TRANSFORM_INSTANCE_COUNT"),
            transform_max_payload_mb=number("TRANSFORM_MAX_PAYLOAD_MB"),
            max_receive_count=number("MAX_RECEIVE_COUNT"),
            max_image_pixels=number("MAX_IMAGE_PIXELS"),
        )
