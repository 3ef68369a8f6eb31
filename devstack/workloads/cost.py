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
2. The model server's throughput is measured here as each CPU class AWS rents would run it
   (cpu_classes.py: the real container, TorchServe and the toolkit with the template's model
   environment, pinned to this machine's cores, its kernels capped to the class and checked with
   ONEDNN_VERBOSE): one image at a time, and multi-record requests. Each CPU transform instance
   type is priced at its hosts' class's rate (HOSTS; by host, the slower class; a class above this
   CPU at the fastest class measured below it, a floor), scaled by its vCPUs; a GPU type's figure
   is not scaled from a CPU's (GPU_RATES).
3. The counts are priced with infra/prices.json (its region, date and sources); each
   job also pays its instances' start-up (transform_startup_seconds there). DynamoDB's writes
   include the by-breed, by-problem and review indexes' (devstack/aws/meter.py; the report says
   their share).
4. For each instance type: dollars per million images and the flood from which batch transform is
   the cheaper, with one job per MaxImagesPerJob images; the cheapest CPU type, against the
   template's TransformInstanceType; then the table of floods for the template's instance type; a
   million images classified again; then what the stack costs a month while idle.

The serverless endpoint's CPU is not documented: its time per image is priced as this machine's
(its class, uncapped), and the report shows the range if its hosts were each class measured.
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

import cpu_classes
from networks import read_cpu_flags

from infra.prices import job_cost, load_prices
from infra.template import load_template, parameter_defaults
from pipeline.logic.ingest import IMAGES_PER_REQUEST

FLOODS = (100, 1_000, 10_000, 100_000, 1_000_000)
MILLION = 1_000_000


@dataclass(frozen=True)
class Host:
    """What a transform instance type runs on (EC2's instance-type pages)."""

    vcpus: int
    classes: tuple[str, ...] = ()  # the CPU classes of its hosts (cpu_classes.py); several: by host
    gpu: str = ""


# ml.c7i/m7i are Sapphire Rapids (AMX), ml.c6i/m6i Ice Lake (VNNI); ml.c5/m5 land on Skylake (no
# VNNI) or Cascade Lake (VNNI); ml.c4/m4 (Haswell, Broadwell) have AVX2 only; ml.g4dn.xlarge is one
# NVIDIA T4 and 4 vCPUs of a Cascade Lake.
HOSTS = {
    **{f"ml.{family}.xlarge": Host(4, (cpu_classes.AMX.name,)) for family in ("c7i", "m7i")},
    **{f"ml.{family}.xlarge": Host(4, (cpu_classes.VNNI.name,)) for family in ("c6i", "m6i")},
    **{f"ml.{family}.xlarge": Host(4, (cpu_classes.VNNI.name, cpu_classes.AVX512.name)) for family in ("c5", "m5")},
    **{f"ml.{family}.xlarge": Host(4, (cpu_classes.AVX2.name,)) for family in ("c4", "m4")},
    "ml.g4dn.xlarge": Host(4, gpu="NVIDIA T4"),
}
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


def class_rate(name: str, measured: dict[str, float]) -> tuple[float, str]:
    """Images/s of CPU class `name` on the measured cores, and its basis: measured, or (a class this
    CPU cannot stand for) the fastest measured class below it, whose every instruction its CPUs have:
    a floor."""
    if name in measured:
        return measured[name], f"measured as {name}"
    order = [cls.name for cls in cpu_classes.CLASSES]
    below = [other for other in order[order.index(name) + 1 :] if other in measured]
    if not below:
        raise ValueError(f"no CPU class at or below {name} was measured: {sorted(measured)}")
    return measured[below[0]], f"{name} not measured here: {below[0]}'s rate, a floor"


def rates(measured: dict[str, float], cpus: int, instance_types: list[str]) -> list[Rate]:
    """Each instance type's images/s: a GPU type's from GPU_RATES; a CPU type's from what the model
    server did here on `cpus` cores as its hosts' CPU class (`measured`: images/s by class), scaled
    by its vCPUs (one single-threaded TorchServe worker per vCPU); by host, the slower class."""
    found = []
    for instance_type in instance_types:
        host = HOSTS[instance_type]
        if host.gpu:
            basis = f"{host.gpu}: make benchmark's CPU-bound H100 figure at {host.vcpus} decode threads, not scaled"
            found.append(Rate(instance_type, GPU_RATES[instance_type], "fp16", basis))
            continue
        rate, basis, name = min((*class_rate(name, measured), name) for name in host.classes)
        by_host = f" (by host: the slower of {' or '.join(host.classes)})" if len(host.classes) > 1 else ""
        serves = cpu_classes.expected_network(cpu_classes.BY_NAME[name])
        found.append(
            Rate(instance_type, rate * host.vcpus / cpus, serves, f"{basis}{by_host}, x {host.vcpus}/{cpus} vCPUs")
        )
    return found


def serverless_range(
    usage: Usage, prices: dict[str, Any], rate: Rate, one_at_a_time: dict[str, float], here: str
) -> dict[str, float]:
    """Dollars per image in serverless mode if the endpoint's hosts were each measured CPU class: the
    endpoint's time (measured here, as class `here`) scaled by the classes' one-at-a-time rates."""
    costs = run_cost(usage, prices, rate)
    endpoint_time = usage.endpoint_gb_seconds * prices["serverless_inference_per_gb_second"]
    rest = sum(costs.values()) - endpoint_time
    return {
        name: (rest + endpoint_time * one_at_a_time[here] / per_s) / usage.images
        for name, per_s in one_at_a_time.items()
    }


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


def measure(archive: Path, workdir: Path, photos: list[bytes], mode: str, gather_s: int) -> tuple[Usage, int]:
    """One run of the photos in a mode: "serverless" or "batch" (from their uploads), or "reclassify":
    the batch run, then `make reclassify` of every image, of which only the second pass is counted
    (the command's Scan and requests included). With the usage, the write units of it that were the
    indexes' (included in the usage's)."""
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
        usage = Usage(
            images=len(photos),
            s3_get=counts["s3:GET"],
            s3_put=counts["s3:PUT"],
            sqs_requests=counts["sqs:request"] + notifications,
            dynamodb_write_units=counts["dynamodb:WRU"],
            dynamodb_read_units=counts["dynamodb:RRU"],
            **{name: after[name] - before[name] for name in after},  # type: ignore[arg-type]
        )
        return usage, counts["dynamodb:index_WRU"]


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


def measure_model_server(
    archive: Path, workdir: Path, photos: list[bytes], cpus: int, batch: int
) -> tuple[list[dict[str, Any]], float]:
    """The real model server with the template's model environment, pinned to `cpus` cores: as each
    CPU class this machine can stand for would run it (cpu_classes.measure), its images/s one at a
    time (the endpoint's work) and in multi-record requests of `batch` images, 4 in flight (a
    transform instance's); and, as this CPU, the images/s of one serverless invocation of
    IMAGES_PER_REQUEST images, one in flight."""
    from serving_benchmark import per_request

    from devstack.aws.container import unpack_model

    model_dir = unpack_model(archive, workdir / "model-server")
    classes = cpu_classes.measure(model_dir, photos[:64], cpus, len(photos), batch)
    (invocation,) = per_request(model_dir, photos[:64], cpus, len(photos), [IMAGES_PER_REQUEST])
    return classes, float(invocation["images_per_s"])


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


def auto_batch_backlog(parameters: dict[str, Any], prices: dict[str, Any], invocation_per_s: float) -> int:
    """The backlog from which auto mode sends a Lambda batch to batch transform: the images the
    serverless path classifies while a job gathers and starts (GatherWindowSeconds plus the
    instances' start-up). An image further back than that is answered sooner by a job starting now;
    one nearer, sooner and more cheaply by the endpoint. The serverless path's rate is
    EndpointMaxConcurrency invocations at once, each at `invocation_per_s` (a request of
    IMAGES_PER_REQUEST images)."""
    delay_s = int(parameters["GatherWindowSeconds"]) + prices["transform_startup_seconds"]
    return round(int(parameters["EndpointMaxConcurrency"]) * invocation_per_s * float(delay_s))


def cheapest_cpu_type(comparison: Comparison) -> str:
    """The CPU instance type with the lowest dollars per million images (GPU types left out: the
    model container's image differs)."""
    return next(name for name in comparison.batch if not HOSTS[name].gpu)


def report(
    comparison: Comparison,
    usages: dict[str, Usage],
    prices: dict[str, Any],
    classes: list[dict[str, Any]],
    cpus: int,
    index_write_units: dict[str, int],
    invocation_per_s: float,
) -> None:
    cpu = read_cpu_flags()
    m, default_type = comparison.max_images_per_job, comparison.default_type
    default = comparison.batch[default_type]
    where = "infra/prices.json"
    print(f"\nprices: {prices['region']}, recorded {prices['recorded']} ({where}); {prices['note']}")
    print(f"measured here ({cpu.model}, {cpus} cores, {cpu.summary}): {usages['serverless'].images} images a mode")
    print(f"the model server here, {cpus} vCPUs, ", end="")
    cpu_classes.report(classes)
    measured = [row for row in classes if row["measured"]]
    here = measured[0]["class"]
    print(f"\nper image, by service (dollars per 1,000 images; transform at {default_type}'s rate):")
    for mode, usage in usages.items():
        items = run_cost(usage, prices, default.rate)
        print(f"  {mode:<10} " + "  ".join(f"{k} {v / usage.images * 1000:.4f}" for k, v in items.items()))
    for mode, usage in usages.items():
        share = index_write_units[mode] / max(1, usage.dynamodb_write_units)
        print(
            f"  {mode}: {usage.dynamodb_write_units / usage.images:.1f} DynamoDB write units an image, "
            f"{share:.0%} of them the indexes' (by breed, by problem, to review)"
        )

    print(f"\nper million images (batch: jobs of MaxImagesPerJob {m:,} images):")
    print(f"  serverless endpoint   ${comparison.serverless_per_image * MILLION:.2f} (its hosts as this CPU, {here})")
    one = {row["class"]: row["one_at_a_time"] for row in measured}
    spread = serverless_range(usages["serverless"], prices, default.rate, one, here)
    print(
        "  the endpoint's CPU is not documented: assumed this CPU's class; as each class measured: "
        + ", ".join(f"{name} ${per_image * MILLION:.2f}" for name, per_image in spread.items())
    )
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
    parameters = parameter_defaults(load_template())
    backlog = auto_batch_backlog(parameters, prices, invocation_per_s)
    print(
        f"auto mode: batch transform from a backlog of {backlog:,} images, what the endpoint classifies while a job "
        f"gathers and starts ({invocation_per_s:.1f} img/s an invocation of {IMAGES_PER_REQUEST} images here); "
        f"the template's AutoBatchThreshold: {int(parameters['AutoBatchThreshold']):,}"
    )
    cheapest = cheapest_cpu_type(comparison)
    agrees = "the same" if cheapest == default_type else f"not {default_type}: check the template's default"
    print(f"the cheapest CPU instance type by this table: {cheapest} ({agrees})")
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
        classes, invocation_per_s = measure_model_server(archive, workdir, photos, cpus, args.batch)
        runs = {
            mode: measure(archive, workdir, photos, mode, args.gather_seconds)
            for mode in ("serverless", "batch", "reclassify")
        }
    usages = {mode: usage for mode, (usage, _) in runs.items()}
    index_units = {mode: units for mode, (_, units) in runs.items()}
    prices = load_prices()
    priced = [name for name in prices["transform_instance_per_hour"] if name in HOSTS]
    measured = {row["class"]: row["batch"] for row in classes if row["measured"]}
    comparison = compare(usages, prices, parameter_defaults(load_template()), rates(measured, cpus, priced))
    report(comparison, usages, prices, classes, cpus, index_units, invocation_per_s)
    if args.json:
        results = {"usage": usages, "classes": classes, "invocation_per_s": invocation_per_s, "comparison": comparison}
        args.json.write_text(json.dumps(results, default=lambda o: asdict(o), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))  # with the Makefile's IMPORT_PATH (make cost)
