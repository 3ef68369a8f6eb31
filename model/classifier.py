"""The one definition of the dog-breed classifier: ResNet-18 architecture, image preprocessing
and the class index. Training (train.py, hpo.py) and serving (inference.py) both import it, and
train.py copies it next to inference.py into the model artifact."""

from __future__ import annotations

import io
import itertools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torchvision import models, transforms

NUM_CLASSES = 133
IMAGE_SIZE = 224
RESIZE_SIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

WEIGHTS_FILE = "model.pth"
CLASS_INDEX_FILE = "class_index.json"
CONFIG_FILE = "model_config.json"  # {"arch": "resnet18", "image_size": 224}

FineTune = Literal["head", "layer4", "all"]


# -- architecture ------------------------------------------------------------------------------


def build_resnet18(
    num_classes: int = NUM_CLASSES,
    *,
    pretrained: str | None = None,
    fine_tune: FineTune = "all",
) -> nn.Module:
    """ResNet-18 with a new `num_classes` head.

    pretrained: None (random init), "imagenet" (the torchvision weights API; downloads once into
    the torch hub cache), or the path of a local ImageNet state dict (offline)."""
    if pretrained == "imagenet":
        model = models.resnet18(weights=models.ResNet18_Weights.IMAGENET1K_V1)
    else:
        model = models.resnet18(weights=None)
        if pretrained:
            state = torch.load(pretrained, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    trainable = {"head": ("fc.",), "layer4": ("fc.", "layer4."), "all": ("",)}[fine_tune]
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(trainable)
    network: nn.Module = model
    return network


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold each BatchNorm into the convolution before it (eval mode only): same outputs, fewer ops."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()

    def fuse(parent: nn.Module) -> None:
        children = list(parent.named_children())
        for (name, child), (next_name, next_child) in itertools.pairwise(children):
            if isinstance(child, nn.Conv2d) and isinstance(next_child, nn.BatchNorm2d):
                setattr(parent, name, fuse_conv_bn_eval(child, next_child))
                setattr(parent, next_name, nn.Identity())
        for _, child in parent.named_children():
            fuse(child)

    fuse(model)
    # ResNet's downsample branches are Sequential(conv, bn): handled by the recursion above.
    return model


# -- preprocessing ------------------------------------------------------------------------------


def resize_size(image_size: int) -> int:
    """The shorter side before the centre crop, in ImageNet's 256:224 ratio."""
    return round(image_size * RESIZE_SIZE / IMAGE_SIZE)


def train_transform(image_size: int = IMAGE_SIZE) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size, scale=(0.25, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(image_size: int = IMAGE_SIZE) -> transforms.Compose:
    """Shorter side to 256, centre 224x224 crop, ImageNet normalisation: validation, test, serving."""
    return transforms.Compose(
        [
            transforms.Resize(resize_size(image_size), antialias=True),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class ImageError(ValueError):
    """The bytes are not an image we can classify; `code` names the problem for the caller."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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
        raise ImageError("DecompressionBomb", f"the image is too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("NotAnImage", "the content is not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise ImageError("InvalidImage", f"cannot decode the image: {exc}") from exc
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


# -- class index --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Breed:
    label: str  # "069", as the dataset's folder numbers
    name: str  # "French_bulldog"


def breed_from_folder(folder: str) -> Breed:
    """dogImages folders are named `NNN.Breed_name`."""
    label, _, name = folder.partition(".")
    return Breed(label, name or folder)


def save_class_index(breeds: list[Breed], directory: Path) -> None:
    index = {str(i): {"label": b.label, "name": b.name} for i, b in enumerate(breeds)}
    (directory / CLASS_INDEX_FILE).write_text(json.dumps(index, indent=1))


def load_class_index(directory: Path) -> list[Breed]:
    index = json.loads((directory / CLASS_INDEX_FILE).read_text())
    return [Breed(index[str(i)]["label"], index[str(i)]["name"]) for i in range(len(index))]
