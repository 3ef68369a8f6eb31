"""Inference handler for SageMaker's PyTorch inference toolkit (serverless endpoint and batch transform).

Request: raw image bytes (image/jpeg, image/png, application/x-image, or another format Pillow
reads). Answer (application/json): one answer of answers.py, a prediction

    {"predicted_label": "069", "class_name": "French_bulldog", "confidence": 0.91,
     "top5": [{"label": "069", "class_name": "French_bulldog", "probability": 0.91}, ...]}

(`confidence` calibrated where the artifact carries a temperature, and with the review `threshold`;
see answers.py and calibration.py) or, for bad input, an error record {"error": {"code": "...",
"message": "..."}}. Bad input is told apart from a server fault:
- BAD_INPUT_POLICY=raise (default, the endpoint): HTTP 4xx with the error record as its body;
  SageMaker returns it as a ModelError with that OriginalStatusCode. A server fault stays a 5xx.
- BAD_INPUT_POLICY=record (set by the pipeline on transform jobs): HTTP 200 with the error record,
  so one bad image yields an error record in its .out file instead of failing the whole job.

Batch transform jobs of the pipeline send application/jsonlines: many images per request (see
answers.py). Each record is checked and decoded on its own (a bad one is an error-record line,
whatever BAD_INPUT_POLICY says), DECODE_THREADS at a time (default: as many as torch's CPU threads;
Pillow and torch let go of the GIL while they decode and resize), and the good ones run through the
network in mini-batches of BATCH_SIZE (default 32), on CUDA when the instance has a GPU.

The network, by MODEL_PRECISION (networks.py decides, from the device, the CPU's flags and what
the artifact holds):
- int8 (default): the fastest int8 network train.py wrote that is safe on this CPU (see
  quantization.py; top-1 mostly the same as fp32, at a fraction of the CPU time): model_int8.pt
  with AVX-512 VNNI, model_int8_reduce_range.pt on other CPUs with AVX2;
- fp16: model.pth in half precision, for GPUs (the template sets it on GPU transform instances);
- fp32: model.pth as trained.
Where the asked network cannot run (int8 on a GPU, on a CPU whose flags are unknown, or without a
safe int8 network in the artifact; fp16 on a CPU) the worker serves fp32 and logs why, once. Every
prediction says which network made it (`model_precision`) and which trained weights
(`model_version`, the digest of model.pth).
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import calibration
import networks
import quantization
import torch
from classifier import (
    CONFIG_FILE,
    IMAGE_SIZE,
    RESIZE_SIZE,
    Breed,
    EvalTransform,
    build_resnet18,
    eval_transform,
    fuse_for_inference,
    in_srgb,
    load_class_index,
    model_version,
    resize_size,
    upright,
)
from networks import WEIGHTS_FILE
from PIL import Image, UnidentifiedImageError
from torch import nn

import answers

JSON = "application/json"
IMAGE_CONTENT_TYPES = frozenset(
    {
        "application/x-image",
        "image/jpeg",
        "image/jpg",
        "image/png",
        "image/gif",
        "image/bmp",
        "image/webp",
        "image/tiff",
    }
)
DEFAULT_MAX_BYTES = 6_000_000
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_BATCH_SIZE = 32
TOP_K = 5

logger = logging.getLogger(__name__)


@dataclass
class Classifier:
    """What model_fn loads once per worker."""

    network: nn.Module
    breeds: list[Breed]
    preprocess: EvalTransform
    image_size: int
    record_errors: bool
    max_bytes: int
    max_pixels: int
    device: torch.device
    decoder: ThreadPoolExecutor  # DECODE_THREADS workers for the records of a multi-record request
    batch_size: int = DEFAULT_BATCH_SIZE
    precision: str = "fp32"  # networks.Choice.precision: fp32, fp16 (halved), int8 or int8-reduce-range
    version: str | None = None  # model_version(): which trained weights
    temperature: float = 1.0  # calibration.py: the logits are divided by it
    threshold: float | None = None  # review_threshold(): an answer under it needs review
    expected_under: float | None = None  # the share of validation images under the threshold

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float16 if self.precision == "fp16" else torch.float32


class BadInput(Exception):
    """The request can never be classified as it is. Its error record is the answer; `status` is
    the HTTP status it gets where bad input is an error (BAD_INPUT_POLICY=raise)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.record = answers.ErrorRecord(code, message)
        self.status = status

    def toolkit_error(self) -> Exception:
        """What the inference toolkit turns into this status with the record as the body."""
        from sagemaker_inference.errors import GenericInferenceToolkitError

        error: Exception = GenericInferenceToolkitError(self.status, answers.dumps(self.record))
        return error


def model_fn(model_dir: str) -> Classifier:
    """Load what train.py saved: an int8 network or the weights (model.pth) in fp32 or fp16, as
    MODEL_PRECISION says (int8 by default) and networks.choose allows here. Nothing is downloaded."""
    directory = Path(model_dir)
    config_path = directory / CONFIG_FILE
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    image_size = int(config.get("image_size", IMAGE_SIZE))
    breeds = load_class_index(directory)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    choice = serving_choice(directory, device)
    network: nn.Module
    if choice.precision.startswith("int8"):
        network = quantization.load(directory / choice.file, choice.engine)
    else:
        network = build_resnet18(len(breeds), pretrained=None)
        network.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        network = fuse_for_inference(network).to(memory_format=torch.channels_last).to(device)
        if choice.precision == "fp16":
            network = network.half()  # BatchNorm is folded into the convolutions: nothing is left in fp32
    version = model_version(directory)
    calibrated = calibration.load(directory)
    threshold = review_threshold(os.environ.get("CONFIDENCE_THRESHOLD", ""), calibrated)
    decode_threads = max(1, int(os.environ.get("DECODE_THREADS", torch.get_num_threads())))
    logger.info(
        "model loaded: precision=%s device=%s classes=%d version=%s network=%s engine=%s temperature=%s threshold=%s",
        choice.precision,
        device,
        len(breeds),
        version,
        choice.file,
        choice.engine or "-",
        calibrated.temperature,
        threshold,
    )
    return Classifier(
        network=network,
        breeds=breeds,
        preprocess=eval_transform(image_size),
        image_size=image_size,
        record_errors=os.environ.get("BAD_INPUT_POLICY", "raise") == "record",
        max_bytes=int(os.environ.get("MAX_IMAGE_BYTES", DEFAULT_MAX_BYTES)),
        max_pixels=int(os.environ.get("MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS)),
        device=device,
        batch_size=max(1, int(os.environ.get("BATCH_SIZE", DEFAULT_BATCH_SIZE))),
        precision=choice.precision,
        version=version,
        temperature=calibrated.temperature,
        threshold=threshold,
        expected_under=None if threshold is None else calibrated.expected_under(threshold),
        decoder=ThreadPoolExecutor(decode_threads, thread_name_prefix="decode"),
    )


def review_threshold(configured: str, calibrated: calibration.Calibration) -> float | None:
    """The confidence under which an answer needs review: CONFIDENCE_THRESHOLD (the stack's
    ConfidenceThreshold) where set, else the artifact's recommendation, else none."""
    if not configured.strip():
        return calibrated.recommended_threshold
    try:
        threshold = float(configured)
    except ValueError:
        threshold = -1.0
    if not 0 <= threshold <= 1:  # 0: no answer is under it
        raise ValueError(f"CONFIDENCE_THRESHOLD must be a number in [0, 1] or empty, not {configured!r}")
    return threshold


def serving_choice(directory: Path, device: torch.device) -> networks.Choice:
    """networks.choose for MODEL_PRECISION (default int8) on this worker: its device, its CPU's
    flags, the model directory's files and this torch's int8 kernels. Logged once, with the reason
    and the CPU: as a warning where it falls back to fp32."""
    asked = os.environ.get("MODEL_PRECISION", "int8")
    cpu = networks.read_cpu_flags()
    choice = networks.choose(
        asked,
        device=device.type,
        cpu=cpu,
        files={path.name for path in directory.iterdir()},
        int8_kernels=quantization.ENGINE in torch.backends.quantized.supported_engines,
    )
    where = f"CPU {cpu.model!r}, flags: {cpu.summary}"
    if choice.fallback:
        logger.warning("MODEL_PRECISION=%s but serving fp32: %s (%s)", asked, choice.why, where)
    else:
        logger.info("MODEL_PRECISION=%s serves %s: %s (%s)", asked, choice.precision, choice.why, where)
    return choice


@dataclass(frozen=True)
class Request:
    body: bytes
    content_type: str


def input_fn(request_body: Any, content_type: str) -> Request:
    """Keep the raw bytes: checks and decoding need the limits model_fn loaded (see predict_fn)."""
    return Request(bytes(request_body) if isinstance(request_body, bytes | bytearray) else b"", content_type or "")


def predict_fn(request: Request, model: Classifier) -> answers.Answer | list[tuple[str, answers.Answer]]:
    if _media_type(request.content_type) == answers.JSON_LINES:
        return _predict_records(request.body, model)
    try:
        tensor = _prepare(request, model)
    except BadInput as exc:
        if model.record_errors:
            return exc.record
        raise exc.toolkit_error() from exc
    return _classify(tensor, model)[0]


def _predict_records(body: bytes, model: Classifier) -> list[tuple[str, answers.Answer]]:
    """One (id, answer) per input line, in input order. A line that is not a record fails the
    request: the pipeline wrote it, so that is a fault, not bad input."""
    try:
        records = [answers.loads_record(line) for line in body.splitlines() if line.strip()]
    except answers.BrokenRecord as exc:
        raise BadInput("BrokenRecord", str(exc)).toolkit_error() from exc
    ids = [record_id for record_id, _ in records]
    prepared = list(model.decoder.map(lambda record: _prepare_record(record[1], model), records))
    found: list[answers.Answer | None] = [p if isinstance(p, answers.ErrorRecord) else None for p in prepared]
    good = [(n, tensor) for n, tensor in enumerate(prepared) if isinstance(tensor, torch.Tensor)]
    for start in range(0, len(good), model.batch_size):
        chunk = good[start : start + model.batch_size]
        predictions = _classify(torch.cat([tensor for _, tensor in chunk]), model)
        for (line_number, _), prediction in zip(chunk, predictions, strict=True):
            found[line_number] = prediction
    return [(record_id, answer) for record_id, answer in zip(ids, found, strict=True) if answer is not None]


def _prepare_record(image: bytes, model: Classifier) -> torch.Tensor | answers.ErrorRecord:
    try:
        return _prepare(Request(image, "application/x-image"), model)
    except BadInput as exc:
        return exc.record


def network_inputs(batch: torch.Tensor, model: Classifier) -> torch.Tensor:
    """What the network takes from a batch of _prepare's pixels (N x 3 x H x W, uint8): normalised on
    its device, in its dtype and memory format."""
    inputs = model.preprocess.normalize(batch.to(model.device, non_blocking=True)).to(model.input_dtype)
    return inputs.contiguous(memory_format=torch.channels_last)


def _classify(batch: torch.Tensor, model: Classifier) -> list[answers.Prediction]:
    """Top-5 predictions for a batch of _prepare's pixels (N x 3 x H x W, uint8)."""
    # The int8 network is frozen TorchScript: the graph executor's profiling and re-optimisation
    # add about 0.1 s to a worker's first answer and nothing to later ones, so they stay off.
    with torch.inference_mode(), torch.jit.optimized_execution(False):  # type: ignore[attr-defined]
        logits = model.network(network_inputs(batch, model)).float()
        probabilities = torch.softmax(logits / model.temperature, dim=1)
        top = torch.topk(probabilities, k=min(TOP_K, len(model.breeds)), dim=1)
    return [
        answers.Prediction(
            tuple(
                answers.Candidate(model.breeds[i].label, model.breeds[i].name, round(float(p), 6))
                for p, i in zip(values, indices, strict=True)
            ),
            model_precision=model.precision,
            model_version=model.version,
            threshold=model.threshold,
            expected_under_threshold=model.expected_under,
        )
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _prepare(request: Request, model: Classifier) -> torch.Tensor:
    """Check, decode, crop: the image as 1 x 3 x H x W uint8 pixels (_classify normalises batches)."""
    if _media_type(request.content_type) not in IMAGE_CONTENT_TYPES:
        raise BadInput("UnsupportedContentType", f"send image bytes, not {request.content_type!r}", 415)
    if not request.body:
        raise BadInput("EmptyObject", "the request body is empty")
    if len(request.body) > model.max_bytes:
        size = len(request.body)
        raise BadInput("TooLarge", f"the image is {size:,} bytes, over the {model.max_bytes:,}-byte limit", 413)
    image = decode_image(request.body, max_pixels=model.max_pixels, draft_size=resize_size(model.image_size))
    return model.preprocess.pixels(image).unsqueeze(0)


def decode_image(data: bytes, *, max_pixels: int, draft_size: int | None = RESIZE_SIZE) -> Image.Image:
    """Decode to RGB, upright, in sRGB, with Pillow's decompression-bomb guard on, fully, so truncation shows.

    draft_size lets a JPEG decode at a reduced scale (1/2, 1/4, 1/8) that still leaves the shorter
    side at least that large: the same image for eval_transform, at a fraction of the cost."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if draft_size and image.format == "JPEG":
                scale = min(width, height) / draft_size
                image.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
            image.load()
            image = upright(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadInput("DecompressionBomb", f"the image is too large to decode safely: {exc}", 413) from exc
    except UnidentifiedImageError as exc:
        raise BadInput("NotAnImage", "the content is not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise BadInput("InvalidImage", f"cannot decode the image: {exc}") from exc
    return in_srgb(image)


def output_fn(answer: answers.Answer | list[tuple[str, answers.Answer]], accept: str) -> tuple[str, str]:
    if isinstance(answer, list):  # a multi-record request: one line per record
        if accept and _media_type(accept) not in (answers.JSON_LINES, "*/*"):
            raise BadInput("UnsupportedAccept", f"multi-record answers are {answers.JSON_LINES}", 406).toolkit_error()
        return "\n".join(answers.dumps_line(record_id, a) for record_id, a in answer), answers.JSON_LINES
    if accept and _media_type(accept) not in (JSON, "*/*"):
        raise BadInput("UnsupportedAccept", f"answers are {JSON}, not {accept!r}", 406).toolkit_error()
    return answers.dumps(answer), JSON
