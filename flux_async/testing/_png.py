"""Encode small but valid PNG files: a gradient pattern per result, in the requested shape."""

from __future__ import annotations

import hashlib
import struct
import zlib

__all__ = ["DEFAULT_MAX_SIDE", "encode_png", "render_png", "scaled_size"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The long side of a served image, in pixels, unless ``image_max_side`` says otherwise.
DEFAULT_MAX_SIDE = 256
# Level 6 is zlib's default: about 3x faster than 9 on these rows, and hardly larger.
_COMPRESSION = 6


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Scale (width, height) down so the long side is at most ``max_side``, keeping the ratio.

    A size that already fits, or ``max_side=None``, is returned unchanged; each side is
    at least 1 pixel.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    long_side = max(width, height)
    if max_side is None or long_side <= max_side:
        return width, height
    scale = max_side / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_png(
    width: int, height: int, scanlines: list[bytes], *, comment: str | None = None
) -> bytes:
    """Encode 8-bit RGB scanlines as a PNG.

    Args:
        width: Image width in pixels (at least 1).
        height: Image height in pixels; must equal ``len(scanlines)``.
        scanlines: The rows, top to bottom, each a filter-type byte followed by
            ``3 * width`` filtered bytes (PNG spec section 9).
        comment: Optional Latin-1 text stored in a ``tEXt`` chunk.
    """
    if width < 1 or height < 1 or len(scanlines) != height:
        raise ValueError(f"PNG size must be positive and match the rows, got {width}x{height}")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    parts = [PNG_SIGNATURE, _chunk(b"IHDR", ihdr)]
    if comment is not None:
        parts.append(_chunk(b"tEXt", b"Comment\x00" + comment.encode("latin-1")))
    parts.append(_chunk(b"IDAT", zlib.compress(b"".join(scanlines), _COMPRESSION)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def render_png(
    name: str, width: int, height: int, *, max_side: int | None = DEFAULT_MAX_SIDE
) -> bytes:
    """Return the PNG the fake serves for a result name at a requested size.

    The image keeps the requested aspect ratio, scaled down to ``max_side`` pixels on its
    long side. Its pattern comes from a hash of the name: red rises across, green
    rises down, blue runs in diagonal bands, each from its own offset and slope. The
    name is also stored in a ``tEXt`` chunk, so no two results share bytes.

    Every row uses PNG's "Sub" filter, under which a ramp is one repeated byte triple,
    so a 256x256 image compresses to a few hundred bytes and encodes in microseconds;
    the fake keeps every served image in memory, so this matters for 10,000-job runs.
    """
    width, height = scaled_size(width, height, max_side)
    digest = hashlib.sha256(name.encode()).digest()
    red0, green0, blue0 = digest[0], digest[1], digest[2]
    red_step, green_step, band_step = 1 + digest[3] % 4, 1 + digest[4] % 4, 1 + digest[5] % 8
    # Sub filter: each byte is stored minus the byte 3 to its left (mod 256), so after
    # the first pixel a row is (red_step, 0, band_step) repeated.
    rest = bytes((red_step, 0, band_step)) * (width - 1)
    scanlines = [
        bytes(
            (
                1,  # filter type Sub
                red0,
                (green0 + y * green_step) & 0xFF,
                (blue0 + y * band_step) & 0xFF,
            )
        )
        + rest
        for y in range(height)
    ]
    return encode_png(width, height, scanlines, comment=name)
