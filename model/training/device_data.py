"""The training data path that decodes and augments on the training device (`--data-path device`,
the default on CUDA): the loader's workers only read each file's bytes; a whole batch is decoded at
once (`torchvision.io.decode_jpeg`, nvJPEG on a GPU) and augmented with tensor operations there.

On a GPU the CPU's decoding and augmenting, not the GPU, decide the speed of the Pillow path
(dogimages.image_folder). The same code runs on the CPU, which is how the tests run it. It does
what the Pillow path does, in tensors: the image turned upright by its EXIF orientation; for
training a random resized crop (scale 0.25-1), a horizontal flip and colour jitter (0.2); for
evaluation the shorter side resized in the 256:224 ratio and the centre crop; then ImageNet
normalisation. Unreadable images, and decompression bombs (by their header, under the same Pillow
guard as the Pillow path), are skipped and counted.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dogimages
import torch
from classifier import IMAGENET_MEAN, IMAGENET_STD, resize_size
from dogimages import Batch, SafeImageFolder
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

JPEG_MAGIC = b"\xff\xd8\xff"


class EncodedImages(Dataset[tuple[torch.Tensor, int] | None]):
    """A split's files as (encoded bytes as a uint8 tensor, label). The workers decode no pixels:
    they read each header under Pillow's decompression-bomb guard (dogimages.open_guarded), as the
    Pillow path does, and an image whose header is unreadable or declares a bomb comes back as None."""

    def __init__(self, folder: SafeImageFolder) -> None:
        self.samples = folder.samples
        self.classes = folder.classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        path, label = self.samples[index]
        data = Path(path).read_bytes()
        try:
            with dogimages.open_guarded(io.BytesIO(data)):
                pass
        except dogimages.UNREADABLE:
            return None
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), label


@dataclass
class EncodedBatch:
    data: list[torch.Tensor]
    labels: torch.Tensor
    skipped: int = 0  # images dropped before decoding (unreadable headers, decompression bombs)


def collate_encoded(items: list[tuple[torch.Tensor, int] | None]) -> EncodedBatch:
    good = [item for item in items if item is not None]
    return EncodedBatch([data for data, _ in good], torch.tensor([label for _, label in good]), len(items) - len(good))


class DeviceTransform:
    """Decode a batch on `device` and turn it into the network's input, as the Pillow path would."""

    def __init__(self, device: torch.device, image_size: int, *, train: bool, augment: bool = True) -> None:
        self.device = device
        self.image_size = image_size
        self.train = train and augment
        self.crop = v2.RandomResizedCrop(image_size, scale=(0.25, 1.0), antialias=True)
        self.jitter = v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def __call__(self, batch: EncodedBatch) -> Batch:
        decoded = self.decode(batch.data)
        kept = [(n, image) for n, image in enumerate(decoded) if image is not None]
        skipped = batch.skipped + len(decoded) - len(kept)
        if not kept:
            return Batch(torch.empty(0, 3, 1, 1), torch.empty(0, dtype=torch.long), skipped)
        images = torch.stack([self.one(image) for _, image in kept])
        pixels = (images.float() / 255.0 - self.mean) / self.std
        labels = batch.labels[[n for n, _ in kept]].to(self.device)
        return Batch(pixels, labels, skipped)

    def decode(self, data: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Each image as 3 x H x W uint8 on the device, upright; None where it cannot be read. The
        JPEGs of a batch are decoded in one call (nvJPEG decodes a list at once); if one of them is
        bad, each is decoded alone so that only it is lost."""
        found: list[torch.Tensor | None] = [None] * len(data)
        jpegs = [n for n, d in enumerate(data) if bytes(d[:3].tolist()) == JPEG_MAGIC]
        try:
            for n, image in zip(jpegs, self._jpegs([data[n] for n in jpegs]), strict=True):
                found[n] = image
        except RuntimeError:
            for n in jpegs:
                found[n] = self._one_or_none(lambda d: self._jpegs([d])[0], data[n])
        for n in set(range(len(data))) - set(jpegs):  # PNG, GIF, WebP: decoded on the CPU
            found[n] = self._one_or_none(
                lambda d: decode_image(d, ImageReadMode.RGB, apply_exif_orientation=True), data[n]
            )
        return [image.to(self.device) if image is not None else None for image in found]

    def _jpegs(self, data: list[torch.Tensor]) -> list[torch.Tensor]:
        if not data:
            return []
        decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True)
        return list(decoded)

    @staticmethod
    def _one_or_none(decode: Any, data: torch.Tensor) -> torch.Tensor | None:
        try:
            image = decode(data)
        except RuntimeError:
            return None
        return image if image.ndim == 3 and image.shape[0] == 3 and min(image.shape[1:]) > 0 else None

    def one(self, image: torch.Tensor) -> torch.Tensor:
        """One decoded image to image_size x image_size uint8, augmented when training."""
        if not self.train:
            resized = tvf.resize(image, [resize_size(self.image_size)], antialias=True)
            centre: torch.Tensor = tvf.center_crop(resized, [self.image_size, self.image_size])
            return centre
        cropped: torch.Tensor = self.crop(image)
        if torch.rand(()) < 0.5:
            cropped = tvf.horizontal_flip(cropped)
        jittered: torch.Tensor = self.jitter(cropped)
        return jittered


class DeviceBatches:
    """A DataLoader of encoded batches that yields decoded, augmented Batches on the device."""

    def __init__(self, loader: DataLoader[Any], transform: DeviceTransform) -> None:
        self.loader = loader
        self.transform = transform
        self.sampler = loader.sampler  # train.py sets the distributed sampler's epoch

    @classmethod
    def of(
        cls,
        folder: SafeImageFolder,
        *,
        batch_size: int,
        train: bool,
        workers: int,
        distributed: bool,
        device: torch.device,
        image_size: int,
        augment: bool = True,
    ) -> DeviceBatches:
        """The device path over a split that dogimages.image_folder found (its files and labels)."""
        encoded = dogimages.loader(
            EncodedImages(folder),
            batch_size=batch_size,
            train=train,
            workers=workers,
            distributed=distributed,
            collate_fn=collate_encoded,
        )
        return cls(encoded, DeviceTransform(device, image_size, train=train, augment=augment))

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            yield self.transform(batch)

    def __len__(self) -> int:
        return len(self.loader)
