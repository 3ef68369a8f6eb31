"""`make cost`: what 1,000 images cost on AWS in each mode, from what the pipeline really does.

    python -m devstack.workloads.cost --images 300        (make cost)

1. A flood of --images photos goes through the local stack once per mode. Everything the pipeline
   does that AWS bills is counted: S3 GETs and PUTs, SQS requests (S3's notifications, the
   functions' sends, the event source mappings' receives and deletes), DynamoDB read and write
   units from the items' sizes (devstack.aws.meter, around moto), Lambda invocations and their
   duration x memory, the serverless endpoint's duration x memory and data processed, and the
   transform instances' running time. The user's uploads and reads are not counted.
2. The counts are priced with devstack/workloads/prices.json (its region, date and sources), and each job
   also pays its instances' start-up (transform_startup_seconds there).
3. For floods of 100 to 100,000 images: the cost per 1,000 images of each mode, and the flood
   size from which batch transform is the cheaper, with one job per MaxImagesPerJob images.
4. The batch run's instance time per image priced on each CPU transform instance type of the price
   table, with the int8 network its hosts serve (HOST_NETWORKS): what chose TransformInstanceType.

Durations are this machine's: the model's time per image on an ml.m5.xlarge or a 3 GB serverless
endpoint differs, and the table says so beside its figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from networks import INT8, INT8_REDUCE_RANGE

PRICES = Path(__file__).with_name("prices.json")
FLOODS = (100, 1_000, 10_000, 100_000)
# The network MODEL_PRECISION=int8 serves on each CPU family's hosts (model/serving/networks.py), by
# their processors (EC2's instance-type pages): the sixth and seventh generations are Ice Lake and
# Sapphire Rapids, always with AVX-512 VNNI; ml.m5 and ml.c5 land on Skylake (no VNNI) or Cascade
# Lake (VNNI); ml.m4 and ml.c4 (Haswell, Broadwell) have AVX2 only.
HOST_NETWORKS = {
    **dict.fromkeys(("c6i", "m6i", "r6i", "c7i", "m7i", "r7i"), INT8.precision),
    **dict.fromkeys(("m5", "c5"), f"{INT8.precision} or {INT8_REDUCE_RANGE.precision}, by host"),
    **dict.fromkeys(("m4", "c4"), INT8_REDUCE_RANGE.precision),
}


@dataclass(frozen=True)
class Usage:
    """What one run of `images` images did, in the units AWS bills."""

    images: int
    s3_get: int
    s3_put: int
    sqs_requests: int
    dynamodb_write_units: int
    dynamodb_read_units: int
    lambda_requests: int
    lambda_gb_seconds: float
    endpoint_gb_seconds: float
    endpoint_gb_processed: float
    instance_seconds: float  # transform instances running, start-up not included
    jobs: int


def load_prices(path: Path = PRICES) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def run_cost(usage: Usage, prices: dict[str, Any], instance_type: str) -> dict[str, float]:
    """The run's cost in dollars by service, job start-ups excluded (see job_cost)."""
    instance_per_s = prices["transform_instance_per_hour"][instance_type] / 3600
    return {
        "s3": usage.s3_get * prices["s3_get_per_1000_requests"] / 1000
        + usage.s3_put * prices["s3_put_per_1000_requests"] / 1000,
        "sqs": usage.sqs_requests * prices["sqs_per_million_requests"] / 1e6,
        "dynamodb": usage.dynamodb_write_units * prices["dynamodb_per_million_write_units"] / 1e6
        + usage.dynamodb_read_units * prices["dynamodb_per_million_read_units"] / 1e6,
        "lambda": usage.lambda_gb_seconds * prices["lambda_arm64_per_gb_second"]
        + usage.lambda_requests * prices["lambda_per_million_requests"] / 1e6,
        "endpoint": usage.endpoint_gb_seconds * prices["serverless_inference_per_gb_second"]
        + usage.endpoint_gb_processed * prices["serverless_inference_per_gb_processed"],
        "transform": usage.instance_seconds * instance_per_s,
    }


def job_cost(prices: dict[str, Any], instance_type: str, instance_count: int) -> float:
    """What starting one transform job costs: its instances' start-up time."""
    per_s = prices["transform_instance_per_hour"][instance_type] / 3600
    return float(prices["transform_startup_seconds"] * instance_count * per_s)


def flood_cost(per_image: float, per_job: float, images: int, max_images_per_job: int | None) -> float:
    """Dollars for a flood of `images`; max_images_per_job None is the serverless mode (no jobs)."""
    jobs = 0 if max_images_per_job is None else math.ceil(images / max_images_per_job)
    return images * per_image + jobs * per_job


def crossover(serverless_per_image: float, batch_per_image: float, per_job: float) -> int | None:
    """The smallest flood for which one batch job is cheaper than the endpoint, or None if never."""
    saving = serverless_per_image - batch_per_image
    return math.ceil(per_job / saving) if saving > 0 else None


def instance_comparison(usage: Usage, prices: dict[str, Any]) -> dict[str, float]:
    """Dollars of transform instance time per 1,000 images on each CPU instance type of `prices`, at
    the instance seconds per image `usage` measured (the same rate for all: their prices differ)."""
    per_image_s = usage.instance_seconds / usage.images
    return {
        instance_type: per_hour / 3600 * per_image_s * 1000
        for instance_type, per_hour in prices["transform_instance_per_hour"].items()
        if instance_type.split(".")[1] in HOST_NETWORKS
    }


# -- measuring on the local stack ------------------------------------------------------------------


def measure(archive: Path, workdir: Path, photos: list[bytes], mode: str, gather_s: int) -> Usage:
    from devstack.aws.stack import Stack, StackOptions

    parameters = {"InferenceMode": mode, "GatherWindowSeconds": str(gather_s)}
    with Stack(StackOptions(archive, workdir / mode, parameters)) as stack:
        assert stack.meter is not None and stack.runtime is not None and stack.runner is not None
        assert stack.endpoint_container is not None
        stack.meter.reset()  # provisioning is not the pipeline's work
        keys = [f"incoming/cost/{mode}/{n:05d}.jpg" for n in range(len(photos))]
        etags = stack.upload(dict(zip(keys, photos, strict=True)))
        if len(stack.wait_for_outcomes(etags, timeout_s=900)) < len(keys):
            raise SystemExit(f"{mode}: not every image had an outcome after 900 s")
        time.sleep(2)  # let the last deletes and polls land
        counts = stack.meter.reset()
        endpoint = stack.parameters["EndpointName"]
        endpoint_gb = int(stack.parameters["EndpointMemorySizeMB"]) / 1024
        functions = stack.functions.values()
        return Usage(
            images=len(photos),
            s3_get=counts["s3:GET"],
            s3_put=counts["s3:PUT"],
            sqs_requests=counts["sqs:request"] + len(photos),  # + S3's notification of each upload
            dynamodb_write_units=counts["dynamodb:WRU"],
            dynamodb_read_units=counts["dynamodb:RRU"],
            lambda_requests=sum(f.invocations for f in functions),
            lambda_gb_seconds=sum(f.billed_ms / 1000 * f.spec.memory_mb / 1024 for f in functions),
            endpoint_gb_seconds=stack.endpoint_container.busy_s * endpoint_gb,  # time serving, not queued
            endpoint_gb_processed=stack.runtime.data_bytes.get(endpoint, 0) / 1e9,
            instance_seconds=sum(stack.runner.instance_seconds.values()),
            jobs=len(stack.runner.instance_seconds),
        )


def report(usages: dict[str, Usage], prices: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    instance_type = str(parameters["TransformInstanceType"])
    per_job = job_cost(prices, instance_type, int(parameters["TransformInstanceCount"]))
    max_per_job = int(parameters["MaxImagesPerJob"])
    per_image = {mode: sum(run_cost(u, prices, instance_type).values()) / u.images for mode, u in usages.items()}
    where = "devstack/workloads/prices.json"
    print(f"\nprices: {prices['region']}, recorded {prices['recorded']} ({where}); {prices['note']}")
    print(f"measured on this machine: {', '.join(f'{u.images} images in {m} mode' for m, u in usages.items())}")
    print("\nper image, by service (dollars per 1,000 images):")
    for mode, usage in usages.items():
        items = run_cost(usage, prices, instance_type)
        print(f"  {mode:<10} " + "  ".join(f"{k} {v / usage.images * 1000:.4f}" for k, v in items.items()))
    startup = prices["transform_startup_seconds"]
    print(f"  each transform job: {startup} s of {instance_type} start-up = ${per_job:.4f}")
    print(f"\ncost per 1,000 images (MaxImagesPerJob {max_per_job}):")
    print(f"  {'flood':>8} " + " ".join(f"{mode:>11}" for mode in per_image))
    table = {}
    for flood in FLOODS:
        row = {
            mode: flood_cost(cost, per_job if mode == "batch" else 0, flood, max_per_job if mode == "batch" else None)
            / flood
            * 1000
            for mode, cost in per_image.items()
        }
        table[flood] = row
        print(f"  {flood:>8} " + " ".join(f"${v:>10.4f}" for v in row.values()))
    found = crossover(per_image.get("serverless", 0), per_image.get("batch", 0), per_job)
    where = f"{found:,} images" if found else "never (the endpoint is cheaper per image)"
    print(f"\nbatch transform is the cheaper from a flood of {where}")
    compared: dict[str, float] = {}
    if "batch" in usages and usages["batch"].images:
        compared = instance_comparison(usages["batch"], prices)
        rate = usages["batch"].instance_seconds / usages["batch"].images
        print(f"\ntransform instance time per 1,000 images at this run's {rate:.4f} s an image, by CPU type:")
        for name, dollars in sorted(compared.items(), key=lambda item: item[1]):
            print(f"  {name:<15} ${dollars:.4f}  serves {HOST_NETWORKS[name.split('.')[1]]}")
    return {
        "usage": {m: asdict(u) for m, u in usages.items()},
        "per_image": per_image,
        "table": table,
        "crossover": found,
        "instance_types": compared,
    }


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="images per mode in the measured run")
    parser.add_argument("--model", type=Path, help="a model.tar.gz (default: train a small one)")
    parser.add_argument("--gather-seconds", type=int, default=5, help="GatherWindowSeconds of the local stack")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def main(args: argparse.Namespace) -> int:
    from devstack.aws.template import load_template, parameter_defaults
    from devstack.workloads.pipeline_benchmark import model_and_photos

    with tempfile.TemporaryDirectory(prefix="dogbreed-cost-") as tmp:
        workdir = Path(tmp)
        archive, photos = model_and_photos(args.model, workdir, args.images)
        usages = {
            mode: measure(archive, workdir, photos, mode, args.gather_seconds) for mode in ("serverless", "batch")
        }
    results = report(usages, load_prices(), parameter_defaults(load_template()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))  # with the Makefile's IMPORT_PATH (make cost)
