"""Cheap image checks on the first bytes of an object, before any model sees it.

These checks read magic numbers and header fields only, without an imaging library. They catch what
can be caught from a header (empty, oversize, not an image, unsupported format, decompression bombs);
damage deeper in a file (truncation, corrupt data) is caught by the model handler, which answers a
per-image error instead of failing (see model/serving/inference.py), or by downsize.py for an image
too large to send as it is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pipeline.logic.errors import RejectedImage

# How many leading bytes the checks need: enough for a JPEG's EXIF block before its frame header.
HEADER_BYTES = 64 * 1024

SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")  # what the model container reads
# Phones' formats (an iPhone's HEIC, HEIF, AVIF): the functions send them as a JPEG (downsize.py).
CONVERTED_FORMATS = ("HEIF", "AVIF")
# ISO base media file brands (the ftyp box's major and compatible brands) of each converted format.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_FORMATS = ", ".join(SUPPORTED_FORMATS + CONVERTED_FORMATS)  # as a reason names them

# Formats we recognise but do not classify, so the reason can name them.
_KNOWN_UNSUPPORTED: tuple[tuple[bytes, int, str], ...] = (
    (b"%PDF", 0, "PDF"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"8BPS", 0, "PSD"),
)


@dataclass(frozen=True)
class ImageInfo:
    """What a header says about an image. Width and height are None when the header
    did not reveal them within HEADER_BYTES (a later check in the model handler still applies)."""

    format: str
    width: int | None = None
    height: int | None = None


def inspect_image(header: bytes, size: int, *, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Check an object from its size and leading bytes; raise RejectedImage with a reason."""
    if size == 0:
        raise RejectedImage("EmptyObject", "the object is empty (0 bytes)")
    if size > max_bytes:
        raise RejectedImage(
            "TooLarge",
            f"the object is {size:,} bytes, over the {max_bytes:,}-byte limit for an image",
        )
    info = _sniff(header)
    if info.width is not None and info.height is not None:
        if info.width == 0 or info.height == 0:
            raise RejectedImage("CorruptImage", f"the {info.format} header declares a {info.width}x{info.height} image")
        pixels = info.width * info.height
        if pixels > max_pixels:
            raise RejectedImage(
                "DecompressionBomb",
                f"the {info.format} header declares {info.width}x{info.height} = {pixels:,} pixels, "
                f"over the limit of {max_pixels:,} pixels",
            )
    return info


def _sniff(data: bytes) -> ImageInfo:
    if data.startswith(b"\xff\xd8\xff"):
        return ImageInfo("JPEG", *_jpeg_size(data))
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) >= 24 and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return ImageInfo("PNG", width, height)
        raise RejectedImage("CorruptImage", "the PNG signature is not followed by an IHDR header")
    if data[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) < 10:
            raise RejectedImage("CorruptImage", "the GIF header is truncated")
        width, height = struct.unpack("<HH", data[6:10])
        return ImageInfo("GIF", width, height)
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return ImageInfo("BMP", abs(width), abs(height))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageInfo("WEBP")
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return ImageInfo("TIFF")
    if data[4:8] == b"ftyp" and (phone := _iso_image(data)):
        return ImageInfo(phone)
    for magic, offset, name in _KNOWN_UNSUPPORTED:
        if data[offset : offset + len(magic)] == magic:
            raise RejectedImage(
                "UnsupportedFormat",
                f"{name} images are not supported; supported formats: {_FORMATS}",
            )
    raise RejectedImage(
        "NotAnImage",
        f"the content is not an image (first bytes {data[:8].hex(' ') or 'none'}); supported formats: {_FORMATS}",
    )


def _iso_image(data: bytes) -> str | None:
    """HEIF or AVIF by the ftyp box's brands (ISO/IEC 23008-12, and AV1's image format), else None (a
    video, say)."""
    (box_size,) = struct.unpack(">I", data[:4])
    brands = {data[8:12]} | {data[at : at + 4] for at in range(16, min(box_size, len(data)) - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIF"
    return None


# JPEG start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    """Walk JPEG marker segments up to the first frame header; (None, None) if not reached."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise RejectedImage("CorruptImage", f"the JPEG header is corrupt (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:
            raise RejectedImage("CorruptImage", "the JPEG ends before any image frame")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise RejectedImage("CorruptImage", f"the JPEG header is corrupt (segment length {length})")
        if marker in _SOF_MARKERS:
            if pos + 9 > len(data):
                return None, None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None, None
