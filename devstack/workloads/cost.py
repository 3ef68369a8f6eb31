"""`make cost`: what a million images cost on AWS in each mode, from what the pipeline really does.

    python -m devstack.workloads.cost --images 300        (make cost)

1. A flood of --images photos goes through the local stack once per mode, and once more to be
   classified again (`make reclassify` of a batch run's images, only that pass counted, the
   command's Scan and requests included). Everything the pipeline
   does that AWS bills is counted: S3 GETs and PUTs, SQS requests (S3's notifications, the
   functions' sends, the event source mappings' receives and deletes), DynamoDB read and write
   units from the items' sizes (devstack.aws.meter, around moto), Lambda invocations and their
   duration x memory, the serverless endpoint's duration x memory and data processed, and the
   images the transform jobs classified. The user's uploads and reads are not counted.
2. The model server's throughput for a transform job is measured here: the real container
   (TorchServe and the toolkit, the template's model environment) pinned to this machine's cores,
   multi-record requests. Each transform instance type's throughput is scaled from it (RATES says
   how, and which figure is not scaled from it), and its instance time priced.
3. The counts are priced with infra/prices.json (its region, date and sources); each
   job also pays its instances' start-up (transform_startup_seconds there). DynamoDB's writes
   include the by-breed and by-problem indexes' (devstack/aws/meter.py).
4. For each instance type: dollars per million images and the flood from which batch transform is
   the cheaper, with one job per MaxImagesPerJob images; then the table of floods for the template's
   instance type; a million images classified again; then what the stack costs a month while idle.

Durations measured here are this machine's: the serverless endpoint's time per image is priced as
this machine's time, and the instance rates are scaled from it; the report says which is which.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from networks import INT8, INT8_REDUCE_RANGE, CpuFlags, choose, read_cpu_flags

from infra.prices import job_cost, load_prices
from infra.template import load_template, parameter_defaults

FLOODS = (100, 1_000, 10_000, 100_000, 1_000_000)
MILLION = 1_000_000

# int8 speed with AVX-512 VNNI over int8-reduce-range without it, on the same number of cores:
# make benchmark's handler, 32 images per request, 109.6 img/s on a 2-core VNNI VM against 68.6 on
# the 2-core AVX2 VM (two VMs of two sessions, 2026-11 and 2026-12-01; docs/performance.md).
VNNI_SPEEDUP = 109.6 / 68.6


@dataclass(frozen=True)
class Host:
    """What a transform instance type runs on (EC2's instance-type pages)."""

    vcpus: int
    vnni: bool | None  # AVX-512 VNNI on every host (True), on none (False), or by host (None)
    gpu: str = ""


# ml.c6i/m6i are Ice Lake and ml.c7i/m7i Sapphire Rapids, always with VNNI; ml.c5/m5 land on
# Skylake (no VNNI) or Cascade Lake (VNNI); ml.c4/m4 (Haswell, Broadwell) have AVX2 only;
# ml.g4dn.xlarge is one NVIDIA T4 and 4 vCPUs of a Cascade Lake.
HOSTS = {
    **{f"ml.{family}.xlarge": Host(4, vnni=True) for family in ("c6i", "m6i", "c7i", "m7i")},
    **{f"ml.{family}.xlarge": Host(4, vnni=None) for family in ("c5", "m5")},
    **{f"ml.{family}.xlarge": Host(4, vnni=False) for family in ("c4", "m4")},
    "ml.g4dn.xlarge": Host(4, vnni=None, gpu="NVIDIA T4"),
}
# What MODEL_PRECISION=int8 serves on hosts with VNNI (True), without (False), or either (None).
HOST_SERVES = {True: INT8.precision, False: INT8_REDUCE_RANGE.precision, None: "by host: int8 or int8-reduce-range"}
# A GPU instance is bound by its CPUs' decoding, not by the GPU, so its rate is not scaled from a
# CPU's: make benchmark on an H100 host (torch 2.11, 2026-11) served 600 img/s with DECODE_THREADS=4,
# g4dn.xlarge's vCPUs, at 32-64 images per request in fp16, while the forward pass alone did over
# 20,000. Not measured on a T4 nor through TorchServe (docs/performance.md).
GPU_RATES = {"ml.g4dn.xlarge": 600.0}


@dataclass(frozen=True)
class Rate:
    """How fast one transform instance classifies, what it serves, and where the figure comes from."""

    instance_type: str
    images_per_s: float
    serves: str
    basis: str


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
    transform_records: int  # images sent to transform jobs' model containers, retries included
    jobs: int


def serves_here(cpu: CpuFlags) -> str:
    """The network MODEL_PRECISION=int8 serves on a CPU with these flags, from an artifact of train.py."""
    files = {network.file for network in (INT8, INT8_REDUCE_RANGE)}
    return choose("int8", device="cpu", cpu=cpu, files=files).precision


def rates(measured_per_s: float, cpus: int, cpu: CpuFlags, instance_types: list[str]) -> list[Rate]:
    """Each instance type's images/s: a GPU type's from GPU_RATES, a CPU type's scaled from what the
    model server did here on `cpus` cores, by its vCPUs (one single-threaded TorchServe worker per
    vCPU) and by VNNI_SPEEDUP where its hosts and this CPU differ in VNNI (by host: the slower)."""
    here_vnni = cpu.safe(INT8) is None
    found = []
    for instance_type in instance_types:
        host = HOSTS[instance_type]
        if host.gpu:
            basis = f"{host.gpu}: make benchmark's CPU-bound H100 figure at {host.vcpus} decode threads, not scaled"
            found.append(Rate(instance_type, GPU_RATES[instance_type], "fp16", basis))
            continue
        vnni = bool(host.vnni)
        speed = (VNNI_SPEEDUP if vnni else 1.0) / (VNNI_SPEEDUP if here_vnni else 1.0)
        basis = f"scaled: {host.vcpus}/{cpus} vCPUs"
        if speed != 1:
            basis += f" x {speed:.2f} " + ("for VNNI" if speed > 1 else "without VNNI")
        if host.vnni is None:
            basis += " (the hosts without it)"
        found.append(Rate(instance_type, measured_per_s * host.vcpus / cpus * speed, HOST_SERVES[host.vnni], basis))
    return found


def run_cost(usage: Usage, prices: dict[str, Any], rate: Rate) -> dict[str, float]:
    """The run's cost in dollars by service, its transform images at `rate`, job start-ups excluded
    (see job_cost)."""
    instance_per_s = prices["transform_instance_per_hour"][rate.instance_type] / 3600
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
        "transform": usage.transform_records / rate.images_per_s * instance_per_s,
    }


def alarm_metrics(template: dict[str, Any]) -> int:
    """Alarm metrics, as CloudWatch bills alarms: one for a metric's alarm, one for each metric a metric
    math alarm reads (CloudWatch pricing: "per alarm metric")."""
    alarms = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    return sum(max(1, sum("MetricStat" in query for query in alarm.get("Metrics", []))) for alarm in alarms)


def idle_cost(template: dict[str, Any], prices: dict[str, Any]) -> dict[str, float]:
    """What the stack costs a month with no image, by what bills for merely existing."""
    kinds = [resource["Type"] for resource in template["Resources"].values()]
    return {
        "KMS key": kinds.count("AWS::KMS::Key") * prices["kms_key_per_month"],
        "alarms": alarm_metrics(template) * prices["cloudwatch_alarm_per_month"],
        "dashboard": kinds.count("AWS::CloudWatch::Dashboard") * prices["cloudwatch_dashboard_per_month"],
    }


def flood_cost(per_image: float, per_job: float, images: int, max_images_per_job: int | None) -> float:
    """Dollars for a flood of `images`; max_images_per_job None is the serverless mode (no jobs)."""
    jobs = 0 if max_images_per_job is None else math.ceil(images / max_images_per_job)
    return images * per_image + jobs * per_job


def crossover(
    serverless_per_image: float, batch_per_image: float, per_job: float, max_images_per_job: int
) -> int | None:
    """The smallest flood from which batch transform, one job per max_images_per_job images, is the
    cheaper for that flood and every larger one; None if there is none (a full job saves less than
    its start-up costs).

    With k jobs (floods of (k-1)M+1 to kM images) batch is the cheaper above k x P images, where P
    is the images whose saving pays one start-up; each further job makes the first flood of its
    block dearer again, so the answer is the first block cheaper from its start, or the cheaper
    tail of the block before it."""
    saving = serverless_per_image - batch_per_image
    m = max_images_per_job
    if saving * m <= per_job:
        return None
    p = per_job / saving
    jobs = math.floor((m - 1) / (m - p)) + 1  # the fewest jobs with k x p < (k - 1) x m + 1
    if jobs > 1 and (tail := math.floor((jobs - 1) * p) + 1) <= (jobs - 1) * m:
        return tail
    return (jobs - 1) * m + 1


def breakeven_job_size(serverless_per_image: float, batch_per_image: float, per_job: float) -> int | None:
    """The fewest images a job must hold to pay for its start-up; None if batch is dearer per image."""
    saving = serverless_per_image - batch_per_image
    return math.floor(per_job / saving) + 1 if saving > 0 else None


# -- measuring on the local stack ------------------------------------------------------------------


def measure(archive: Path, workdir: Path, photos: list[bytes], mode: str, gather_s: int) -> Usage:
    """One run of the photos in a mode: "serverless" or "batch" (from their uploads), or "reclassify":
    the batch run, then `make reclassify` of every image, of which only the second pass is counted
    (the command's Scan and requests included)."""
    from devstack.aws.stack import Stack, StackOptions

    stack_mode = "batch" if mode == "reclassify" else mode
    parameters = {"InferenceMode": stack_mode, "GatherWindowSeconds": str(gather_s)}
    with Stack(StackOptions(archive, workdir / mode, parameters)) as stack:
        assert stack.meter is not None
        stack.meter.reset()  # provisioning is not the pipeline's work
        before = _totals(stack)
        keys = [f"incoming/cost/{mode}/{n:05d}.jpg" for n in range(len(photos))]
        etags = stack.upload(dict(zip(keys, photos, strict=True)))
        if len(stack.wait_for_outcomes(etags, timeout_s=900)) < len(keys):
            raise SystemExit(f"{mode}: not every image had an outcome after 900 s")
        notifications = len(photos)  # S3's notification of each upload, billed as an SQS request
        if mode == "reclassify":
            time.sleep(2)  # the first pass's last deletes and polls
            stack.meter.reset()
            before, notifications = _totals(stack), 0
            _reclassify_all(stack, keys)
        time.sleep(2)  # let the last deletes and polls land
        counts = stack.meter.reset()
        after = _totals(stack)
        return Usage(
            images=len(photos),
            s3_get=counts["s3:GET"],
            s3_put=counts["s3:PUT"],
            sqs_requests=counts["sqs:request"] + notifications,
            dynamodb_write_units=counts["dynamodb:WRU"],
            dynamodb_read_units=counts["dynamodb:RRU"],
            **{name: after[name] - before[name] for name in after},  # type: ignore[arg-type]
        )


def _totals(stack: Any) -> dict[str, float]:
    """What the stack's parts have counted since it started, by Usage's field."""
    assert stack.runtime is not None and stack.runner is not None and stack.endpoint_container is not None
    functions = stack.functions.values()
    endpoint_gb = int(stack.parameters["EndpointMemorySizeMB"]) / 1024
    return {
        "lambda_requests": sum(f.invocations for f in functions),
        "lambda_gb_seconds": sum(f.billed_ms / 1000 * f.spec.memory_mb / 1024 for f in functions),
        "endpoint_gb_seconds": stack.endpoint_container.busy_s * endpoint_gb,  # time serving, not queued
        "endpoint_gb_processed": stack.runtime.data_bytes.get(stack.parameters["EndpointName"], 0) / 1e9,
        "transform_records": stack.runner.records,
        "jobs": len(stack.runner.instance_seconds),
    }


def _reclassify_all(stack: Any, keys: list[str]) -> None:
    """`make reclassify` of every image, as an operator runs it (metered), until each is answered again."""
    from cli import reclassify
    from infra.predictions import Predictions
    from pipeline.adapters.dynamodb import timestamp
    from pipeline.logic.notifications import reclassify_request

    started = timestamp(datetime.now(UTC))
    environment = stack.user_environment()
    dynamodb, sqs = stack.client("dynamodb"), stack.client("sqs")
    selection = reclassify.Selection(environment["IMAGES_BUCKET"], "incoming/cost/")
    images = reclassify.to_reclassify(dynamodb, environment["PREDICTIONS_TABLE"], selection)
    bodies = map(reclassify_request, images)
    sent, refused = reclassify.send_requests(sqs, environment["RECLASSIFY_QUEUE_URL"], bodies, out=io.StringIO())
    if (sent, refused) != (len(keys), 0):
        raise SystemExit(f"reclassify: {sent} requests sent and {refused} refused for {len(keys)} images")
    records = Predictions(stack.client("dynamodb", observer=True), stack.names.table)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        found = records.images(stack.names.bucket, keys).values()
        if len(found) == len(keys) and all(i["status"] != "PENDING" and i["updated_at"] > started for i in found):
            return
        time.sleep(2)
    raise SystemExit("reclassify: not every image was answered again after 900 s")


def measure_model_server(archive: Path, workdir: Path, photos: list[bytes], cpus: int, batch: int) -> float:
    """Images/s of multi-record requests of `batch` images, 4 in flight, through the real model
    server with the template's model environment, pinned to `cpus` cores: a transform instance's work."""
    from serving_benchmark import Setting
    from serving_benchmark import measure as measure_setting

    from devstack.aws.container import unpack_model

    model_dir = unpack_model(archive, workdir / "model-server")
    row = measure_setting(model_dir, photos[:64], Setting.of_template(), cpus, len(photos), 4, batch)
    return float(row["batch"])


@dataclass(frozen=True)
class Batch:
    """Batch mode on one transform instance type."""

    rate: Rate
    per_image: float  # dollars, start-up excluded
    per_job: float  # dollars of start-up
    per_million: float  # dollars for a million images in jobs of MaxImagesPerJob
    crossover: int | None  # the flood from which it is the cheaper mode (see crossover)


@dataclass(frozen=True)
class Comparison:
    serverless_per_image: float
    batch: dict[str, Batch]  # by instance type, cheapest per million first
    max_images_per_job: int
    default_type: str
    reclassify_per_million: float | None = None  # on the default type, in jobs of MaxImagesPerJob

    def table(self, floods: tuple[int, ...] = FLOODS) -> dict[int, dict[str, float]]:
        """Dollars per 1,000 images of each mode, for floods of these sizes, on the default type."""
        default = self.batch[self.default_type]
        m = self.max_images_per_job
        return {
            flood: {
                "serverless": flood_cost(self.serverless_per_image, 0, flood, None) / flood * 1000,
                "batch": flood_cost(default.per_image, default.per_job, flood, m) / flood * 1000,
            }
            for flood in floods
        }


def compare(
    usages: dict[str, Usage], prices: dict[str, Any], parameters: dict[str, Any], rate_list: list[Rate]
) -> Comparison:
    """Each mode's cost from the measured runs, batch on each instance type of `rate_list`, with the
    template's (or deployment's) parameters."""
    count = int(parameters["TransformInstanceCount"])
    m = int(parameters["MaxImagesPerJob"])
    default_type = str(parameters["TransformInstanceType"])
    found = {rate.instance_type: rate for rate in rate_list}
    serverless = usages["serverless"]
    endpoint = sum(run_cost(serverless, prices, found[default_type]).values()) / serverless.images
    batch = {}
    for name, rate in found.items():
        per_image = sum(run_cost(usages["batch"], prices, rate).values()) / usages["batch"].images
        per_job = job_cost(prices, name, count)
        million = flood_cost(per_image, per_job, MILLION, m)
        batch[name] = Batch(rate, per_image, per_job, million, crossover(endpoint, per_image, per_job, m))
    ranked = dict(sorted(batch.items(), key=lambda item: item[1].per_million))
    again = None
    if "reclassify" in usages:
        per_image = (
            sum(run_cost(usages["reclassify"], prices, found[default_type]).values()) / usages["reclassify"].images
        )
        again = flood_cost(per_image, job_cost(prices, default_type, count), MILLION, m)
    return Comparison(endpoint, ranked, m, default_type, again)


def report(
    comparison: Comparison, usages: dict[str, Usage], prices: dict[str, Any], measured: float, cpus: int
) -> None:
    cpu = read_cpu_flags()
    m, default_type = comparison.max_images_per_job, comparison.default_type
    default = comparison.batch[default_type]
    where = "infra/prices.json"
    print(f"\nprices: {prices['region']}, recorded {prices['recorded']} ({where}); {prices['note']}")
    print(f"measured here ({cpu.model}, {cpus} cores, {cpu.summary}): {usages['serverless'].images} images a mode")
    print(
        f"the model server here (TorchServe, the template's model environment, {cpus} vCPUs, serving "
        f"{serves_here(cpu)}): {measured:.1f} images/s in multi-record requests"
    )
    print(f"\nper image, by service (dollars per 1,000 images; transform at {default_type}'s rate):")
    for mode, usage in usages.items():
        items = run_cost(usage, prices, default.rate)
        print(f"  {mode:<10} " + "  ".join(f"{k} {v / usage.images * 1000:.4f}" for k, v in items.items()))
    print("  (the endpoint's time per image is this machine's: a serverless endpoint's vCPUs are not documented)")

    print(f"\nper million images (batch: jobs of MaxImagesPerJob {m:,} images):")
    print(f"  serverless endpoint   ${comparison.serverless_per_image * MILLION:.2f}")
    header = "batch on", "serves", "img/s", "start-up", "per million", "cheaper from", "img/s basis"
    print("  {:<15} {:<34} {:>5} {:>8} {:>11}  {:<15} {}".format(*header))
    for name, batch in comparison.batch.items():
        where = f"{batch.crossover:,}" if batch.crossover else "never"
        print(
            f"  {name:<15} {batch.rate.serves:<34} {batch.rate.images_per_s:>5.0f} {f'${batch.per_job:.4f}':>8} "
            f"{f'${batch.per_million:.2f}':>11}  {where:<15} {batch.rate.basis}"
        )

    print(f"\ncost per 1,000 images on {default_type} (the template's), MaxImagesPerJob {m:,}:")
    print(f"  {'flood':>9}  {'serverless':>10}  {'batch':>10}")
    for flood, row in comparison.table().items():
        print(f"  {flood:>9,}  ${row['serverless']:>9.4f}  ${row['batch']:>9.4f}")
    fewest = breakeven_job_size(comparison.serverless_per_image, default.per_image, default.per_job)
    if default.crossover:
        print(f"batch transform is the cheaper from a flood of {default.crossover:,} images")
    elif fewest:
        saved = (comparison.serverless_per_image - default.per_image) * m
        print(f"batch transform is never the cheaper: a full job of {m:,} images saves ${saved:.4f}, ", end="")
        print(f"less than its start-up (${default.per_job:.4f})")
    else:
        print("batch transform is never the cheaper: it costs more per image than the endpoint")
    if fewest:
        print(f"a job pays for its start-up from {fewest:,} images (MaxImagesPerJob must be larger)")
    if comparison.reclassify_per_million is not None:
        print(
            f"make reclassify of a million images already classified, by transform jobs on {default_type}: "
            f"${comparison.reclassify_per_million:.2f} (the command's Scan and requests included)"
        )
    idle = idle_cost(load_template(), prices)
    parts = ", ".join(f"{name} ${value:.2f}" for name, value in idle.items())
    print(f"\nidle, with no image: ${sum(idle.values()):.2f} a month ({parts}; {prices['idle_note']})")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="images per mode in the measured run")
    parser.add_argument("--model", type=Path, help="a model.tar.gz (default: train a small one)")
    parser.add_argument("--gather-seconds", type=int, default=5, help="GatherWindowSeconds of the local stack")
    parser.add_argument("--batch", type=int, default=32, help="images per multi-record request to the model server")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def main(args: argparse.Namespace) -> int:
    from devstack.aws.host import stop_on_signals
    from devstack.workloads.pipeline_benchmark import model_and_photos

    stop_on_signals()
    cpus = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="dogbreed-cost-") as tmp:
        workdir = Path(tmp)
        archive, photos = model_and_photos(args.model, workdir, args.images)
        measured = measure_model_server(archive, workdir, photos, cpus, args.batch)
        usages = {
            mode: measure(archive, workdir, photos, mode, args.gather_seconds)
            for mode in ("serverless", "batch", "reclassify")
        }
    prices = load_prices()
    priced = [name for name in prices["transform_instance_per_hour"] if name in HOSTS]
    comparison = compare(
        usages, prices, parameter_defaults(load_template()), rates(measured, cpus, read_cpu_flags(), priced)
    )
    report(comparison, usages, prices, measured, cpus)
    if args.json:
        results = {"usage": usages, "measured_images_per_s": measured, "comparison": comparison}
        args.json.write_text(json.dumps(results, default=lambda o: asdict(o), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))  # with the Makefile's IMPORT_PATH (make cost)
