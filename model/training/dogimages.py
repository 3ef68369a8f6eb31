"""The dogImages dataset: `<root>/{train,valid,test}/NNN.Breed_name/*.jpg`.

Corrupt or truncated images are skipped and counted, so one bad file never crashes a long job."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from classifier import Breed, breed_from_folder, eval_transform, in_srgb, train_transform, upright
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import datasets

SPLITS = ("train", "valid", "test")
MAX_TRAINING_PIXELS = 50_000_000


# What makes an image unreadable, for every data path: the file, its decoder, or Pillow's
# decompression-bomb guard (MAX_TRAINING_PIXELS).
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def open_guarded(source: str | BinaryIO) -> Image.Image:
    """Image.open (which reads the header only) under Pillow's decompression-bomb guard at
    MAX_TRAINING_PIXELS: a header declaring a bomb raises before any pixel is decoded."""
    Image.MAX_IMAGE_PIXELS = MAX_TRAINING_PIXELS
    return Image.open(source)


def _load_rgb(path: str) -> Image.Image:
    with open_guarded(path) as image:
        image.load()  # decode fully here, so a truncated file fails now
        return in_srgb(upright(image))


class SafeImageFolder(datasets.ImageFolder):
    """An ImageFolder whose unreadable images come back as None (dropped by `skip_bad_collate`)."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        path, target = self.samples[index]
        try:
            image = self.loader(path)
        except UNREADABLE:
            return None
        return self.transform(image) if self.transform else image, target


@dataclass
class Batch:
    images: torch.Tensor
    labels: torch.Tensor
    skipped: int


def skip_bad_collate(items: list[tuple[torch.Tensor, int] | None]) -> Batch:
    good = [item for item in items if item is not None]
    skipped = len(items) - len(good)
    if not good:
        return Batch(torch.empty(0, 3, 1, 1), torch.empty(0, dtype=torch.long), skipped)
    images, labels = zip(*good, strict=True)
    return Batch(torch.stack(list(images)), torch.tensor(labels), skipped)


def image_folder(root: Path, split: str, *, train: bool, image_size: int) -> SafeImageFolder:
    directory = root / split
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist: expected the dogImages layout {SPLITS}")
    transform: Callable[[Any], Any] = train_transform(image_size) if train else eval_transform(image_size)
    return SafeImageFolder(str(directory), transform=transform, loader=_load_rgb)


def add_extra(train_set: SafeImageFolder, root: Path) -> dict[str, int]:
    """Add the images of another set in the dogImages layout (cli.export's reviewed images: its train/,
    or breed folders at `root` itself) to the training split, under the training split's class
    numbers. Returns the images added per breed folder. Raises SystemExit for a breed the training
    split does not have: the model could not learn it."""
    directory = root / "train" if (root / "train").is_dir() else root
    if not directory.is_dir():
        raise SystemExit(f"--extra-train {root}: no such folder")
    try:
        extra = datasets.ImageFolder(str(directory), loader=_load_rgb, allow_empty=True)
    except FileNotFoundError as exc:
        raise SystemExit(f"--extra-train {root}: not the dogImages layout: {exc}") from exc
    unknown = sorted(set(extra.classes) - set(train_set.class_to_idx))
    if unknown:
        raise SystemExit(
            f"--extra-train {root}: breeds the training split does not have: {', '.join(unknown)} "
            "(folders are named as the training split's, NNN.Breed_name)"
        )
    added = [(path, train_set.class_to_idx[extra.classes[target]]) for path, target in extra.samples]
    train_set.samples.extend(added)
    train_set.targets.extend(target for _, target in added)
    return dict(Counter(extra.classes[target] for _, target in extra.samples))


def breeds(dataset: datasets.ImageFolder) -> list[Breed]:
    return [breed_from_folder(folder) for folder in dataset.classes]


def loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    train: bool,
    workers: int,
    distributed: bool,
    collate_fn: Callable[[list[Any]], Any] = skip_bad_collate,
) -> DataLoader[Any]:
    """Batches of a split: shuffled for training, sharded across processes under torchrun."""
    sampler: DistributedSampler[Any] | None = DistributedSampler(dataset, shuffle=train) if distributed else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )
