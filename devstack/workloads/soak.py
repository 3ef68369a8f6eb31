"""`make soak`: load and faults together, to show that nothing is lost.

    make soak                                   # 10,000 images, auto mode
    make soak SOAK_ARGS="--images 2000 --threads 4 --fault-every 20 --upload-seconds 120"
    make soak SOAK_ARGS="--mode batch --faults none"          # a flood alone: jobs and images per job
    make soak SOAK_ARGS="--full-scale --faults fail-job"        # MaxImagesPerJob images, as slow as AWS
    make soak SOAK_ARGS="--full-scale --faults lose-job-event"

Trains a small model, starts the local stack with the template's defaults (but AutoBatchThreshold:
LOCAL_AUTO_BATCH_THRESHOLD, so that a flood of thousands takes both paths here, as one of hundreds of
thousands does on AWS; --parameter sets any), and uploads photos from
several threads while a fault schedule runs, cycling through the faults of FAULTS (each at least
once, every --fault-every seconds while uploads last: 120 by default, so each kind recurs every 10
minutes, longer than any function's timeout). Then it waits until every image has a final
outcome (CLASSIFIED, REJECTED, or FAILED, whose message waits in a dead-letter queue, or which a
poisoned transform request failed in every attempt) and prints:
images, outcomes by status and mode, images without an outcome (must be 0), model calls beyond one
per image, failed transform jobs and the poisoned images' outcomes, dead-letter messages and wall
time. Exit 0 only if no image is left without an outcome.

fail-transform-request poisons the first image of the next transform request: every request that
holds it fails with a 500, so its job fails; its neighbours must be CLASSIFIED in a later job and
it alone FAILED with the job's reason. fail-job fails the next transform job before it answers
anything (its container never healthy): every image is queued again alone, built again and
collected. lose-job-event loses the next job's end event: the sweep must collect it.

--as-aws makes the local stack as slow as AWS where a time budget depends on it: every S3, SQS and
DynamoDB request of the functions takes AWS's published latency (devstack.aws.faults.LATENCY_S), and
each Lambda environment gets the share of a CPU its MemorySize buys (devstack.aws.cpu_share). The
report then gives each function's longest run against its timeout. --full-scale is a batch flood of
MaxImagesPerJob images (the template's default), --as-aws, each fault armed once, one second in; the job
builder's trigger waits until the flood is ingested (locally the ingest function is a few environments
on a few cores; on AWS many run at once), so the flood is one job.

Local settings, said in the output: both queues' visibility timeouts are shortened (the template's 12
and 30 minutes suit the functions' timeouts on AWS; here a failed batch comes back sooner), and Lambda's async
retries wait as on AWS (1 and 2 minutes), so the collector outlives a throttled table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.aws.faults import LATENCY_S, FaultProxy
from devstack.aws.host import free_ports, stop_on_signals
from devstack.aws.stack import Stack, StackOptions
from devstack.workloads.demo import ProgressBar
from devstack.workloads.quickmodel import train_small_model
from infra.limits import vcpus
from infra.predictions import Predictions
from infra.template import load_template, parameter_defaults

FAULTS = (
    "delay-s3",
    "throttle-dynamodb",
    "kill-lambda",
    "kill-model",
    "throttle-endpoint",
    "fail-transform-request",
    "fail-job",
    "lose-job-event",
)
DEFAULT_FAULTS = FAULTS[:6]  # the last two are the full-scale scenarios'
SWEEP_EVERY_S = 60.0  # locally: the sweep's schedule (10 minutes on AWS)
LATE_JOB_S = 300  # locally: LateJobSeconds (600 on AWS), at least the collector's timeout
# locally: AutoBatchThreshold (180,000 on AWS: a backlog the endpoint clears while a job starts), the
# threshold of the template before it counted the backlog, so the soak's flood still takes both paths
LOCAL_AUTO_BATCH_THRESHOLD = 100
AWS_ASYNC_RETRY_DELAYS_S = (60.0, 120.0)


@dataclass
class FaultLog:
    applied: list[tuple[float, str, str]] = field(default_factory=list)  # (seconds in, fault, detail)

    def add(self, started: float, fault: str, detail: str) -> None:
        self.applied.append((round(time.monotonic() - started, 1), fault, detail))

    def counts(self) -> Counter[str]:
        return Counter(fault for _, fault, _ in self.applied)


class FaultSchedule:
    """Apply the faults in turn, every `every_s`, until uploads are done and each fault has run once."""

    def __init__(
        self,
        stack: Stack,
        proxies: dict[str, FaultProxy],
        faults: tuple[str, ...],
        every_s: float,
        fault_s: float,
        s3_delay_s: float,
        once: bool = False,
    ) -> None:
        """`once`: each fault applied once, not again while uploads last."""
        self.stack, self.proxies, self.faults, self.once = stack, proxies, faults, once
        self.every_s, self.fault_s, self.s3_delay_s = every_s, fault_s, s3_delay_s
        self.log = FaultLog()
        self.uploads_done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-schedule", daemon=True)
        self.started = time.monotonic()

    def start(self) -> FaultSchedule:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        for n, fault in enumerate(itertools.cycle(self.faults)):
            done = n >= len(self.faults) and (self.once or self.uploads_done.is_set())
            if self._stop.wait(self.every_s) or done:
                return
            self.log.add(self.started, fault, self.apply(fault))

    def apply(self, fault: str) -> str:
        if fault == "kill-lambda":
            pid = self.stack.functions["IngestFunction"].kill_environment()
            return f"ingest environment pid {pid}" if pid else "no ingest environment running"
        if fault == "kill-model":
            jobs = self.stack.runner.running.copy().values() if self.stack.runner else []  # a copy: jobs come and go
            containers = [self.stack.endpoint_container, *(c for instances in jobs for c in instances)]
            pids = [pid for c in containers if c is not None and (pid := c.kill()) is not None]
            return f"model container pids {pids}"
        if fault == "fail-job":
            assert self.stack.runner is not None
            self.stack.runner.fail_next_job()
            return "the next transform job fails before it answers anything"
        if fault == "lose-job-event":
            assert self.stack.bus is not None
            self.stack.bus.lose_next("SageMaker Transform Job State Change")
            return "the next transform job's end event is lost"
        if fault == "fail-transform-request":
            assert self.stack.runner is not None
            self.stack.runner.poison_next_request()
            return "the next transform request's first image poisoned: every request holding it fails"
        if fault == "throttle-endpoint":
            assert self.stack.runtime is not None
            self.stack.runtime.throttle(self.fault_s)
            return f"endpoint throttled for {self.fault_s:g} s"
        if fault == "throttle-dynamodb":
            self.proxies["dynamodb"].throttle(self.fault_s)
            return f"DynamoDB throttled for {self.fault_s:g} s"
        self.proxies["s3"].delay(self.fault_s, self.s3_delay_s)
        return f"S3 requests delayed {self.s3_delay_s:g} s for {self.fault_s:g} s"


def photos(data_dir: Path, count: int) -> dict[str, bytes]:
    """`count` uploads, cycling through the generated dataset's photos under distinct keys."""
    pool = [p.read_bytes() for p in sorted(data_dir.rglob("*.jpg"))]
    return {f"incoming/soak/{n:05d}.jpg": pool[n % len(pool)] for n in range(count)}


def upload(stack: Stack, files: dict[str, bytes], threads: int, over_s: float) -> dict[str, str]:
    """Upload as fast as the threads go, or spread evenly over `over_s` seconds (in 20 steps)."""
    if over_s <= 0:
        return stack.upload(files, threads=threads)
    keys, steps, started = list(files), 20, time.monotonic()
    etags: dict[str, str] = {}
    for step in range(steps):
        chunk = keys[step * len(keys) // steps : (step + 1) * len(keys) // steps]
        etags.update(stack.upload({key: files[key] for key in chunk}, threads=threads))
        time.sleep(max(0.0, started + (step + 1) * over_s / steps - time.monotonic()))
    return etags


def wait_until_ingested(stack: Stack) -> None:
    """Until the upload queue is empty: every upload ingested (its shard queued, or its outcome recorded)."""
    assert stack.resources is not None
    while not all(n == 0 for n in queue_counts(stack, stack.resources.queue_url).values()):
        stack.check()
        time.sleep(2)


def queue_counts(stack: Stack, url: str) -> dict[str, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = stack.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return {name: int(attributes[name]) for name in names}


def dead_letters(stack: Stack) -> dict[str, int]:
    assert stack.resources is not None
    sqs = stack.client("sqs")
    queues = {
        "uploads": stack.resources.dead_letter_queue_url,
        "shards": stack.resources.job_dead_letter_queue_url,
        "job events": stack.resources.job_events_dead_letter_queue_url,
    }
    return {
        name: int(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
                "ApproximateNumberOfMessages"
            ]
        )
        for name, url in queues.items()
    }


def run(args: argparse.Namespace, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dogbreed-soak-") as tmp:
        model = train_small_model()
        (moto_port,) = free_ports(1)
        proxies = {
            service: FaultProxy(f"http://127.0.0.1:{moto_port}", LATENCY_S[service] if args.as_aws else 0.0).start()
            for service in ("dynamodb", "s3", "sqs")
        }
        parameters = {
            "InferenceMode": args.mode,
            "LateJobSeconds": str(LATE_JOB_S),
            "AutoBatchThreshold": str(LOCAL_AUTO_BATCH_THRESHOLD),
        }
        options = StackOptions(
            model_archive=model.archive,
            workdir=Path(tmp) / "stack",
            parameters={**parameters, **dict(p.split("=", 1) for p in args.parameter)},
            moto_port=moto_port,
            visibility_timeout_s=args.visibility_timeout,
            function_endpoints={f"AWS_ENDPOINT_URL_{s.upper()}": p.url for s, p in proxies.items()},
            async_retry_delays_s=AWS_ASYNC_RETRY_DELAYS_S,
            lambda_cpu_share=args.as_aws,
            schedule_every_s=SWEEP_EVERY_S,
        )
        try:
            with Stack(options) as stack:
                faults = tuple(f for f in args.faults.split(",") if f in FAULTS)
                schedule = FaultSchedule(
                    stack, proxies, faults, args.fault_every, args.fault_seconds, args.s3_delay, once=args.full_scale
                )
                schedule.start()
                builder = next(p for p in stack.pollers if p.trigger.function == "BuildJobsFunction")
                if args.full_scale:  # the whole flood in the builder's first batch, as AWS's many ingest functions do
                    builder.running.clear()
                uploads = upload(stack, photos(model.data_dir, args.images), args.threads, args.upload_seconds)
                schedule.uploads_done.set()
                if args.full_scale:
                    wait_until_ingested(stack)
                    builder.running.set()
                outcomes = stack.wait_for_outcomes(uploads, args.timeout, progress)
                schedule.stop()
                left = [key for key in uploads if key not in outcomes][:10]  # what the first images left say
                found = Predictions(stack.client("dynamodb"), stack.names.table).images(stack.names.bucket, left)
                waiting = {key: _summary(found.get(key)) for key in left}
                assert stack.runtime is not None and stack.runner is not None
                model_calls = sum(stack.runtime.images.values()) + stack.runner.records  # images sent to a model
                letters = dead_letters(stack)
                jobs = len(stack.runner.finished)
                failed_jobs = sum(
                    event["detail"]["TransformJobStatus"] != "Completed" for event in stack.runner.finished
                )
                job_images = sorted(stack.runner.job_records.values(), reverse=True)
                poisoned = {key: _summary(outcomes.get(key)) for key in stack.runner.poisoned}
                permissions = stack.permissions().summary()
                longest = {
                    name: {"longest_s": round(f.longest_ms / 1000, 1), "timeout_s": f.spec.timeout_s,
                           "memory_mb": f.spec.memory_mb, "cpu_share": f.cpu_share}
                    for name, f in stack.functions.items()
                }  # fmt: skip
                collector_log = stack.functions["CollectFunction"].log_path
                collector_said = collector_log.read_text(errors="replace") if collector_log.exists() else ""
                lost_events = len(stack.bus.lost) if stack.bus else 0
        finally:
            for proxy in proxies.values():
                proxy.stop()
    return {
        "images": len(uploads),
        "mode": args.mode,
        "threads": args.threads,
        "visibility_timeout_s": args.visibility_timeout,
        "outcomes": dict(Counter(f"{o['status']} {o['mode']}" for o in outcomes.values())),
        "without_outcome": len(uploads) - len(outcomes),
        "without_outcome_records": waiting,
        "model_calls": model_calls,
        "model_calls_beyond_one_per_image": model_calls - len(uploads),
        "transform_jobs": jobs,
        "transform_jobs_failed": failed_jobs,
        "poisoned_images": poisoned,
        "images_per_job": job_images,
        "dead_letters": letters,
        "faults": [{"at_s": at, "fault": fault, "detail": detail} for at, fault, detail in schedule.log.applied],
        "fault_counts": dict(schedule.log.counts()),
        "dynamodb_requests_refused": proxies["dynamodb"].faulted,
        "s3_requests_delayed": proxies["s3"].faulted,
        "permissions": permissions,
        "as_aws": args.as_aws,
        "functions": longest,
        "jobs_collected_by_the_sweep": collector_said.count("a job's end was not collected in time"),
        # a collection stops at its deadline between two chunks of a job's output, or between two groups of
        # a failed job's images queued again (collect.py logs each)
        "collections_out_of_time": collector_said.count("out of time: the next sweep collects the rest")
        + len(re.findall(r'"left_for_the_next_collection":\s*[1-9]', collector_said)),
        "job_events_lost": lost_events,
        "jobs_failed_unanswered": len(stack.runner.failed_unanswered),
        "wall_s": round(time.monotonic() - started, 1),
    }


def _summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the report shows of one image's record."""
    return None if record is None else {k: record.get(k) for k in ("status", "error_code", "reason")}


def report(result: dict[str, Any]) -> None:
    print(
        f"\nsoak: {result['images']:,} images, {result['mode']} mode, {result['threads']} upload threads; "
        f"queue visibility timeouts {result['visibility_timeout_s']} s (shortened locally; 720 and 1,800 s on AWS); "
        f"the sweep every {SWEEP_EVERY_S:.0f} s, LateJobSeconds {LATE_JOB_S} (10 minutes and 600 s on AWS)"
    )
    print("faults:")
    for fault in result["faults"]:
        print(f"  {fault['at_s']:>7} s  {fault['fault']:<18} {fault['detail']}")
    print(
        f"  DynamoDB requests refused: {result['dynamodb_requests_refused']:,}; "
        f"S3 requests delayed: {result['s3_requests_delayed']:,}"
    )
    print("outcomes:")
    for outcome, count in sorted(result["outcomes"].items()):
        print(f"  {count:>7,}  {outcome}")
    print(f"images without an outcome: {result['without_outcome']}")
    for key, record in result["without_outcome_records"].items():
        print(f"  {key}: {record}")
    print(
        f"model calls: {result['model_calls']:,} ({result['model_calls_beyond_one_per_image']:,} beyond one "
        f"per image); transform jobs: {result['transform_jobs']}, images per job: {result['images_per_job']}"
    )
    print(f"transform jobs failed: {result['transform_jobs_failed']}; poisoned images and their outcomes:")
    for key, outcome in result["poisoned_images"].items():
        print(f"  {key}: {outcome}")
    print(", ".join(f"dead-letter messages ({name}): {n}" for name, n in result["dead_letters"].items()))
    print("AWS calls by role (checked against template.yaml; devstack.aws.iam):")
    for role, actions in result["permissions"]["actions"].items():
        print(f"  {role}: " + (", ".join(f"{action} x{n:,}" for action, n in actions.items()) or "none"))
    print(f"calls no statement allows: {result['permissions']['denied'] or 'none'}")
    print(
        f"jobs failed before answering: {result['jobs_failed_unanswered']}; job events lost: "
        f"{result['job_events_lost']}; jobs the sweep collected: {result['jobs_collected_by_the_sweep']}; "
        f"collections that stopped at their deadline: {result['collections_out_of_time']}"
    )
    latency = ", ".join(f"{s} {v * 1000:.0f} ms" for s, v in LATENCY_S.items())
    pace = f"as AWS: {latency} a request" if result["as_aws"] else "unthrottled"
    print(f"each function's longest run against its timeout ({pace}):")
    for name, f in result["functions"].items():
        share = f"{vcpus(f['memory_mb']):.2f} of a CPU" if f["cpu_share"] else "the machine's CPUs"
        used = f["longest_s"] / f["timeout_s"]
        print(
            f"  {name:<18} {f['longest_s']:>6.1f} s of {f['timeout_s']:.0f} s ({used:.0%}), "
            f"{f['memory_mb']} MB: {share}"
        )
    print(f"wall time: {result['wall_s']:.0f} s")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--mode", choices=("auto", "serverless", "batch"), default="auto")
    parser.add_argument("--threads", type=int, default=4, help="upload threads")
    parser.add_argument("--upload-seconds", type=float, default=0, help="spread the uploads over this long")
    parser.add_argument("--faults", default=",".join(DEFAULT_FAULTS), help="comma-separated, of: " + ", ".join(FAULTS))
    parser.add_argument("--as-aws", action="store_true", help="AWS's request latencies and Lambda's CPU shares")
    parser.add_argument(
        "--full-scale",
        action="store_true",
        help="a batch flood of MaxImagesPerJob images, --as-aws, faults armed at once (pick them with --faults)",
    )
    parser.add_argument(
        "--fault-every",
        type=float,
        default=120,
        help="seconds between faults (so each kind recurs every 10 minutes: longer than any function's timeout)",
    )
    parser.add_argument("--fault-seconds", type=float, default=10, help="how long a throttle or delay lasts")
    parser.add_argument("--s3-delay", type=float, default=1.0, help="seconds each S3 request is held in a delay")
    parser.add_argument("--visibility-timeout", type=int, default=130, help="both queues', locally (seconds)")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="give up waiting for outcomes after this")
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE", help="a template parameter")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.full_scale:
        args.mode, args.as_aws, args.fault_every = "batch", True, 1.0
        if args.images == get_args_parser().get_default("images"):
            args.images = parameter_defaults(load_template())["MaxImagesPerJob"]
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    for noisy in ("werkzeug", "devstack"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    stop_on_signals()
    print(f"training a small model, starting the local stack, uploading {args.images:,} images ...", flush=True)
    result = run(args, ProgressBar())
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 1 if result["without_outcome"] else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))  # with the Makefile's IMPORT_PATH (make soak sets it)
