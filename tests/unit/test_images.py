"""The header checks the functions run before any model sees an image."""

from __future__ import annotations

import pytest

from pipeline.logic.errors import RejectedImage
from pipeline.logic.images import HEADER_BYTES, ImageInfo, inspect_image
from tests.pipeline import images

LIMITS = {"max_bytes": 4_000_000, "max_pixels": 50_000_000}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (images.jpeg(64, 48), ImageInfo("JPEG", 64, 48)),
        (images.png(40, 30), ImageInfo("PNG", 40, 30)),
        (b"GIF89a" + bytes([10, 0, 20, 0]) + b"\x00" * 8, ImageInfo("GIF", 10, 20)),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", ImageInfo("WEBP")),
        (b"II*\x00" + b"\x00" * 8, ImageInfo("TIFF")),
        (images.heic_header(), ImageInfo("HEIF")),  # an iPhone's: major brand heic
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1heic" + b"\x00" * 8, ImageInfo("HEIF")),
        (b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1miafMA1B" + b"\x00" * 8, ImageInfo("AVIF")),
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avif" + b"\x00" * 8, ImageInfo("AVIF")),
    ],
)
def test_supported_images_pass_with_their_dimensions(data: bytes, expected: ImageInfo) -> None:
    assert inspect_image(data[:HEADER_BYTES], len(data), **LIMITS) == expected


@pytest.mark.parametrize(
    ("data", "size", "code", "reason_part"),
    [
        (b"", 0, "EmptyObject", "empty"),
        (images.jpeg(), 4_000_001, "TooLarge", "4,000,000-byte limit for an image"),
        (b"shopping list\n", 14, "NotAnImage", "not an image"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp41" + b"\x00" * 8, 40, "NotAnImage", "HEIF, AVIF"),
        (b"%PDF-1.7\n", 9, "UnsupportedFormat", "PDF"),
        (images.png_bomb(), 60, "DecompressionBomb", "900,000,000 pixels"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 16, 24, "CorruptImage", "IHDR"),
        (b"\xff\xd8\xff\xd9\x00\x00", 6, "CorruptImage", "ends before any image frame"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 8, 24, "CorruptImage", "0x0"),
    ],
)
def test_bad_headers_are_rejected_with_a_reason(data: bytes, size: int, code: str, reason_part: str) -> None:
    with pytest.raises(RejectedImage) as caught:
        inspect_image(data, size, **LIMITS)
    assert caught.value.code == code
    assert reason_part in caught.value.reason


def test_a_jpeg_whose_frame_header_lies_beyond_the_first_bytes_is_left_to_the_model() -> None:
    # GIVEN a JPEG whose EXIF block pushes the frame header past what the function reads
    data = images.jpeg(64, 48)
    app_segment = b"\xff\xe1" + (60_002).to_bytes(2, "big") + b"\x00" * 60_000
    padded = data[:2] + app_segment * 2 + data[2:]
    # THEN the header check passes without dimensions (the model handler checks them when it decodes)
    info = inspect_image(padded[:HEADER_BYTES], len(padded), **LIMITS)
    assert info == ImageInfo("JPEG", None, None)
