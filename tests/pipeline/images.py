"""Small images and broken files for pipeline tests, made in memory."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def jpeg(width: int = 64, height: int = 48, color: tuple[int, int, int] = (180, 120, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


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
