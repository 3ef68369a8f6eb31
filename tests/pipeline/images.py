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


@functools.cache
def phone_photo(
    kind: str = "HEIF",
    width: int = 4032,
    height: int = 3024,
    *,
    subject: bytes | None = None,
    orientation: int | None = None,
    profile: bytes | None = None,
) -> bytes:
    """A photo in a phone's format, written by the real encoders: HEIF (an iPhone's HEIC, pillow-heif's
    libheif and x265) or AVIF (Pillow's libavif); 4032 x 3024, the default, is an iPhone's 12 MP. As
    photo(): stored turned for its EXIF orientation, and with an embedded colour profile if given."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    seen = Image.open(io.BytesIO(photo(width, height, subject=subject, quality=90)))
    exif = Image.Exif()
    stored = seen
    if orientation is not None:
        exif[0x0112] = orientation
        stored = seen.transpose(_STORED_TURN[orientation])
    buffer = io.BytesIO()
    options: dict[str, object] = {"icc_profile": profile} if profile else {}
    if kind == "HEIF":  # x265's fastest preset: a real HEIC in 3 s, where the default takes 20
        options["enc_params"] = {"preset": "ultrafast"}
    stored.save(buffer, kind, quality=50, exif=exif.tobytes(), **options)
    return buffer.getvalue()


@functools.cache
def display_p3_profile() -> bytes:
    """An ICC v2 RGB display profile with Display P3's primaries (D50-adapted colorants, as Apple's
    profile gives them) and a 2.2 gamma: the colour space of iPhone photos, wider than sRGB."""

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + struct.pack(">3i", *(round(v * 65536) for v in (x, y, z)))

    text = b"Display P3 (test)"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text) + 1) + text + b"\0" + b"\0" * 8 + b"\0" * 70
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(2.2 * 256)) + b"\0\0"
    tags = [
        (b"desc", desc),
        (b"cprt", b"text\0\0\0\0public domain\0\0\0\0"),
        (b"wtpt", xyz(0.964203, 1.0, 0.824905)),
        (b"rXYZ", xyz(0.515121, 0.241196, -0.001053)),
        (b"gXYZ", xyz(0.291977, 0.692245, 0.041885)),
        (b"bXYZ", xyz(0.157104, 0.066574, 0.784073)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size) + b"\0\0\0\0" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
        + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + struct.pack(">3i", 63190, 65536, 54061) + b"\0" * 48
    )  # fmt: skip
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


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
