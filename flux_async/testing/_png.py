"""Encode tiny but valid PNG files, one distinct image per result name."""

from __future__ import annotations

import hashlib
import struct
import zlib

__all__ = ["IMAGE_SIZE", "encode_png", "image_for"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_SIZE = 16


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def encode_png(
    width: int, height: int, rgb: tuple[int, int, int], *, comment: str | None = None
) -> bytes:
    """Encode a solid-colour 8-bit RGB PNG.

    Args:
        width: Image width in pixels (at least 1).
        height: Image height in pixels (at least 1).
        rgb: The fill colour.
        comment: Optional Latin-1 text stored in a ``tEXt`` chunk.
    """
    if width < 1 or height < 1:
        raise ValueError(f"PNG size must be positive, got {width}x{height}")
    row = b"\x00" + bytes(rgb) * width  # filter type 0 (None) for every scanline
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    parts = [PNG_SIGNATURE, _chunk(b"IHDR", ihdr)]
    if comment is not None:
        parts.append(_chunk(b"tEXt", b"Comment\x00" + comment.encode("latin-1")))
    parts.append(_chunk(b"IDAT", zlib.compress(row * height, 9)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def image_for(name: str) -> bytes:
    """Return the PNG the fake serves for a result name.

    The colour comes from a hash of the name, and the name itself is stored in a
    ``tEXt`` chunk, so two results never share bytes even if their colours collide.
    """
    digest = hashlib.sha256(name.encode()).digest()
    return encode_png(IMAGE_SIZE, IMAGE_SIZE, (digest[0], digest[1], digest[2]), comment=name)
