"""Photos larger than a request may carry, or in a phone's format, made a small JPEG before they are sent.

A serverless endpoint takes requests of at most 4 MB, a transform job's records fit its
MaxPayloadInMB, and phones write 3-12 MB JPEGs (48-megapixel ones 15-25 MB). The model looks at a
224 x 224 crop of the image scaled to 256 pixels on its shorter side (model/serving/classifier.py),
so an image over its mode's limit is sent as a copy at DOWNSIZED_SHORT_SIDE pixels on its shorter
side, twice what the model scales to. The copy is decoded at a reduced scale where the format allows
(a JPEG's DCT scaling, Pillow's draft mode: a fraction of the time and memory of a full decode),
turned upright as its EXIF orientation says (as the model handler turns every image), its colours
turned to sRGB from its embedded profile (an iPhone's Display P3; as the model handler does), resized
and saved as a JPEG without a profile. A phone's HEIC/HEIF (decoded by pillow-heif, which turns the
image as its container says) or AVIF (Pillow's own decoder) is always sent this way, whatever its
size: the model container reads neither. How often the model's answer for the copy agrees with its
answer for the original: docs/performance.md, "Large photos" (`make benchmark-photos`).

The functions import Pillow (and pillow-heif) here only, and only when an image needs it: no cold start
pays for it.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.logic.errors import RejectedImage

if TYPE_CHECKING:
    from PIL import Image

DOWNSIZED_SHORT_SIDE = 512
JPEG_QUALITY = 90
# The largest object the functions read whole (a 48-megapixel phone JPEG is 15-25 MB); larger ones
# are judged by their header and rejected. Decoding is bounded by MaxImagePixels, not by this.
LARGEST_IMAGE_BYTES = 50_000_000


@dataclass(frozen=True)
class Downsized:
    data: bytes  # a JPEG
    original_size: tuple[int, int]
    size: tuple[int, int]


def downsize(data: bytes, *, max_pixels: int, max_bytes: int, short_side: int = DOWNSIZED_SHORT_SIDE) -> Downsized:
    """The image as a JPEG of at most `short_side` pixels on its shorter side and `max_bytes` bytes,
    upright; raise RejectedImage when it cannot be decoded or is still too large."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    phone_format = data[4:8] == b"ftyp"  # an ISO base media file, which images.py found HEIF or AVIF
    if phone_format:  # HEIF needs pillow-heif's decoder (AVIF is Pillow's own)
        import pillow_heif

        pillow_heif.register_heif_opener()
    guard, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels  # Pillow's guard is global: put back after
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            original = image.size
            profile = image.info.get("icc_profile")
            if min(original) > short_side:
                # The smallest DCT scale (1/2, 1/4, 1/8) that leaves the shorter side at least short_side.
                scale = short_side / min(original)
                image.draft("RGB", (math.ceil(original[0] * scale), math.ceil(original[1] * scale)))
            image.load()
            # One full-size image in memory at a time: an integer reduction first (formats without a
            # reduced-scale decode, such as PNG), then everything on the small image, in place.
            if image.mode not in ("RGB", "RGBA", "L", "LA"):
                image = image.convert("RGBA" if "transparency" in image.info or "A" in image.mode else "RGB")
            factor = min(image.size) // short_side
            if factor >= 2:
                image = image.reduce(factor)
            ImageOps.exif_transpose(image, in_place=True)
            if image.mode != "RGB":
                image = image.convert("RGB")
            image = in_srgb(image, profile)
            width, height = image.size
            if min(width, height) > short_side:
                scale = short_side / min(width, height)
                target = (max(1, round(width * scale)), max(1, round(height * scale)))
                image = image.resize(target, Image.Resampling.LANCZOS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RejectedImage("DecompressionBomb", f"the image is too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        if phone_format:
            raise RejectedImage(
                "InvalidImage", "cannot decode the image: its HEIF/AVIF data is cut off or corrupt"
            ) from exc
        raise RejectedImage("NotAnImage", "the content is not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise RejectedImage("InvalidImage", f"cannot decode the image: {exc}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = guard
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    if out.tell() > max_bytes:
        raise RejectedImage(
            "TooLarge",
            f"the image is {len(data):,} bytes, and still {out.tell():,} bytes at {image.size[0]}x{image.size[1]}, "
            f"over the {max_bytes:,}-byte limit for this inference mode",
        )
    return Downsized(out.getvalue(), original, image.size)


def in_srgb(image: Image.Image, profile: bytes | None) -> Image.Image:
    """An RGB image's colours in sRGB, from the colour profile it embedded (None: taken as sRGB). A
    profile that cannot be read leaves the pixels as they are. The model handler's twin:
    model/serving/classifier.py, in_srgb (the model container has no pipeline package)."""
    from PIL import ImageCms

    if not profile:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if "sRGB" in ImageCms.getProfileDescription(source):
            return image
        converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image
    return converted if converted is not None else image
