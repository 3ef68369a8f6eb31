"""dogImages datasets: generate a small learnable one, or upload a local tree to S3.

    python model/tools/dataset_tool.py synth --out data/synthetic --classes 5
    python model/tools/dataset_tool.py upload --src data/dogImages --bucket my-bucket --prefix datasets/dogImages

Synthetic classes differ in colour and shape (with noise, position and scale jitter), so a network
really has to learn them. The background hues spread the classes around the colour wheel; the
figure's hue cycles through k hues (k*k >= classes), so classes whose backgrounds are neighbours
differ by 1/k of the wheel in their figures (a twelfth for 133 classes), and classes with the same
figure hue differ by k/classes in their backgrounds. Folder names follow the real dataset
(`001.Affenpinscher`, ...)."""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

# The first breeds of dogImages, in its numbering; later synthetic classes get generic names.
BREEDS = [
    "Affenpinscher",
    "Afghan_hound",
    "Airedale_terrier",
    "Akita",
    "Alaskan_malamute",
    "American_eskimo_dog",
    "American_foxhound",
    "American_staffordshire_terrier",
    "American_water_spaniel",
    "Anatolian_shepherd_dog",
]
SPLITS = ("train", "valid", "test")


def class_folder(index: int) -> str:
    name = BREEDS[index] if index < len(BREEDS) else f"Breed_{index + 1:03d}"
    return f"{index + 1:03d}.{name}"


def synth_image(class_index: int, classes: int, rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A photo-sized image: class-coloured background and shape, with random jitter and noise."""
    width, height = size
    figure_hues = math.ceil(math.sqrt(classes))
    background_hue, figure_hue = class_index / classes, (class_index % figure_hues) / figure_hues
    base = tuple(int(255 * c) for c in _hsv(background_hue, 0.55, 0.85))
    image = Image.new("RGB", size, base)
    draw = ImageDraw.Draw(image)
    scale = rng.uniform(0.3, 0.6)
    w, h = int(width * scale), int(height * scale)
    x, y = rng.randint(0, width - w), rng.randint(0, height - h)
    fill = tuple(int(255 * c) for c in _hsv(figure_hue, 0.8, 0.5))
    shape = class_index % 3
    if shape == 0:
        draw.ellipse((x, y, x + w, y + h), fill=fill)
    elif shape == 1:
        draw.rectangle((x, y, x + w, y + h), fill=fill)
    else:
        draw.polygon([(x + w // 2, y), (x, y + h), (x + w, y + h)], fill=fill)
    noise = Image.effect_noise(size, rng.uniform(10, 30)).convert("RGB")
    return Image.blend(image, noise, 0.15).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h, s, v)


def synthesize(
    out: Path,
    *,
    classes: int = 5,
    per_split: tuple[int, int, int] = (16, 4, 4),
    size: tuple[int, int] = (500, 375),
    corrupt: int = 1,
    seed: int = 0,
) -> Path:
    """Write `out/{train,valid,test}/NNN.Breed/*.jpg`; `corrupt` truncated JPEGs go into train."""
    rng = random.Random(seed)
    for split, count in zip(SPLITS, per_split, strict=True):
        for index in range(classes):
            folder = out / split / class_folder(index)
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                synth_image(index, classes, rng, size).save(
                    folder / f"{class_folder(index)[4:]}_{n:05d}.jpg", quality=85
                )
    for n in range(corrupt):  # like dogImages' truncated Leonberger_06571.jpg
        victim = out / "train" / class_folder(n % classes) / f"truncated_{n:05d}.jpg"
        good = (out / "train" / class_folder(n % classes)).glob("*.jpg")
        data = next(iter(good)).read_bytes()
        victim.write_bytes(data[: len(data) // 3])
    return out


def _files(src: Path) -> Iterator[Path]:
    for path in sorted(src.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(src).parts):
            yield path


def upload(src: Path, bucket: str, prefix: str, s3: Any, workers: int = 16) -> str:
    """Upload a dogImages tree as `s3://bucket/prefix/{train,valid,test}/...`; returns that URI."""
    missing = [split for split in SPLITS if not (src / split).is_dir()]
    if missing:
        raise SystemExit(f"{src} is not a dogImages tree: missing {', '.join(missing)}")
    prefix = prefix.strip("/")
    files = list(_files(src))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda p: s3.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(src).as_posix()}"), files))
    print(f"uploaded {len(files)} files to s3://{bucket}/{prefix}/")
    return f"s3://{bucket}/{prefix}/"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser("synth", help="generate a small learnable dataset in the dogImages layout")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--classes", type=int, default=5)
    synth.add_argument("--train", type=int, default=16, help="images per class in train/")
    synth.add_argument("--valid", type=int, default=4)
    synth.add_argument("--test", type=int, default=4)
    synth.add_argument("--width", type=int, default=500)
    synth.add_argument("--height", type=int, default=375)
    synth.add_argument("--corrupt", type=int, default=1, help="truncated JPEGs placed in train/")
    synth.add_argument("--seed", type=int, default=0)
    up = commands.add_parser("upload", help="upload a local dogImages tree to S3")
    up.add_argument("--src", type=Path, required=True)
    up.add_argument("--bucket", required=True)
    up.add_argument("--prefix", default="datasets/dogImages")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.command == "synth":
        synthesize(
            args.out,
            classes=args.classes,
            per_split=(args.train, args.valid, args.test),
            size=(args.width, args.height),
            corrupt=args.corrupt,
            seed=args.seed,
        )
        print(f"wrote a {args.classes}-class dataset to {args.out}")
    else:
        import boto3

        upload(args.src, args.bucket, args.prefix, boto3.client("s3"))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
