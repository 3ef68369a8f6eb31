"""What downsizing a large photo changes in the model's answer, and what it costs.

    make benchmark-photos [PHOTOS_ARGS="--images 133 --sizes 4000x3000,8000x6000"]

The pipeline sends a photo over its mode's request limit as a copy with 512 pixels on its shorter
side (functions/pipeline/logic/downsize.py). Here the benchmark's model (`make benchmark` trains it on
generated dogImages-layout data, 133 breeds, and keeps it) classifies each held-out image scaled up
to a phone's size under sensor-like noise, three ways:

- reference: the photo decoded at full resolution, then the handler's resize and crop;
- served:    the photo as the handler decodes it when it is sent whole (a reduced-scale JPEG decode);
- downsized: the copy the pipeline sends, through the handler.

It reports the top-1 agreement of "served" and "downsized" with "reference" (fp32 network), the
photos' sizes, and downsizing's time and peak memory per photo on this machine (one process per
size, as a function instance handles one image at a time), also for a 49-megapixel PNG.

Phone formats: each photo of the first size also saved as a HEIC (pillow-heif: libheif, x265) and an
AVIF (Pillow: libavif), which the pipeline always sends as such a copy: the copy's agreement with
"reference" (the JPEG's full decode: the formats' own loss included), and the conversion's time and
peak memory, as for the JPEGs.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchmark
import benchmark_inputs
import torch
from PIL import Image

from pipeline.logic.downsize import downsize
from pipeline.logic.routing import SERVERLESS_MAX_BYTES

MAX_PIXELS = 50_000_000  # template.yaml's MaxImagePixels default

# Downsize one photo in a fresh process: its time and the process's peak memory above the baseline.
_ONE = """
import sys, time
from pipeline.logic.downsize import downsize
def peak():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
data = open(sys.argv[1], "rb").read()
before = peak()
started = time.perf_counter()
downsize(data, max_pixels={max_pixels}, max_bytes={max_bytes})
print(time.perf_counter() - started, (peak() - before) / 1024)
"""


def phone_photo(subject: bytes, size: tuple[int, int], texture: Image.Image) -> bytes:
    """The subject scaled up to `size` under sensor-like noise, saved as a phone saves (quality 95)."""
    picture = Image.open(io.BytesIO(subject)).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    Image.blend(picture, texture, 0.25).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def logits(model: Any, body: bytes, *, draft: bool) -> torch.Tensor:
    import classifier
    import inference

    image = inference.decode_image(
        body, max_pixels=MAX_PIXELS, draft_size=classifier.resize_size(model.image_size) if draft else None
    )
    tensor = model.preprocess.pixels(image).unsqueeze(0)
    with torch.inference_mode():
        return model.network(inference.network_inputs(tensor, model)).float().cpu()  # type: ignore[no-any-return]


def downsizing_cost(photo: bytes, workdir: Path, runs: int) -> dict[str, float]:
    path = workdir / "photo"
    path.write_bytes(photo)
    code = _ONE.format(max_pixels=MAX_PIXELS, max_bytes=SERVERLESS_MAX_BYTES)
    seconds, peak_mib = [], []
    for _ in range(runs):
        result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
        elapsed, memory = (float(v) for v in result.stdout.split())
        seconds.append(elapsed)
        peak_mib.append(memory)
    return {"downsize_ms_median": round(statistics.median(seconds) * 1000), "peak_mib_above_start": max(peak_mib)}


def in_format(photo: bytes, kind: str) -> bytes:
    """The photo saved as a phone's HEIC (x265's fastest preset: the benchmark times decoding) or AVIF."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    buffer = io.BytesIO()
    extra: dict[str, Any] = {"enc_params": {"preset": "ultrafast"}} if kind == "HEIF" else {}
    Image.open(io.BytesIO(photo)).save(buffer, kind, quality=50, **extra)
    return buffer.getvalue()


def phone_formats(model: Any, subjects: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    import quantization

    width, height = (int(v) for v in args.sizes.split(",")[0].split("x"))
    texture = Image.effect_noise((width, height), 48).convert("RGB")
    photos = [phone_photo(subject, (width, height), texture) for subject in subjects]
    reference = torch.cat([logits(model, photo, draft=False) for photo in photos])
    found: dict[str, Any] = {}
    for kind in ("HEIF", "AVIF"):
        files = [in_format(photo, kind) for photo in photos]
        copies = [downsize(data, max_pixels=MAX_PIXELS, max_bytes=SERVERLESS_MAX_BYTES).data for data in files]
        converted = torch.cat([logits(model, copy, draft=True) for copy in copies])
        found[f"{kind.lower()}_{width}x{height}"] = {
            "file_mb_median": round(statistics.median(len(f) for f in files) / 1e6, 1),
            "converted_vs_reference": quantization.agreement(reference, converted).as_dict(),
            **downsizing_cost(files[0], args.workdir, args.runs),
        }
        print(json.dumps({kind: found[f"{kind.lower()}_{width}x{height}"]}, indent=1), flush=True)
    return found


def main(args: argparse.Namespace) -> dict[str, Any]:
    import quantization

    model_dir, held_out = benchmark_inputs.train_model()
    model = benchmark.load_ours(model_dir, "fp32")
    subjects = held_out[:: max(1, len(held_out) // args.images)][: args.images]  # spread over the breeds
    results: dict[str, Any] = {"cpu": benchmark_inputs.cpu_description(), "torch": torch.__version__, "sizes": {}}
    args.workdir.mkdir(parents=True, exist_ok=True)
    for text in args.sizes.split(","):
        width, height = (int(v) for v in text.split("x"))
        texture = Image.effect_noise((width, height), 48).convert("RGB")
        kinds: dict[str, list[torch.Tensor]] = {"reference": [], "served": [], "downsized": []}
        photo_bytes, copy_bytes, started = [], [], time.perf_counter()
        for subject in subjects:
            photo = phone_photo(subject, (width, height), texture)
            copy = downsize(photo, max_pixels=MAX_PIXELS, max_bytes=SERVERLESS_MAX_BYTES).data
            photo_bytes.append(len(photo))
            copy_bytes.append(len(copy))
            kinds["reference"].append(logits(model, photo, draft=False))
            kinds["served"].append(logits(model, photo, draft=True))
            kinds["downsized"].append(logits(model, copy, draft=True))
        reference = torch.cat(kinds["reference"])
        results["sizes"][text] = {
            "photos": len(subjects),
            "photo_mb_median": round(statistics.median(photo_bytes) / 1e6, 1),
            "copy_kb_median": round(statistics.median(copy_bytes) / 1e3),
            **{
                f"{kind}_vs_reference": quantization.agreement(reference, torch.cat(kinds[kind])).as_dict()
                for kind in ("served", "downsized")
            },
            **downsizing_cost(phone_photo(subjects[0], (width, height), texture), args.workdir, args.runs),
            "seconds": round(time.perf_counter() - started),
        }
        print(json.dumps({text: results["sizes"][text]}, indent=1), flush=True)
    results["phone_formats"] = phone_formats(model, subjects, args)
    # A PNG has no reduced-scale decode: the whole image is in memory once (7000 x 7000, 49 megapixels).
    png = io.BytesIO()
    Image.linear_gradient("L").resize((7000, 7000)).convert("RGB").save(png, "PNG")
    results["png_7000x7000"] = downsizing_cost(png.getvalue(), args.workdir, args.runs)
    print(json.dumps({"png_7000x7000": results["png_7000x7000"]}, indent=1), flush=True)
    return results


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=133, help="held-out images, one photo each per size")
    parser.add_argument("--sizes", default="4000x3000,8000x6000", help="photo sizes, WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="timed downsizings per size (fresh processes)")
    parser.add_argument("--workdir", type=Path, default=benchmark_inputs.REPO / ".devstack" / "photo-benchmark")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    outcome = main(arguments)
    if arguments.json:
        arguments.json.write_text(json.dumps(outcome, indent=1))
