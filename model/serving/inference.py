"""Inference handler for SageMaker's PyTorch inference toolkit (serverless endpoint and batch transform).

Request: raw image bytes (image/jpeg, image/png, application/x-image, or another format Pillow
reads). Answer (application/json): one answer of answers.py, a prediction

    {"predicted_label": "069", "class_name": "French_bulldog", "confidence": 0.91,
     "top5": [{"label": "069", "class_name": "French_bulldog", "probability": 0.91}, ...]}

or, for bad input, an error record {"error": {"code": "...", "message": "..."}}. Bad input is told
apart from a server fault:
- BAD_INPUT_POLICY=raise (default, the endpoint): HTTP 4xx with the error record as its body;
  SageMaker returns it as a ModelError with that OriginalStatusCode. A server fault stays a 5xx.
- BAD_INPUT_POLICY=record (set by the pipeline on transform jobs): HTTP 200 with the error record,
  so one bad image yields an error record in its .out file instead of failing the whole job.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import answers
import torch
from classifier import (
    CONFIG_FILE,
    IMAGE_SIZE,
    RESIZE_SIZE,
    WEIGHTS_FILE,
    Breed,
    EvalTransform,
    build_resnet18,
    eval_transform,
    fuse_for_inference,
    load_class_index,
    resize_size,
)
from PIL import Image, UnidentifiedImageError
from torch import nn

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
TOP_K = 5


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
    """Load weights saved by train.py. No network: the architecture is built without weights."""
    directory = Path(model_dir)
    config_path = directory / CONFIG_FILE
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    image_size = int(config.get("image_size", IMAGE_SIZE))
    breeds = load_class_index(directory)
    network = build_resnet18(len(breeds), pretrained=None)
    network.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    network = fuse_for_inference(network).to(memory_format=torch.channels_last)
    return Classifier(
        network=network,
        breeds=breeds,
        preprocess=eval_transform(image_size),
        image_size=image_size,
        record_errors=os.environ.get("BAD_INPUT_POLICY", "raise") == "record",
        max_bytes=int(os.environ.get("MAX_IMAGE_BYTES", DEFAULT_MAX_BYTES)),
        max_pixels=int(os.environ.get("MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS)),
    )


@dataclass(frozen=True)
class Request:
    body: bytes
    content_type: str


def input_fn(request_body: Any, content_type: str) -> Request:
    """Keep the raw bytes: checks and decoding need the limits model_fn loaded (see predict_fn)."""
    return Request(bytes(request_body) if isinstance(request_body, bytes | bytearray) else b"", content_type or "")


def predict_fn(request: Request, model: Classifier) -> answers.Answer:
    try:
        tensor = _prepare(request, model)
    except BadInput as exc:
        if model.record_errors:
            return exc.record
        raise exc.toolkit_error() from exc
    with torch.inference_mode():
        logits = model.network(tensor.contiguous(memory_format=torch.channels_last))
        probabilities = torch.softmax(logits.float(), dim=1)[0]
    top = torch.topk(probabilities, k=min(TOP_K, len(model.breeds)))
    return answers.Prediction(
        tuple(
            answers.Candidate(model.breeds[i].label, model.breeds[i].name, round(float(p), 6))
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        )
    )


def _prepare(request: Request, model: Classifier) -> torch.Tensor:
    media_type = request.content_type.split(";")[0].strip().lower()
    if media_type not in IMAGE_CONTENT_TYPES:
        raise BadInput("UnsupportedContentType", f"send image bytes, not {request.content_type!r}", 415)
    if not request.body:
        raise BadInput("EmptyObject", "the request body is empty")
    if len(request.body) > model.max_bytes:
        size = len(request.body)
        raise BadInput("TooLarge", f"the image is {size:,} bytes, over the {model.max_bytes:,}-byte limit", 413)
    image = decode_image(request.body, max_pixels=model.max_pixels, draft_size=resize_size(model.image_size))
    return model.preprocess(image).unsqueeze(0)


def decode_image(data: bytes, *, max_pixels: int, draft_size: int | None = RESIZE_SIZE) -> Image.Image:
    """Decode to RGB with Pillow's decompression-bomb guard on, fully, so truncation shows.

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
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadInput("DecompressionBomb", f"the image is too large to decode safely: {exc}", 413) from exc
    except UnidentifiedImageError as exc:
        raise BadInput("NotAnImage", "the content is not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise BadInput("InvalidImage", f"cannot decode the image: {exc}") from exc
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def output_fn(answer: answers.Answer, accept: str) -> tuple[str, str]:
    if accept and accept.split(";")[0].strip() not in (JSON, "*/*"):
        raise BadInput("UnsupportedAccept", f"answers are {JSON}, not {accept!r}", 406).toolkit_error()
    return answers.dumps(answer), JSON
