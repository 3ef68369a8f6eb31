"""The one definition of the dog-breed classifier: ResNet-18 architecture, image preprocessing
and the class index. Training (train.py, hpo.py) and serving (inference.py) both import it, and
train.py copies it with the rest of model/serving/ into the model artifact's code/."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from networks import WEIGHTS_FILE
from PIL import Image, ImageCms, ImageOps
from torch import nn

NUM_CLASSES = 133
IMAGE_SIZE = 224
RESIZE_SIZE = 256
SRGB = ImageCms.createProfile("sRGB")  # what in_srgb converts to
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CLASS_INDEX_FILE = "class_index.json"
CONFIG_FILE = "model_config.json"  # {"arch": "resnet18", "image_size": 224}

FineTune = Literal["head", "layer4", "all"]


# -- architecture ------------------------------------------------------------------------------
# ResNet-18 as torchvision defines it, with the same parameter names, so torchvision's ImageNet
# weights load as they are. Serving then needs torch alone: importing torchvision costs about a
# second of every cold start (see model/tools/benchmark.py).


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)  # type: ignore[no-any-return]


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))  # type: ignore[no-any-return]


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet weights through the torchvision weights API (downloaded once into the torch hub cache)."""
    from torchvision.models import ResNet18_Weights

    state: dict[str, torch.Tensor] = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    return state


def build_resnet18(
    num_classes: int = NUM_CLASSES,
    *,
    pretrained: str | None = None,
    fine_tune: FineTune = "all",
) -> nn.Module:
    """ResNet-18 with a new `num_classes` head.

    pretrained: None (random init), "imagenet" (the torchvision weights API), or the path of a
    local ImageNet ResNet-18 state dict (offline)."""
    model = ResNet18(1000)
    if pretrained == "imagenet":
        model.load_state_dict(imagenet_state_dict())
    elif pretrained:
        model.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True))
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    trainable = {"head": ("fc.",), "layer4": ("fc.", "layer4."), "all": ("",)}[fine_tune]
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(trainable)
    return model


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


def train_transform(image_size: int = IMAGE_SIZE) -> Callable[[Image.Image], torch.Tensor]:
    from torchvision import transforms  # training only: serving does without torchvision

    return transforms.Compose(  # type: ignore[no-any-return]
        [
            transforms.RandomResizedCrop(image_size, scale=(0.25, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says. Phones store the pixels as the sensor read them
    and the turn in EXIF: training, evaluation and serving all see a photo the way its owner does
    (and so does the pipeline's copy of a large photo, functions/pipeline/logic/downsize.py)."""
    return ImageOps.exif_transpose(image)


def in_srgb(image: Image.Image) -> Image.Image:
    """The image in RGB, its colours in sRGB from the colour profile it embeds (an iPhone's Display P3;
    none: taken as sRGB; one that cannot be read: the pixels as they are). The network learned sRGB
    photos. The pipeline's copy of a large or phone-format photo is converted alike
    (functions/pipeline/logic/downsize.py, in_srgb)."""
    profile = image.info.get("icc_profile")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if not profile:
        return rgb
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if "sRGB" in ImageCms.getProfileDescription(source):
            return rgb
        converted = ImageCms.profileToProfile(rgb, source, SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return rgb
    return converted if converted is not None else rgb


class ResizeCenterCrop:
    """Shorter side to `resize_size(size)`, then the centre `size` x `size` square, done as one
    resampling of just that region: the result of Resize + CenterCrop with less work."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.scale_to = resize_size(size)

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        side = self.size * min(width, height) / self.scale_to  # the crop, in source pixels
        left, top = (width - side) / 2, (height - side) / 2
        return image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


class EvalTransform:
    """Shorter side to 256, centre 224x224 crop, ImageNet normalisation: validation, test, serving.

    In two steps a server can take apart: `pixels` per image (the crop, 8-bit) and `normalize` on a
    whole batch, on the network's device: 8-bit images are a quarter of the bytes to move, and the
    threads that decode images do no float arithmetic of their own."""

    def __init__(self, image_size: int = IMAGE_SIZE) -> None:
        self.crop = ResizeCenterCrop(image_size)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """The cropped image as 3 x H x W uint8."""
        return torch.from_numpy(np.array(self.crop(image.convert("RGB")), dtype=np.uint8)).permute(2, 0, 1)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (C x H x W or N x C x H x W, on any device) to the network's float input."""
        mean, std = self.mean.to(pixels.device), self.std.to(pixels.device)
        return (pixels.float() / 255.0 - mean) / std

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(self.pixels(image))


def eval_transform(image_size: int = IMAGE_SIZE) -> EvalTransform:
    return EvalTransform(image_size)


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


def model_version(directory: Path) -> str:
    """Which trained weights a model directory holds: "sha256:" and the first 16 hex digits of the
    digest of its model.pth (every network in the directory is made from those weights)."""
    digest = hashlib.sha256()
    with (directory / WEIGHTS_FILE).open("rb") as weights:
        while chunk := weights.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:16]}"
