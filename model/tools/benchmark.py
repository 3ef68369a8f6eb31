"""Serving benchmark: our inference handler, fp32 and int8, against a course-style baseline, in one run;
on a machine with a GPU, our handler in fp32 and fp16 on CUDA.

    make benchmark
    make benchmark BENCHMARK_ARGS="--images 300 --cold-starts 5 --sizes 500x375,1600x1200"
    make benchmark BENCHMARK_ARGS="--model path/to/model_dir --held-out path/to/dogImages/test"

It prints the CPU's model name and the flags that choose the int8 network (networks.py). First it
trains the model it serves: train.py on generated images in the dogImages layout (133 breeds, 224
px, a few epochs from random weights: a model whose answers are not trivially confident; 6 held-out
photos per breed, 798 in all), which also writes the int8 networks, calibrated on the validation
split. Or give a trained model directory and held-out images (--model, --held-out).

Three handlers serve those weights on the same JPEGs, one image per call (as a serverless endpoint
does): the baseline, written the way the course scripts serve (torchvision model, eager fp32 under
no_grad, the full image decoded, transforms.Resize(256) + CenterCrop(224)); ours with
MODEL_PRECISION=fp32; ours with MODEL_PRECISION=int8 (the default: the fastest network safe on this
CPU, which the report names). Measured in the same run:
- warm throughput (images/s, best of --rounds) and its split into decode + preprocess and
  forward + answer, per image;
- top-1 agreement with fp32 of every int8 network that is safe on this CPU, on the held-out
  images, through the handler's own preprocessing, with the fp32 answers' top-1 margins;
- cold start (process start to first prediction, median of --cold-starts, alternating) and the
  serving process's peak RSS after 20 more predictions; beside them, a process that only imports
  torch: the floor under every handler's cold start.
Serverless endpoints are CPU-only, so these are the numbers users pay for.

Then our handler as batch transform jobs call it: multi-record JSON Lines requests of 1, 8 and 32
images (--batch-sizes), each request decoded, preprocessed, classified in one forward pass and
answered a line per image, with the default precision. Last, our handler as SageMaker serves it: in a
model container (TorchServe and the toolkit under torch 2.6, devstack/aws/container.py) with the
template's workers and threads, its start to first answer and its images/s one at a time, four in
flight, and in 16-image requests (make serving-benchmark compares worker and thread settings); its
images/s by images per request (--per-request: 1, 4, 8, 16, 32, one request in flight, as the ingest
function sends a Lambda batch to the serverless endpoint); and the same three figures for each CPU
class AWS rents that this CPU can stand for (AMX, AVX-512 VNNI, AVX-512, AVX2: cpu_classes.py caps
the kernels' instruction set and checks with ONEDNN_VERBOSE which kernels ran).

On a machine with a GPU (a GPU transform instance's work), after the same training: fp16 against
fp32 on the held-out images; our handler's throughput (decode + preprocess + forward + answer) on
multi-record requests of 1 to 64 images in both; the split between the CPU's share (decode +
preprocess, DECODE_THREADS at a time) and the GPU's; and the forward pass alone.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cpu_classes
from benchmark_inputs import (
    CACHE,
    CLASSES,
    EPOCHS,
    HELD_OUT_PER_BREED,
    IMAGE_SIZE,
    cpu_description,
    held_out_images,
    make_jpegs,
    train_model,
)

# What a serving container has on its import path: the artifact's code/, that is model/serving/.


# -- the baseline handler, as the course scripts write it ---------------------------------------


def baseline_model_fn(model_dir: str) -> Any:
    import torch
    from torchvision import models

    classes = json.loads((Path(model_dir) / "class_index.json").read_text())
    model = models.resnet18(weights=None)
    model.fc = torch.nn.Linear(512, len(classes))
    model.load_state_dict(torch.load(Path(model_dir) / "model.pth", map_location="cpu", weights_only=True))
    model.eval()
    return model, classes


def baseline_input_fn(body: bytes, content_type: str) -> Any:
    from PIL import Image
    from torchvision import transforms

    image = Image.open(io.BytesIO(body)).convert("RGB")
    transform = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    return transform(image).unsqueeze(0)


def baseline_predict_fn(data: Any, loaded: Any) -> dict[str, Any]:
    import torch

    model, classes = loaded
    with torch.no_grad():
        probabilities = torch.softmax(model(data), dim=1)[0]
    index = int(probabilities.argmax())
    return {"predicted_label": classes[str(index)]["label"], "class_name": classes[str(index)]["name"]}


def baseline_output_fn(prediction: dict[str, Any], accept: str) -> str:
    return json.dumps(prediction)


# -- the handlers behind one interface -----------------------------------------------------------

KINDS = ("baseline", "fp32", "int8")  # the two last are ours, by MODEL_PRECISION
IMPORT_TORCH = "import-torch"  # a cold start that only imports torch
GPU_KINDS = ("fp32", "fp16")  # ours on CUDA
Handler = Callable[[bytes], str]


@dataclass
class Loaded:
    """A handler split in its two stages, to time them apart."""

    prepare: Callable[[bytes], Any]  # decode + preprocess
    answer: Callable[[Any], str]  # forward + answer

    def __call__(self, body: bytes) -> str:
        return self.answer(self.prepare(body))


def load_ours(model_dir: Path, precision: str | None = None) -> Any:
    """Our handler's model_fn with MODEL_PRECISION set to `precision` (None: the default)."""
    import inference

    saved = os.environ.pop("MODEL_PRECISION", None)
    if precision:
        os.environ["MODEL_PRECISION"] = precision
    try:
        return inference.model_fn(str(model_dir))
    finally:
        os.environ.pop("MODEL_PRECISION", None)
        if saved is not None:
            os.environ["MODEL_PRECISION"] = saved


def load(kind: str, model_dir: Path) -> Loaded:
    if kind == "baseline":
        loaded = baseline_model_fn(str(model_dir))
        return Loaded(
            lambda body: baseline_input_fn(body, "image/jpeg"),
            lambda data: baseline_output_fn(baseline_predict_fn(data, loaded), "application/json"),
        )
    import inference

    model = load_ours(model_dir, kind)
    return Loaded(
        lambda body: inference.input_fn(body, "image/jpeg"),
        lambda request: inference.output_fn(inference.predict_fn(request, model), "application/json")[0],
    )


def throughput(handler: Handler, requests: list[bytes], rounds: int, images: int | None = None) -> float:
    """Best images/s over `rounds` passes (after a warm-up); `images` when requests carry several."""
    for body in requests[:5]:
        handler(body)
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for body in requests:
            handler(body)
        best = max(best, (images or len(requests)) / (time.perf_counter() - started))
    return best


def stage_ms(handler: Loaded, images: list[bytes], rounds: int) -> dict[str, float]:
    """Milliseconds per image in decode + preprocess and in forward + answer (best of `rounds`)."""
    prepared = [handler.prepare(body) for body in images]  # warm-up
    decode = forward = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        prepared = [handler.prepare(body) for body in images]
        decode = min(decode, time.perf_counter() - started)
        started = time.perf_counter()
        for data in prepared:
            handler.answer(data)
        forward = min(forward, time.perf_counter() - started)
    return {"decode_preprocess_ms": 1000 * decode / len(images), "forward_answer_ms": 1000 * forward / len(images)}


def stage_handlers(kind: str, model_dir: Path) -> Loaded:
    """Each handler cut where its work splits. Ours decodes in predict_fn (its input_fn only keeps
    the bytes), so it is cut at _prepare (checks, decode, preprocess) and _classify + the answer;
    the baseline between its input_fn and predict_fn."""
    if kind == "baseline":
        return load(kind, model_dir)
    import inference

    import answers

    model = load_ours(model_dir, kind)
    return Loaded(
        lambda body: inference._prepare(inference.Request(body, "image/jpeg"), model),
        lambda tensor: answers.dumps(inference._classify(tensor, model)[0]),
    )


def agreement(fp32: Any, held_out: list[bytes], fast: dict[str, Any]) -> dict[str, dict[str, float | int]]:
    """Each of the `fast` handler models (by name) against the `fp32` one on the same held-out images,
    through the handler's own preprocessing."""
    import inference
    import quantization
    import torch

    models = {"fp32": fp32, **fast}
    logits: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    with torch.inference_mode():
        for body in held_out:
            tensor = inference._prepare(inference.Request(body, "image/jpeg"), fp32)
            for name, model in models.items():
                logits[name].append(model.network(inference.network_inputs(tensor, model)).float().cpu())
    reference = torch.cat(logits["fp32"])
    return {name: quantization.agreement(reference, torch.cat(logits[name])).as_dict() for name in fast}


def int8_networks_safe_here(fp32: Any, model_dir: Path) -> dict[str, Any]:
    """The handler model `fp32` with each int8 network of the artifact that is safe on this CPU in
    its place, by precision: what MODEL_PRECISION=int8 serves here, and any slower safe one."""
    import dataclasses

    import networks
    import quantization

    cpu = networks.read_cpu_flags()
    return {
        network.precision: dataclasses.replace(
            fp32, network=quantization.load(model_dir / network.file), precision=network.precision
        )
        for network in networks.INT8_NETWORKS
        if (model_dir / network.file).exists() and cpu.safe(network) is None
    }


def fast_path(model_dir: Path) -> str:
    """What MODEL_PRECISION=int8 serves on this CPU: the handler's own choice, no network loaded."""
    import inference
    import torch

    saved = os.environ.pop("MODEL_PRECISION", None)
    try:
        return inference.serving_choice(model_dir, torch.device("cpu")).precision
    finally:
        if saved is not None:
            os.environ["MODEL_PRECISION"] = saved


def multi_record_requests(images: list[bytes], size: int) -> list[bytes]:
    """JSON Lines requests of `size` images each, as the pipeline packs a transform job's input."""
    import answers

    return [
        b"\n".join(
            answers.dumps_record(f"image-{start + n}", body) for n, body in enumerate(images[start : start + size])
        )
        for start in range(0, len(images), size)
    ]


def batched_throughput(
    model_dir: Path, images: list[bytes], batch_sizes: list[int], rounds: int, precision: str | None = None
) -> dict[int, float]:
    """Best images/s of our handler (`precision`, or the default) on multi-record requests of each
    size: decode, preprocess, one forward pass per request, one answer line per image."""
    import inference

    import answers

    model = load_ours(model_dir, precision)
    rates: dict[int, float] = {}
    for size in batch_sizes:
        model.batch_size = size

        def handle(body: bytes) -> Any:
            answer = inference.predict_fn(inference.input_fn(body, answers.JSON_LINES), model)
            return inference.output_fn(answer, answers.JSON_LINES)

        rates[size] = throughput(handle, multi_record_requests(images, size), rounds, images=len(images))
    return rates


def batched_stage_ms(model_dir: Path, precision: str, images: list[bytes], size: int, rounds: int) -> dict[str, float]:
    """Per image, in multi-record requests of `size`: decode + preprocess (the decode threads) and
    forward + answer (one forward pass per request), best of `rounds`."""
    import inference
    import torch

    model = load_ours(model_dir, precision)
    chunks = [images[start : start + size] for start in range(0, len(images), size)]

    def prepare(chunk: list[bytes]) -> torch.Tensor:
        requests = [inference.Request(body, "image/jpeg") for body in chunk]
        return torch.cat(list(model.decoder.map(lambda request: inference._prepare(request, model), requests)))

    decode = forward = float("inf")
    for _ in range(rounds + 1):  # the first is a warm-up
        started = time.perf_counter()
        batches = [prepare(chunk) for chunk in chunks]
        decode = min(decode, time.perf_counter() - started)
        started = time.perf_counter()
        for batch in batches:
            inference._classify(batch, model)
        forward = min(forward, time.perf_counter() - started)
    return {"decode_preprocess_ms": 1000 * decode / len(images), "forward_answer_ms": 1000 * forward / len(images)}


def forward_throughput(model_dir: Path, precision: str, batch_sizes: list[int]) -> dict[int, float]:
    """Images/s of the network alone on batches already on its device (CUDA-synchronised)."""
    import torch

    model = load_ours(model_dir, precision)
    rates: dict[int, float] = {}
    with torch.inference_mode():
        for size in batch_sizes:
            shape = (size, 3, model.image_size, model.image_size)
            batch = torch.randn(shape, device=model.device, dtype=model.input_dtype)
            batch = batch.contiguous(memory_format=torch.channels_last)
            repeats = max(10, 2048 // size)
            for _ in range(5):
                model.network(batch)
            torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(repeats):
                model.network(batch)
            torch.cuda.synchronize()
            rates[size] = size * repeats / (time.perf_counter() - started)
    return rates


def cold_start(kind: str, model_dir: Path, image: Path) -> tuple[float, float]:
    """Seconds from starting a fresh Python process to its first prediction, and the process's
    peak RSS (MiB) after 20 more."""
    env = {**os.environ, "PYTHONPATH": str(model_dir / "code")}  # the artifact's code/, as the container has it
    started = time.time()
    result = subprocess.run(
        [sys.executable, __file__, "--first-prediction", kind, str(model_dir), str(image)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    report = json.loads(result.stdout.splitlines()[-1])
    return report["first_prediction_at"] - started, report["peak_rss_mib"]


def first_prediction(kind: str, model_dir: Path, image: Path) -> None:
    """The cold-start process: load, predict once (the time is stamped), then 20 more, then peak RSS
    (VmHWM: getrusage's ru_maxrss would keep the parent's high-water mark across fork and exec).
    Kind IMPORT_TORCH only imports torch: the floor under every handler's cold start."""
    if kind == IMPORT_TORCH:
        import torch  # noqa: F401

        done = time.time()
    else:
        handler = load(kind, model_dir)
        body = image.read_bytes()
        handler(body)
        done = time.time()
        for _ in range(20):
            handler(body)
    status = Path("/proc/self/status").read_text()
    peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    print(json.dumps({"first_prediction_at": done, "peak_rss_mib": round(peak_kib / 1024, 1)}))


# -- inputs ------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.model:
        model_dir, held_out = args.model, held_out_images(args.held_out)
    else:
        model_dir, held_out = train_model(
            args.cache, args.classes, args.image_size, args.epochs, args.held_out_per_breed
        )
    if torch.cuda.is_available():
        return gpu_main(args, model_dir, held_out)
    results: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_description(),
        "fast_path": fast_path(model_dir),
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = load_ours(model_dir, "fp32")
        results["agreement"] = agreement(fp32, held_out, int8_networks_safe_here(fp32, model_dir))
        handlers = {kind: load(kind, model_dir) for kind in KINDS}
        for text in args.sizes.split(","):
            width, height = (int(v) for v in text.split("x"))
            images = make_jpegs(args.images, (width, height))
            rates = {kind: throughput(handler, images, args.rounds) for kind, handler in handlers.items()}
            stages = {kind: stage_ms(stage_handlers(kind, model_dir), images, args.rounds) for kind in KINDS}
            results["sizes"][text] = {
                "mean_jpeg_kb": round(statistics.mean(len(i) for i in images) / 1024, 1),
                **{f"{kind}_images_per_s": round(rate, 1) for kind, rate in rates.items()},
                **{f"{kind}_vs_baseline": round(rates[kind] / rates["baseline"], 2) for kind in KINDS[1:]},
                "int8_vs_fp32": round(rates["int8"] / rates["fp32"], 2),
                "stages_ms": {kind: {k: round(v, 2) for k, v in stage.items()} for kind, stage in stages.items()},
            }
        images = make_jpegs(args.images, (500, 375))
        sizes = [int(v) for v in args.batch_sizes.split(",")]
        batched = batched_throughput(model_dir, images, sizes, args.rounds)
        results["batched_500x375"] = {
            str(size): {"images_per_s": round(rate, 1), "vs_batch_1": round(rate / batched[sizes[0]], 2)}
            for size, rate in batched.items()
        }
        first = Path(tmp) / "first.jpg"
        first.write_bytes(make_jpegs(1, (500, 375))[0])
        cold: dict[str, list[tuple[float, float]]] = {kind: [] for kind in (*KINDS, IMPORT_TORCH)}
        for _ in range(args.cold_starts):  # alternate, so drift hits all alike
            for kind in cold:
                cold[kind].append(cold_start(kind, model_dir, first))
        medians = {kind: statistics.median(s for s, _ in runs) for kind, runs in cold.items()}
        results["cold_start_s"] = {kind: round(median, 2) for kind, median in medians.items()}
        results["cold_start_vs_baseline"] = {
            kind: round(medians[kind] / medians["baseline"], 2) for kind in (*KINDS[1:], IMPORT_TORCH)
        }
        results["peak_rss_mib"] = {kind: max(rss for _, rss in cold[kind]) for kind in KINDS}
    results.update(through_torchserve(model_dir, images, args.images, args.per_request))
    report(results)
    return results


def through_torchserve(model_dir: Path, images: list[bytes], count: int, per_request: str) -> dict[str, Any]:
    """Our handler as SageMaker serves it: in a model container (TorchServe and the toolkit, torch 2.6)
    with the template's settings, on every core of this machine (serving_benchmark.py measures others):
    as one setting, by images per request, and as each CPU class would run it (cpu_classes.py)."""
    import shutil

    import serving_benchmark

    setting = serving_benchmark.Setting.of_template()
    cpus = len(os.sched_getaffinity(0))
    served = serving_benchmark.serving_copy(model_dir)
    try:
        sizes = [int(size) for size in per_request.split(",")]
        return {
            "torchserve": serving_benchmark.measure(served, images, setting, cpus, count, 4, 16),
            "per_request": serving_benchmark.per_request(served, images, cpus, count, sizes),
            "cpu_classes": cpu_classes.measure(served, images, cpus, count, 16),
        }
    finally:
        shutil.rmtree(served.parent, ignore_errors=True)


def gpu_main(args: argparse.Namespace, model_dir: Path, held_out: list[bytes]) -> dict[str, Any]:
    """Our handler on CUDA in fp32 and fp16 (what MODEL_PRECISION=fp16 serves on a GPU transform instance)."""
    import torch

    images = make_jpegs(args.images, (500, 375))
    sizes = [int(v) for v in args.gpu_batch_sizes.split(",")]
    results: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(),
        "decode_threads": int(os.environ.get("DECODE_THREADS", torch.get_num_threads())),
        "agreement": agreement(load_ours(model_dir, "fp32"), held_out, {"fp16": load_ours(model_dir, "fp16")})["fp16"],
        "handler_images_per_s": {p: batched_throughput(model_dir, images, sizes, args.rounds, p) for p in GPU_KINDS},
        "stages_ms": {p: batched_stage_ms(model_dir, p, images, sizes[-1], args.rounds) for p in GPU_KINDS},
        "forward_images_per_s": {p: forward_throughput(model_dir, p, [*sizes, 256]) for p in GPU_KINDS},
    }
    gpu_report(results)
    return results


def stage_cells(stages: dict[str, dict[str, float]], digits: int) -> str:
    """'kind decode | forward (share of decode)' for each handler."""
    cells = []
    for kind, stage in stages.items():
        decode, forward = stage["decode_preprocess_ms"], stage["forward_answer_ms"]
        cells.append(f"{kind} {decode:.{digits}f} | {forward:.{digits}f} ({decode / (decode + forward):.0%})")
    return ";  ".join(cells)


def gpu_report(results: dict[str, Any]) -> None:
    print(f"torch {results['torch']} on {results['device']}, {results['decode_threads']} decode threads")
    print(agreement_line("fp16", results["agreement"]))
    rates = results["handler_images_per_s"]
    print("our handler, multi-record requests of 500x375 JPEGs (decode + preprocess + forward + answer), img/s:")
    print(f"{'images/request':>15} " + " ".join(f"{p:>10}" for p in GPU_KINDS))
    for size in rates["fp32"]:
        print(f"{size:>15} " + " ".join(f"{rates[p][size]:>10.1f}" for p in GPU_KINDS))
    size = list(rates["fp32"])[-1]
    stages = stage_cells(results["stages_ms"], digits=2)
    print(f"per image at {size} images/request, ms: decode + preprocess | forward + answer: {stages}")
    forward = results["forward_images_per_s"]
    print("the forward pass alone (batches already on the GPU), img/s:")
    for size in forward["fp32"]:
        print(f"{size:>15} " + " ".join(f"{forward[p][size]:>10.0f}" for p in GPU_KINDS))


def agreement_line(name: str, a: dict[str, float | int]) -> str:
    return (
        f"{name} vs fp32 on {a['images']} held-out images: top-1 agreement {a['top1_agreement']:.2%}, "
        f"mean |top-1 probability difference| {a['mean_abs_top1_probability_difference']:.5f}; "
        f"fp32 top-1 margin median {a['median_top1_margin']:.3f}, {a['low_margin_images']} images under 0.1; "
        f"widest margin among the images whose top-1 changed {a['largest_flipped_margin']:.4f}"
    )


def report(results: dict[str, Any]) -> None:
    cpu, fast = results["cpu"], results["fast_path"]
    print(f"CPU {cpu['model_name']}, flags: {cpu['flags']}; torch {results['torch']}, {results['threads']} threads")
    print(f"MODEL_PRECISION=int8 serves {fast} on this CPU (the int8 column); one image per call")
    header = f"{'image':>10} {'JPEG KB':>8} {'baseline img/s':>15} {'fp32 img/s':>11} {'int8 img/s':>11}"
    print(header + f" {'fp32/baseline':>14} {'int8/baseline':>14} {'int8/fp32':>10}")
    for size, row in results["sizes"].items():
        print(
            f"{size:>10} {row['mean_jpeg_kb']:>8} {row['baseline_images_per_s']:>15} {row['fp32_images_per_s']:>11} "
            f"{row['int8_images_per_s']:>11} {row['fp32_vs_baseline']:>13}x {row['int8_vs_baseline']:>13}x "
            f"{row['int8_vs_fp32']:>9}x"
        )
    print("per image, ms: decode + preprocess | forward + answer (share of decode + preprocess)")
    for size, row in results["sizes"].items():
        print(f"{size:>10}  " + stage_cells(row["stages_ms"], digits=1))
    if not results["agreement"]:
        print("no int8 network of this model is safe on this CPU: the int8 column served fp32")
    for name, a in results["agreement"].items():
        print(agreement_line(name, a) + (" (the int8 column)" if name == fast else ""))
    print(f"our handler ({fast}), multi-record requests (batch transform) of 500x375 JPEGs on the CPU:")
    for size, row in results["batched_500x375"].items():
        print(f"{size:>6} images/request {row['images_per_s']:>8} img/s {row['vs_batch_1']:>6}x batch 1")
    cold, ratio, rss = results["cold_start_s"], results["cold_start_vs_baseline"], results["peak_rss_mib"]
    print(
        f"cold start (process start to first prediction, median): baseline {cold['baseline']} s, "
        f"fp32 {cold['fp32']} s ({ratio['fp32']}x baseline), int8 {cold['int8']} s ({ratio['int8']}x baseline); "
        f"import torch alone {cold[IMPORT_TORCH]} s ({ratio[IMPORT_TORCH]}x baseline), the floor of every handler"
    )
    print("peak RSS of a serving process, MiB: " + ", ".join(f"{kind} {rss[kind]}" for kind in KINDS))
    served = results["torchserve"]
    print(
        f"through TorchServe and the toolkit (torch 2.6, {served['setting']}, {served['workers']} workers on "
        f"{served['cpus']} vCPUs): start to first answer {served['start_s']:.1f} s; one at a time "
        f"{served['one_at_a_time']:.1f} img/s ({served['latency_ms']:.0f} ms), 4 in flight {served['concurrent']:.1f} "
        f"img/s, 16-image requests {served['batch']:.1f} img/s"
    )
    print("by images per request (JSON Lines records; 1: the image as it is), one request in flight:")
    base = results["per_request"][0]
    for row in results["per_request"]:
        print(
            f"{row['images_per_request']:>6} images/request {row['images_per_s']:>8.1f} img/s "
            f"{row['request_ms']:>8.1f} ms/request {row['images_per_s'] / base['images_per_s']:>6.2f}x"
        )
    cpu_classes.report(results["cpu_classes"])


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100, help="images per size")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per handler (best counts)")
    parser.add_argument("--sizes", default="500x375,1600x1200", help="image sizes, WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,8,32", help="images per multi-record request, comma-separated")
    parser.add_argument("--gpu-batch-sizes", default="1,8,32,64", help="the same, on a GPU")
    parser.add_argument("--per-request", default="1,4,8,16,32", help="images per request through TorchServe")
    parser.add_argument("--model", type=Path, help="a trained model directory (as train.py leaves it) to serve")
    parser.add_argument("--held-out", type=Path, help="with --model: a folder of JPEGs its training never saw")
    parser.add_argument("--classes", type=int, default=CLASSES, help="breeds of the model trained here")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="input size of the model trained here")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of the model trained here")
    parser.add_argument(
        "--held-out-per-breed",
        type=int,
        default=HELD_OUT_PER_BREED,
        help="test images per breed of the model trained here",
    )
    parser.add_argument("--cache", type=Path, default=CACHE, help="where it is kept")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--first-prediction", nargs=3, metavar=("KIND", "MODEL_DIR", "IMAGE"), help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    if arguments.first_prediction:
        kind, model_dir, image = arguments.first_prediction
        first_prediction(kind, Path(model_dir), Path(image))
    else:
        if arguments.model and not arguments.held_out:
            sys.exit("--model needs --held-out: the images to measure int8's agreement with fp32 on")
        outcome = main(arguments)
        if arguments.json:
            arguments.json.write_text(json.dumps(outcome, indent=1))
