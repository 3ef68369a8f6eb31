"""What orchestration costs: N images through the local stack in each mode, beside the raw throughput
of the same endpoint measured in the same run.

    python -m devstack.workloads.pipeline_benchmark --images 500        (make pipeline-benchmark)

For each mode a fresh stack is started; the images are uploaded at once (8 uploaders), and the run
ends when every image has its record. Throughput is images per second from the first upload to the
last record written; latency is each record's own latency_ms (S3 event time to record). The raw
figure is InvokeEndpoint on the local runtime from EndpointMaxConcurrency threads, with no S3,
queue, Lambda or DynamoDB in the way, one image a call and as many as the ingest function puts in
one (IMAGES_PER_REQUEST); the ratio pipeline/raw (one a call) is what the orchestration keeps. Beside
it, the same images as one transform job started directly (shards of 100, as the ingest function
writes them, already in S3; the pipeline's own CreateTransformJob request), timed from
CreateTransformJob to Completed: batched inference against one image per call on the same cores.

Batch mode gathers queued images for --gather-seconds (GatherWindowSeconds, 120 s on AWS) and each
job's instances take --startup-seconds to start (minutes on AWS; 0 here unless set): both are
printed with the figures, with the transform jobs started and their images per job.

Each pipeline run's stages say where its time went (`stages`): the upload (wall seconds), the
batching window (the most a batch waits), each function's invocations and billed seconds, the
endpoint's requests, images per request and seconds serving, the transform instances' seconds, and
the seconds moto took to answer DynamoDB, S3 and SQS (devstack.aws.meter). All but the upload are
busy seconds summed over whatever ran at once: on a machine of N cores they compete for N x the
run's wall seconds."""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from devstack.aws.host import stop_on_signals
from devstack.aws.provision import serverless_config
from devstack.aws.stack import Stack, StackOptions
from pipeline.logic.ingest import IMAGES_PER_REQUEST

RAW_TRANSFORM_JOB = "raw-transform-"  # the name prefix of the raw transform job, kept out of the pipeline's counts


def make_images(source: Path, count: int, size: tuple[int, int] = (500, 375)) -> list[bytes]:
    """`count` distinct photo-sized JPEGs made from the model's test photos (500x375, as dogImages' median)."""
    photos = sorted((source / "test").rglob("*.jpg"))
    out = []
    for n in range(count):
        image = Image.open(photos[n % len(photos)]).convert("RGB").resize(size)
        image.putpixel((n % size[0], n // size[0] % size[1]), (n % 256, 0, 0))  # distinct content
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def raw_endpoint(stack: Stack, photos: list[bytes], per_request: int = 1) -> dict[str, Any]:
    """InvokeEndpoint from MaxConcurrency threads, `per_request` images a call (JSON Lines records
    where several, as the ingest function sends them)."""
    from serving_benchmark import requests_of

    runtime = stack.client("sagemaker-runtime")
    endpoint = stack.parameters["EndpointName"]
    threads = serverless_config(stack.names, stack.parameters)["MaxConcurrency"]
    requests = requests_of(photos, per_request)

    def invoke(request: tuple[bytes, str, str]) -> float:
        body, content_type, accept = request
        started = time.perf_counter()
        runtime.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType=content_type, Accept=accept)
        return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        latencies = list(pool.map(invoke, requests))
    elapsed = time.perf_counter() - started
    mode = f"raw endpoint ({threads} threads, {per_request}/call)"
    return {"mode": mode, **figures(len(photos), elapsed, latencies)}


def raw_transform(stack: Stack, photos: list[bytes], timeout_s: float, shard_size: int = 100) -> dict[str, Any]:
    import answers
    from pipeline.adapters.sagemaker import transform_job_request

    s3, sagemaker = stack.client("s3", observer=True), stack.client("sagemaker", observer=True)
    bucket, prefix = stack.names.bucket, "bench/raw-transform"
    for start in range(0, len(photos), shard_size):
        lines = [
            answers.dumps_record(f"image-{n}", photos[n]) for n in range(start, min(start + shard_size, len(photos)))
        ]
        s3.put_object(Bucket=bucket, Key=f"{prefix}/shards/{start:05d}.jsonl", Body=b"\n".join(lines))
    name = f"{RAW_TRANSFORM_JOB}{int(time.time())}"
    request = transform_job_request(
        name,
        model_name=stack.parameters["ModelName"],  # the transform model (its own only when ModelDataUrl is set)
        source={"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/{prefix}/shards/"},
        output_uri=f"s3://{bucket}/{prefix}/output/",
        instance_type=stack.parameters["TransformInstanceType"],
        instance_count=int(stack.parameters["TransformInstanceCount"]),
        max_payload_mb=int(stack.parameters["TransformMaxPayloadMB"]),
    )
    started = time.perf_counter()
    sagemaker.create_transform_job(**request)
    assert stack.runner is not None
    deadline = time.monotonic() + timeout_s
    while True:  # moto records a new job as Completed: the runner's own record says when it ended
        status = sagemaker.describe_transform_job(TransformJobName=name)["TransformJobStatus"]
        if name in stack.runner.instance_seconds and status not in ("InProgress", "Stopping"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the raw transform job had not ended after {timeout_s:.0f} s")
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    if status != "Completed":
        raise SystemExit(f"the raw transform job ended {status}")
    answered: set[str] = set()
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/output/").get("Contents", []):
        by_id, _ = answers.loads_lines(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        answered |= by_id.keys()
    if len(answered) != len(photos):
        raise SystemExit(f"the raw transform job answered {len(answered)} of {len(photos)} images")
    return {"mode": "raw transform job (1 job)", **figures(len(photos), elapsed, [elapsed * 1000]), "jobs": 1}


def busy(stack: Stack) -> dict[str, float]:
    """What the stack's parts have done so far: each function's invocations and billed seconds, the
    endpoint's requests, images and time serving, and the transform instances' seconds."""
    assert stack.runtime is not None and stack.endpoint_container is not None and stack.runner is not None
    endpoint = stack.parameters["EndpointName"]
    found: dict[str, float] = {
        "endpoint_requests": stack.runtime.answered.get(endpoint, 0),
        "endpoint_images": stack.runtime.images.get(endpoint, 0),
        "endpoint_s": stack.endpoint_container.busy_s,
        "transform_instance_s": sum(stack.runner.instance_seconds.values()),
    }
    for name, function in stack.functions.items():
        found[f"{name}_invocations"] = function.invocations
        found[f"{name}_s"] = function.billed_ms / 1000
    return found


def stages(stack: Stack, before: dict[str, float], images: int, uploaded_s: float) -> dict[str, Any]:
    """Where a run's time went: the upload, the batching window, each function that ran (its
    invocations and billed seconds), the endpoint (requests, images per request, seconds serving),
    the transform instances, and the seconds moto took to answer each service, the polls apart."""
    assert stack.meter is not None
    after = busy(stack)
    done = {name: after[name] - before.get(name, 0) for name in after}
    functions = {
        name: {"invocations": int(done[f"{name}_invocations"]), "seconds": round(done[f"{name}_s"], 1)}
        for name in stack.functions
        if done[f"{name}_invocations"]
    }
    requests = int(done["endpoint_requests"])
    return {
        "upload_s": round(uploaded_s, 1),
        "window_s": int(stack.parameters["BatchingWindowSeconds"]),
        "functions": functions,
        "endpoint": {
            "requests": requests,
            "images_per_request": round(done["endpoint_images"] / requests, 1) if requests else 0,
            "seconds": round(done["endpoint_s"], 1),
        },
        "transform_instance_s": round(done["transform_instance_s"], 1),
        "moto_s": moto_seconds(stack.meter.seconds),
        "images": images,
    }


# Calls that wait for work by design (SQS long polls, the pipe's reads of the table's stream): their
# time is waiting, not work, and is reported apart.
POLLS = ("AmazonSQS.ReceiveMessage", "DynamoDBStreams_20120810.GetRecords")


def moto_seconds(seconds: Mapping[str, float]) -> dict[str, float]:
    """Seconds moto took to answer, by service ("dynamodb", "s3", "sqs", ...), the polls apart."""
    found: defaultdict[str, float] = defaultdict(float)
    for call, elapsed in seconds.items():
        service = call.split(":")[0] if ":" in call else call.split(".")[0].split("_")[0].removeprefix("Amazon")
        found["polls" if call in POLLS else service.lower()] += elapsed
    return {service: round(elapsed, 1) for service, elapsed in sorted(found.items(), key=lambda item: -item[1])}


def pipeline(stack: Stack, photos: list[bytes], mode: str, timeout_s: float) -> dict[str, Any]:
    keys = [f"incoming/bench/{mode}/{n:05d}.jpg" for n in range(len(photos))]
    assert stack.meter is not None
    stack.meter.reset()
    before = busy(stack)
    started = time.time()
    etags = stack.upload(dict(zip(keys, photos, strict=True)))
    uploaded = time.time() - started
    done = stack.wait_for_outcomes(etags, timeout_s)
    if len(done) < len(keys):  # reported, with what the stack did meanwhile, and the run goes on
        print(f"{mode}: only {len(done)}/{len(keys)} images had a record after {timeout_s:.0f} s", file=sys.stderr)
    last = max(
        datetime.fromisoformat(str(item["updated_at"]).replace("Z", "+00:00")).timestamp() for item in done.values()
    )
    statuses = {str(item["status"]) for item in done.values()}
    modes = {str(item["mode"]) for item in done.values()}
    result = figures(len(done), last - started, [float(item["latency_ms"]) for item in done.values()])
    runs = dict(stack.runner.job_records) if stack.runner else {}
    jobs = {name: records for name, records in runs.items() if not name.startswith(RAW_TRANSFORM_JOB)}
    return {
        "mode": f"pipeline, {mode}" + ("" if len(done) == len(keys) else f" ({len(keys) - len(done)} missing)"),
        **result,
        "upload_s": round(uploaded, 2),
        "statuses": sorted(statuses),
        "modes": sorted(modes),
        "jobs": len(jobs),
        "images_per_job": round(statistics.mean(jobs.values())) if jobs else 0,
        "stages": stages(stack, before, len(keys), uploaded),
    }


def stage_line(result: dict[str, Any]) -> str:
    """A pipeline run's stages in a line: wall seconds for the upload, busy seconds (summed over
    whatever ran at once) for the rest."""
    stage = result["stages"]
    parts = [f"upload {stage['upload_s']} s (wall)", f"window {stage['window_s']} s a batch at most"]
    for name, function in stage["functions"].items():
        parts.append(f"{name} {function['invocations']} invocations {function['seconds']} s")
    endpoint = stage["endpoint"]
    if endpoint["requests"]:
        size = endpoint["images_per_request"]
        parts.append(f"endpoint {endpoint['requests']} requests of {size} images {endpoint['seconds']} s")
    if stage["transform_instance_s"]:
        parts.append(f"transform instances {stage['transform_instance_s']} s")
    answered = ", ".join(f"{service} {seconds} s" for service, seconds in stage["moto_s"].items() if service != "polls")
    parts.append(f"moto answering {answered} (and {stage['moto_s'].get('polls', 0)} s in long polls)")
    return f"{result['mode']} of {result['seconds']} s: " + "; ".join(parts)


def figures(count: int, elapsed_s: float, latencies_ms: list[float]) -> dict[str, Any]:
    return {
        "images": count,
        "seconds": round(elapsed_s, 2),
        "images_per_s": round(count / elapsed_s, 1),
        "p50_ms": round(statistics.median(latencies_ms)),
        "p95_ms": round(percentile(latencies_ms, 0.95)),
    }


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--modes", nargs="+", choices=["serverless", "batch"], default=["serverless", "batch"])
    parser.add_argument("--model", type=Path, help="a model.tar.gz (default: train a small one)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for each mode's records")
    parser.add_argument("--gather-seconds", type=int, default=5, help="GatherWindowSeconds of the local stack")
    parser.add_argument("--startup-seconds", type=float, default=0.0, help="simulated transform instance start-up")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def model_and_photos(model: Path | None, workdir: Path, count: int) -> tuple[Path, list[bytes]]:
    """The model.tar.gz to serve (a given one, or one trained at 224 px for one epoch: compute as in
    production, accuracy irrelevant) and `count` distinct photos."""
    import dataset_tool

    from devstack.workloads.quickmodel import train_small_model

    if model:
        return model, make_images(dataset_tool.synthesize(workdir / "photos", per_split=(1, 1, 10)), count)
    trained = train_small_model(image_size=224, epochs=1)
    return trained.archive, make_images(trained.data_dir, count)


def main(args: argparse.Namespace) -> int:
    stop_on_signals()
    with tempfile.TemporaryDirectory(prefix="dogbreed-bench-") as tmp:
        workdir = Path(tmp)
        archive, photos = model_and_photos(args.model, workdir, args.images)
        results: list[dict[str, Any]] = []
        for mode in args.modes:
            parameters = {"InferenceMode": mode, "GatherWindowSeconds": str(args.gather_seconds)}
            options = StackOptions(archive, workdir / mode, parameters, transform_startup_s=args.startup_seconds)
            with Stack(options) as stack:
                if not results:  # the raw figures, on the first stack, before any pipeline traffic
                    results.append(raw_endpoint(stack, photos))
                    results.append(raw_endpoint(stack, photos, IMAGES_PER_REQUEST))
                    results.append(raw_transform(stack, photos, args.timeout))
                results.append(pipeline(stack, photos, mode, args.timeout))
    raw = results[0]["images_per_s"]
    columns = ("images", 6), ("seconds", 8), ("img/s", 7), ("p50 ms", 7), ("p95 ms", 7), ("vs raw", 7), ("jobs", 5)
    print(f"\n{'':<32} " + " ".join(f"{name:>{width}}" for name, width in columns) + f" {'img/job':>8}")
    for r in results:
        print(
            f"{r['mode']:<32} {r['images']:>6} {r['seconds']:>8} {r['images_per_s']:>7} {r['p50_ms']:>7} "
            f"{r['p95_ms']:>7} {r['images_per_s'] / raw:>7.2f} {r.get('jobs', ''):>5} {r.get('images_per_job', ''):>8}"
        )
    print(f"batch: GatherWindowSeconds {args.gather_seconds}, transform instance start-up {args.startup_seconds:g} s")
    for r in results:
        if "stages" in r:
            print(stage_line(r))
    print(
        "latency: raw endpoint = one InvokeEndpoint call; raw transform job = CreateTransformJob to Completed; "
        "pipeline = S3 event time to DynamoDB record (latency_ms)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))  # with the Makefile's IMPORT_PATH (make pipeline-benchmark)
