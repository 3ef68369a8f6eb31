"""Images and broken files for pipeline tests, made in memory: small ones, and phone-sized photos."""

from __future__ import annotations

import functools
import io
import struct
import zlib

from PIL import Image


def jpeg(width: int = 64, height: int = 48, color: tuple[int, int, int] = (180, 120, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@functools.cache
def photo(
    width: int = 8000,
    height: int = 6000,
    *,
    subject: bytes | None = None,
    orientation: int | None = None,
    quality: int = 95,
) -> bytes:
    """A photo-like JPEG as a phone writes it: a picture (`subject`, an image scaled up, or shapes)
    under sensor-like noise, so it compresses as a photo does (8000 x 6000, the default, is a
    48-megapixel photo of about 25 MB). With an EXIF orientation (6: the camera was turned a
    quarter), the pixels are stored turned as a camera stores them, so the photo is seen as given."""
    if subject is None:
        small = Image.linear_gradient("L").resize((width // 100 + 1, height // 100 + 1))
        source = Image.merge("RGB", (small, small.rotate(90), small.rotate(180)))
    else:
        source = Image.open(io.BytesIO(subject)).convert("RGB")
    picture = source.resize((width, height), Image.Resampling.BICUBIC)
    texture = Image.effect_noise((width, height), 48).convert("RGB")
    stored = Image.blend(picture, texture, 0.25)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation  # Orientation
        stored = stored.transpose(_STORED_TURN[orientation])
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


# How a camera stores the pixels of a photo it tags with each orientation (EXIF undoes it).
_STORED_TURN = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def png(width: int = 40, height: int = 30, color: tuple[int, int, int] = (20, 160, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg(256, 192)
    return data[: len(data) // 2]


def corrupt_jpeg() -> bytes:
    """A JPEG whose frame header parses but whose Huffman table is garbage."""
    data = bytearray(jpeg(128, 96))
    table = data.index(b"\xff\xc4")
    data[table + 5 : table + 21] = b"\xff" * 16
    return bytes(data)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header declares a huge image (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    ihdr = b"IHDR" + header
    chunk = struct.pack(">I", len(header)) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def heic_header() -> bytes:
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
