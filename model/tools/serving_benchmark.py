"""The handler through the real model server: TorchServe 0.12 with SageMaker's toolkit, under the
serving image's torch 2.6 (devstack.aws.container), for TorchServe worker counts x torch threads x
DECODE_THREADS, on as many vCPUs as the instance it stands for (the container pinned to the first N
cores of this machine).

    make serving-benchmark
    make serving-benchmark SERVING_ARGS="--cpus 1,2 --images 200"
    make serving-benchmark SERVING_ARGS="--per-request 1,4,8,16,32"   (the template's setting only)

Per setting, measured in the same run:
- start: the container's start to its first answer (every worker READY, then one image);
- one at a time: single-image requests sent one after another, as a trickle reaches the serverless
  endpoint (images/s, and the median latency);
- concurrent: single-image requests from --clients clients at once (the endpoint under load);
- batch: multi-record requests of --batch images, --clients in flight, as a transform job sends them.
With --per-request: the template's setting only, images/s and each request's median time for
requests of that many images (JSON Lines records; 1: the image as it is), one request in flight, as
the ingest function sends a Lambda batch's images to the serverless endpoint.
The default setting (no SAGEMAKER_MODEL_SERVER_WORKERS, no OMP_NUM_THREADS: TorchServe starts one
worker per vCPU and each worker's torch uses every core) is the baseline the others are compared
with, and the template's setting is measured last. The model is benchmark.py's (133 breeds at 224
px, kept in .devstack/benchmark), with the serving code of this checkout."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


# What a setting sets in the model's environment; the template's values of them are left out of the others.
TUNED = ("SAGEMAKER_MODEL_SERVER_WORKERS", "OMP_NUM_THREADS", "DECODE_THREADS")


@dataclass(frozen=True)
class Setting:
    workers: int | None  # SAGEMAKER_MODEL_SERVER_WORKERS; None: TorchServe's default, one per vCPU
    threads: int | None  # OMP_NUM_THREADS, each worker's torch threads; None: every core
    decode: int | None  # DECODE_THREADS; None: the handler's default (torch's threads)
    name: str = ""

    @classmethod
    def of_template(cls) -> Setting:
        """What template.yaml gives the endpoint's model."""
        from devstack.aws.provision import model_environment

        environment = model_environment()
        workers, threads, decode = (int(environment[k]) if k in environment else None for k in TUNED)
        return cls(workers, threads, decode, "template")

    @property
    def label(self) -> str:
        values = " x ".join("-" if v is None else str(v) for v in (self.workers, self.threads, self.decode))
        if self.name:
            return f"{self.name} ({values})"
        return "defaults" if values == "- x - x -" else values

    def environment(self) -> dict[str, str]:
        """The model's environment in template.yaml, with this setting's values of TUNED."""
        from devstack.aws.provision import model_environment

        environment = {k: v for k, v in model_environment().items() if k not in TUNED}
        values = dict(zip(TUNED, (self.workers, self.threads, self.decode), strict=True))
        return {**environment, **{name: str(value) for name, value in values.items() if value is not None}}


def settings_for(cpus: int) -> list[Setting]:
    """The defaults, then every split of `cpus` between workers and threads, each decoding in one
    thread or in as many as torch's."""
    found = [Setting(None, None, None)]
    for workers in range(1, cpus + 1):
        threads = cpus // workers
        for decode in sorted({1, threads}):
            found.append(Setting(workers, threads, decode))
    return found


def serving_model(cache: Path) -> tuple[Path, list[bytes]]:
    """benchmark.py's trained model with this checkout's serving code, and photo-sized JPEGs."""
    from benchmark_inputs import make_jpegs, train_model

    trained, _ = train_model(cache)
    return serving_copy(trained), make_jpegs(64, (500, 375))


def serving_copy(trained: Path) -> Path:
    """A copy of a trained model directory with this checkout's serving code in its code/, as
    train.py would write it now (remove its parent when done)."""
    import train

    model_dir = Path(tempfile.mkdtemp(prefix="serving-benchmark-")) / "model"
    shutil.copytree(trained, model_dir)
    for name in train.SERVING_MODULES:
        shutil.copy2(train._module_file(name), model_dir / "code" / f"{name}.py")
    return model_dir


def rate(send: Callable[[bytes], Any], bodies: list[bytes], images_per_body: int, clients: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, bodies))
    return len(bodies) * images_per_body / (time.perf_counter() - started)


def measure(
    model_dir: Path,
    jpegs: list[bytes],
    setting: Setting,
    cpus: int,
    images: int,
    clients: int,
    batch_size: int,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One setting's figures (see the module's docstring), from a container pinned to `cpus` cores,
    `extra` added to the model's environment (cpu_classes.py: a CPU class's caps)."""
    import answers
    from devstack.aws.container import ModelContainer

    environment = {**setting.environment(), **(extra or {})}
    log = Path(tempfile.mkdtemp(prefix="serving-benchmark-")) / "container.log"
    started = time.perf_counter()
    container = ModelContainer(model_dir, environment, log, cpus=cpus).start()
    try:

        def classify(body: bytes) -> None:
            response = container.invoke(body, "image/jpeg", "application/json")
            if response.status != 200:
                raise RuntimeError(f"the container answered {response.status}: {response.body[:200]!r}")

        classify(jpegs[0])
        start_s = time.perf_counter() - started
        singles = [jpegs[n % len(jpegs)] for n in range(images)]
        latencies = []
        for body in singles[: images // 2]:
            sent = time.perf_counter()
            classify(body)
            latencies.append(time.perf_counter() - sent)
        one_at_a_time = rate(classify, singles, 1, 1)
        concurrent = rate(classify, singles, 1, clients)
        records = [answers.dumps_record(f"incoming/{n}.jpg", body) for n, body in enumerate(singles)]
        batches = [b"\n".join(records[n : n + batch_size]) for n in range(0, len(records), batch_size)]

        def transform(body: bytes) -> None:
            response = container.invoke(body, answers.JSON_LINES, answers.JSON_LINES)
            if response.status != 200:
                raise RuntimeError(f"the container answered {response.status}: {response.body[:200]!r}")

        transform(batches[0])
        batch = rate(transform, batches, batch_size, clients)
        workers = len(container.workers())
    finally:
        container.stop()
    return {
        "cpus": cpus,
        "setting": setting.label,
        "workers": workers,
        "start_s": start_s,
        "latency_ms": statistics.median(latencies) * 1000,
        "one_at_a_time": one_at_a_time,
        "concurrent": concurrent,
        "batch": batch,
    }


def requests_of(bodies: list[bytes], size: int) -> list[tuple[bytes, str, str]]:
    """(body, content type, accept) of requests carrying `size` images each, as the ingest function
    sends them: 1, the image as it is; more, JSON Lines records."""
    import answers

    if size == 1:
        return [(body, "image/jpeg", "application/json") for body in bodies]
    records = [answers.dumps_record(f"incoming/{n}.jpg", body) for n, body in enumerate(bodies)]
    return [(b"\n".join(records[n : n + size]), answers.JSON_LINES, answers.JSON_LINES)
            for n in range(0, len(records), size)]  # fmt: skip


def per_request(model_dir: Path, jpegs: list[bytes], cpus: int, images: int, sizes: list[int]) -> list[dict[str, Any]]:
    """The template's setting: images/s and median request time for requests of each size, one in flight."""
    from devstack.aws.container import ModelContainer

    log = Path(tempfile.mkdtemp(prefix="serving-benchmark-")) / "container.log"
    container = ModelContainer(model_dir, Setting.of_template().environment(), log, cpus=cpus).start()
    rows = []
    try:
        for size in sizes:
            requests = requests_of([jpegs[n % len(jpegs)] for n in range(images)], size)
            container.invoke(*requests[0])  # warm
            times = []
            started = time.perf_counter()
            for request in requests:
                sent = time.perf_counter()
                response = container.invoke(*request)
                if response.status != 200:
                    raise RuntimeError(f"the container answered {response.status}: {response.body[:200]!r}")
                times.append(time.perf_counter() - sent)
            elapsed = time.perf_counter() - started
            rows.append({"cpus": cpus, "images_per_request": size, "images_per_s": images / elapsed,
                         "request_ms": statistics.median(times) * 1000})  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        container.stop()
    return rows


def report(rows: list[dict[str, Any]], cpu: dict[str, str]) -> None:
    print(f"\nCPU: {cpu['model_name']} ({cpu['flags']}); images 500x375 JPEG, ResNet-18 at 224 px, int8 default")
    print("vCPUs | workers x threads x decode | start to 1st answer | 1 at a time (median) | concurrent | batch")
    print("---|---|---|---|---|---")
    for row in rows:
        base = next(r for r in rows if r["cpus"] == row["cpus"] and r["setting"] == "defaults")
        label = row["setting"] if row["setting"] != "defaults" else f"defaults ({row['workers']} workers, all cores)"
        print(
            f"{row['cpus']} | {label} | {row['start_s']:.1f} s | {row['one_at_a_time']:.1f}/s "
            f"({row['latency_ms']:.0f} ms) | {row['concurrent']:.1f}/s ({row['concurrent'] / base['concurrent']:.2f}x) "
            f"| {row['batch']:.1f}/s ({row['batch'] / base['batch']:.2f}x)"
        )


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    import os

    from benchmark_inputs import cpu_description

    model_dir, jpegs = serving_model(args.cache)
    cores = len(os.sched_getaffinity(0))
    if args.per_request:
        sizes = [int(size) for size in args.per_request.split(",")]
        rows = [row for cpus in [int(c) for c in args.cpus.split(",") if int(c) <= cores]
                for row in per_request(model_dir, jpegs, cpus, args.images, sizes)]  # fmt: skip
        shutil.rmtree(model_dir.parent, ignore_errors=True)
        cpu = cpu_description()["model_name"]
        print(f"\nCPU: {cpu}; images 500x375 JPEG; the template's setting, one request in flight")
        print("vCPUs | images per request | images/s | request (median) | vs 1 a request")
        print("---|---|---|---|---")
        for row in rows:
            base = next(r for r in rows if r["cpus"] == row["cpus"] and r["images_per_request"] == sizes[0])
            print(f"{row['cpus']} | {row['images_per_request']} | {row['images_per_s']:.1f} | "
                  f"{row['request_ms']:.1f} ms | {row['images_per_s'] / base['images_per_s']:.2f}x")  # fmt: skip
        return rows
    rows = []
    for cpus in [int(c) for c in args.cpus.split(",") if int(c) <= cores]:
        for setting in [*settings_for(cpus), Setting.of_template()]:
            rows.append(measure(model_dir, jpegs, setting, cpus, args.images, args.clients, args.batch))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    shutil.rmtree(model_dir.parent, ignore_errors=True)
    report(rows, cpu_description())
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cpus", default="1,2", help="vCPU counts to stand for, comma-separated (at most this machine's)"
    )
    parser.add_argument("--images", type=int, default=120, help="images per measurement")
    parser.add_argument("--clients", type=int, default=4, help="requests in flight when measuring concurrently")
    parser.add_argument("--batch", type=int, default=16, help="images per multi-record request")
    parser.add_argument("--per-request", help="request sizes, e.g. 1,4,8,16,32: the template's setting only")
    parser.add_argument("--cache", type=Path, default=REPO / ".devstack" / "benchmark", help="where the model is kept")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    results = main(arguments)
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=1))
