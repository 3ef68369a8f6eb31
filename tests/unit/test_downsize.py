"""Large photos made small enough to send (functions/pipeline/logic/downsize.py)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.logic.downsize import DOWNSIZED_SHORT_SIDE, downsize
from pipeline.logic.errors import RejectedImage
from tests.pipeline import images

LIMIT = 4_000_000


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


def test_a_48_megapixel_photo_becomes_a_small_jpeg_with_512_pixels_on_its_shorter_side() -> None:
    result = downsize(images.photo(), max_pixels=50_000_000, max_bytes=LIMIT)
    assert (result.original_size, result.size) == ((8000, 6000), (683, DOWNSIZED_SHORT_SIDE))
    copy = opened(result.data)
    assert (copy.format, copy.mode, copy.size) == ("JPEG", "RGB", (683, 512))
    assert len(result.data) < 200_000


@pytest.mark.parametrize(("orientation", "seen"), [(None, (4000, 3000)), (3, (4000, 3000)), (6, (4000, 3000))])
def test_the_copy_is_upright_whatever_the_camera_stored(orientation: int | None, seen: tuple[int, int]) -> None:
    reference = opened(downsize(images.photo(4000, 3000), max_pixels=10**8, max_bytes=LIMIT).data)
    copy = opened(downsize(images.photo(4000, 3000, orientation=orientation), max_pixels=10**8, max_bytes=LIMIT).data)
    assert copy.size == (round(seen[0] * 512 / seen[1]), 512)
    # the same picture as the photo stored upright: a turned copy would differ by far more
    difference = sum(
        abs(a - b) for a, b in zip(copy.convert("L").tobytes(), reference.convert("L").tobytes(), strict=True)
    )
    assert difference / (copy.width * copy.height) < 8


def test_a_png_with_transparency_becomes_an_rgb_jpeg() -> None:
    png = encoded(Image.new("RGBA", (3000, 2000), (200, 100, 50, 128)), "PNG")
    copy = opened(downsize(png, max_pixels=10**8, max_bytes=LIMIT).data)
    assert (copy.format, copy.mode, copy.size) == ("JPEG", "RGB", (768, 512))


def test_an_image_already_small_in_pixels_keeps_its_size() -> None:
    bmp = encoded(Image.new("RGB", (400, 300), (10, 200, 30)), "BMP")
    result = downsize(bmp, max_pixels=10**8, max_bytes=LIMIT)
    assert result.size == (400, 300) and opened(result.data).format == "JPEG"


def test_a_copy_still_over_the_limit_is_rejected_with_both_sizes() -> None:
    with pytest.raises(RejectedImage) as refused:
        downsize(images.photo(4000, 3000), max_pixels=10**8, max_bytes=1_000)
    assert refused.value.code == "TooLarge"
    assert "at 683x512, over the 1,000-byte limit" in refused.value.reason


def test_a_photo_that_does_not_decode_is_invalid() -> None:
    data = images.photo(4000, 3000)
    with pytest.raises(RejectedImage) as refused:
        downsize(data[: len(data) // 2], max_pixels=10**8, max_bytes=LIMIT)
    assert refused.value.code == "InvalidImage" and "cannot decode the image" in refused.value.reason


def test_a_format_whose_header_hides_its_size_is_still_guarded_against_bombs() -> None:
    tiff = encoded(Image.new("RGB", (200, 200)), "TIFF")  # images.py reads no TIFF dimensions
    with pytest.raises(RejectedImage) as refused:
        downsize(tiff, max_pixels=10_000, max_bytes=LIMIT)
    assert refused.value.code == "DecompressionBomb"


# -- a phone's formats and colours ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["HEIF", "AVIF"])
@pytest.mark.parametrize("orientation", [None, 6])
def test_a_phone_format_becomes_an_upright_jpeg_of_the_same_picture(kind: str, orientation: int | None) -> None:
    reference = opened(downsize(images.photo(1600, 1200), max_pixels=10**8, max_bytes=LIMIT).data)
    phone = images.phone_photo(kind, 1600, 1200, orientation=orientation)
    result = downsize(phone, max_pixels=10**8, max_bytes=LIMIT)
    copy = opened(result.data)
    assert (copy.format, copy.mode, copy.size) == ("JPEG", "RGB", (683, 512))
    difference = sum(
        abs(a - b) for a, b in zip(copy.convert("L").tobytes(), reference.convert("L").tobytes(), strict=True)
    )
    assert difference / (copy.width * copy.height) < 8  # a turned or garbled copy differs by far more


def test_colours_in_a_display_p3_profile_are_sent_in_srgb() -> None:
    """A P3 colour is a more saturated sRGB one: a copy that ignored the profile would keep the P3 numbers."""
    p3 = images.display_p3_profile()
    for kind in ("JPEG", "HEIF"):
        buffer = io.BytesIO()
        options = {"enc_params": {"preset": "ultrafast"}} if kind == "HEIF" else {}
        Image.new("RGB", (1200, 900), (200, 100, 100)).save(buffer, kind, quality=95, icc_profile=p3, **options)
        copy = opened(downsize(buffer.getvalue(), max_pixels=10**8, max_bytes=LIMIT).data)
        red, green, _ = copy.getpixel((300, 200))  # type: ignore[misc]
        assert red >= 210 and green <= 96, (kind, copy.getpixel((300, 200)))
        assert "icc_profile" not in copy.info  # sent as sRGB, which a JPEG without a profile means


def test_a_broken_profile_leaves_the_pixels_as_they_are() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 900), (200, 100, 100)).save(buffer, "JPEG", quality=95, icc_profile=b"not a profile")
    copy = opened(downsize(buffer.getvalue(), max_pixels=10**8, max_bytes=LIMIT).data)
    assert all(abs(a - b) <= 3 for a, b in zip(copy.getpixel((300, 200)), (200, 100, 100), strict=True))  # type: ignore[arg-type]


def test_a_cut_off_heic_is_invalid() -> None:
    with pytest.raises(RejectedImage) as caught:
        downsize(images.phone_photo("HEIF", 1600, 1200)[:20_000], max_pixels=10**8, max_bytes=LIMIT)
    assert caught.value.code == "InvalidImage"
