"""AWS's documented limits and latencies that the pipeline's paths depend on, each with its source
(gathered in shared/reference/scale.md), and the worst-case time of a function's piece of work
computed from them. tests/unit/test_limits.py checks every path against these at the template's
defaults.

Where AWS documents a range, the upper end is used; where it documents nothing (marked unverified),
a conservative figure is, and the note says so."""

from __future__ import annotations

import math
from dataclasses import dataclass

# -- limits ----------------------------------------------------------------------------------------
# DynamoDB developer guide, "Item sizes and formats": 400 KB, names and values counted.
DYNAMODB_ITEM_BYTES = 400 * 1024
# SQS API reference, SendMessageBatch: 10 entries; 1 MiB in all since January 2026 (AWS Compute Blog,
# "More room to build: serverless services now support payloads up to 1 MB").
SQS_BATCH_ENTRIES = 10
SQS_BATCH_BYTES = 1024 * 1024
# Lambda developer guide, "Using Lambda with Amazon SQS": a batch is cut at the 6 MB synchronous
# invocation payload.
LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024
# Lambda developer guide, "Configure Lambda function memory": one full vCPU at 1,769 MB.
LAMBDA_MB_PER_VCPU = 1769
# SageMaker API reference, DescribeTransformJob: FailureReason is at most 1,024 characters.
SAGEMAKER_FAILURE_REASON_CHARS = 1024
# S3 user guide, "Naming Amazon S3 objects": a key is at most 1,024 bytes of UTF-8.
S3_KEY_BYTES = 1024
# DynamoDB developer guide, "Service, account, and table quotas": a partition takes at most 1,000 write
# units a second (a write of up to 1 KB is one unit), a global secondary index's partitions too; a
# hotter partition throttles the writes to the table.
DYNAMODB_PARTITION_WRITE_UNITS_PER_S = 1000
DYNAMODB_WRITE_UNIT_BYTES = 1024

# SageMaker developer guide, "Serverless Inference" (and InvokeEndpoint): an invocation is answered
# within 60 s, and its payload is at most 4 MB.
SERVERLESS_INVOCATION_S = 60

# -- latencies of one call, for budgets (seconds) ----------------------------------------------------
# S3 performance guidelines, "Timeouts and retries for latency-sensitive applications": small requests
# "median latencies in the range of tens of milliseconds"; first byte of larger ones 100-200 ms.
S3_SMALL_REQUEST_S = 0.06
S3_FIRST_BYTE_S = 0.2
# Unverified: AWS documents no per-function transfer rate; 50 MB/s is well under what one
# connection to S3 in the Region carries.
S3_BYTES_PER_S = 50_000_000
# SQS API reference: one HTTPS round trip in the Region, tens of milliseconds.
SQS_REQUEST_S = 0.04
# DynamoDB: single-digit milliseconds at the service, plus the client's round trip.
DYNAMODB_REQUEST_S = 0.02
# Unverified: SageMaker's control plane (CreateTransformJob, DescribeTransformJob) documents no latency.
SAGEMAKER_CONTROL_S = 0.5

# -- measured here, not AWS's -----------------------------------------------------------------------
# `make benchmark-photos` (docs/performance.md, "Large photos"): decoding and downsizing a 48 MP photo
# takes 281 ms on one full core; it scales with the pixels.
DOWNSIZE_S_PER_MEGAPIXEL = 0.281 / 48
# The same for a phone's HEIC, which has no reduced-scale decode (the whole image is decoded): a 12 MP
# one (4032 x 3024) took 645 ms, pillow-heif's import included (an AVIF 271 ms), 2026-12-05.
CONVERT_S_PER_MEGAPIXEL = 0.645 / 12.19
# The model handler's work per image on one full core, at its slowest: an fp32 forward pass (int8 is
# faster; `make benchmark`: 2.1 ms int8 for one image at batch 1 on the 2-core VM, fp32 under 20 ms), and
# decoding at a reduced scale per MB of JPEG (downsizing a 25 MB, 48 MP JPEG took 281 ms, resizing included).
HANDLER_FORWARD_S = 0.020
HANDLER_DECODE_S_PER_BYTE = 0.281 / 25_000_000
# Unverified: AWS does not document a serverless endpoint's CPU; a quarter of a core is assumed.
SERVERLESS_VCPUS = 0.25


def vcpus(memory_mb: int) -> float:
    """The share of a vCPU a Lambda function of this memory size gets."""
    return min(memory_mb / LAMBDA_MB_PER_VCPU, 6.0)


def rounds(calls: int, at_once: int) -> int:
    """How many one-after-another waits `calls` calls made `at_once` at a time take."""
    return math.ceil(calls / at_once)


def transfer_s(size: int) -> float:
    """Reading or writing an object of `size` bytes."""
    return S3_FIRST_BYTE_S + size / S3_BYTES_PER_S


@dataclass(frozen=True)
class Budget:
    """A function's time: it stops starting work at `work_share` of its timeout, so the last piece
    it starts must end by `limit_share` of it."""

    timeout_s: float
    work_share: float
    limit_share: float = 0.8  # the soak's margin: every run under 80% of its timeout

    @property
    def piece_s(self) -> float:
        """The longest a piece of work may take."""
        return (self.limit_share - self.work_share) * self.timeout_s

    @property
    def work_s(self) -> float:
        """The time in which a run starts work."""
        return self.work_share * self.timeout_s
