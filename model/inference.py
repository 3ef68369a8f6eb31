"""Inference handler for SageMaker's PyTorch inference toolkit (serverless endpoint and batch transform).

Request: raw image bytes (image/jpeg, image/png, application/x-image, or another format Pillow
reads). Answer (application/json):
    {"predicted_label": "069", "class_name": "French_bulldog", "confidence": 0.91,
     "top5": [{"label": "069", "class_name": "French_bulldog", "probability": 0.91}, ...]}

Bad input is told apart from a server fault:
- BAD_INPUT_POLICY=raise (default, the endpoint): HTTP 4xx whose body is
  {"error": {"code": "...", "message": "..."}}; SageMaker returns it as a ModelError with that
  OriginalStatusCode. A server fault stays a 5xx.
- BAD_INPUT_POLICY=record (set by the pipeline on transform jobs): HTTP 200 with that error body,
  so one bad image yields an error record in its .out file instead of failing the whole job.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from classifier import (
    CONFIG_FILE,
    IMAGE_SIZE,
    WEIGHTS_FILE,
    Breed,
    EvalTransform,
    ImageError,
    build_resnet18,
    decode_image,
    eval_transform,
    fuse_for_inference,
    load_class_index,
    resize_size,
)
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


@dataclass(frozen=True)
class BadInput:
    status: int
    code: str
    message: str

    def body(self) -> str:
        return json.dumps({"error": {"code": self.code, "message": self.message}})


def _error(status: int, code: str, message: str) -> Exception:
    from sagemaker_inference.errors import GenericInferenceToolkitError

    error: Exception = GenericInferenceToolkitError(status, BadInput(status, code, message).body())
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


def predict_fn(request: Request, model: Classifier) -> dict[str, Any]:
    try:
        tensor = _prepare(request, model)
    except BadInputError as exc:
        if model.record_errors:
            return json.loads(exc.bad.body())  # type: ignore[no-any-return]
        raise _error(exc.bad.status, exc.bad.code, exc.bad.message) from exc
    with torch.inference_mode():
        logits = model.network(tensor.contiguous(memory_format=torch.channels_last))
        probabilities = torch.softmax(logits.float(), dim=1)[0]
    top = torch.topk(probabilities, k=min(TOP_K, len(model.breeds)))
    top5 = [
        {"label": model.breeds[i].label, "class_name": model.breeds[i].name, "probability": round(float(p), 6)}
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]
    best = top5[0]
    return {
        "predicted_label": best["label"],
        "class_name": best["class_name"],
        "confidence": best["probability"],
        "top5": top5,
    }


class BadInputError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.bad = BadInput(status, code, message)


def _prepare(request: Request, model: Classifier) -> torch.Tensor:
    media_type = request.content_type.split(";")[0].strip().lower()
    if media_type not in IMAGE_CONTENT_TYPES:
        raise BadInputError(415, "UnsupportedContentType", f"send image bytes, not {request.content_type!r}")
    if not request.body:
        raise BadInputError(400, "EmptyObject", "the request body is empty")
    if len(request.body) > model.max_bytes:
        size = len(request.body)
        raise BadInputError(413, "TooLarge", f"the image is {size:,} bytes, over the {model.max_bytes:,}-byte limit")
    try:
        image = decode_image(request.body, max_pixels=model.max_pixels, draft_size=resize_size(model.image_size))
    except ImageError as exc:
        raise BadInputError(413 if exc.code == "DecompressionBomb" else 400, exc.code, str(exc)) from exc
    return model.preprocess(image).unsqueeze(0)


def output_fn(prediction: dict[str, Any], accept: str) -> tuple[str, str]:
    if accept and accept.split(";")[0].strip() not in (JSON, "*/*"):
        raise _error(406, "UnsupportedAccept", f"answers are {JSON}, not {accept!r}")
    return json.dumps(prediction), JSON
