"""Read an image's type and pixel size from its first bytes (PNG, JPEG, WebP, GIF).

Stdlib only and no decoding: the size is in the header (PNG ``IHDR``, JPEG ``SOFn``, WebP
``VP8``/``VP8L``/``VP8X``, GIF's logical screen). Used to fill `Image.width`/``height`` when
the provider reported none.
"""

from __future__ import annotations

__all__ = ["sniff_image"]

_PNG = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field after them.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})


def sniff_image(data: bytes) -> tuple[str, int, int] | None:
    """Return ``(content type, width, height)`` from an image's header, or ``None``.

    ``None`` means the bytes are not a PNG, JPEG, WebP or GIF, or are cut before the size.
    """
    if data.startswith(_PNG):
        if len(data) >= 24 and data[12:16] == b"IHDR":
            return "image/png", _be(data, 16, 4), _be(data, 20, 4)
        return None
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp(data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return "image/gif", _le(data, 6, 2), _le(data, 8, 2)
    return None


def _be(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "big")


def _le(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "little")


def _jpeg(data: bytes) -> tuple[str, int, int] | None:
    at = 2
    end = len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:
            return None  # not at a marker: corrupt
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_STANDALONE:
            at += 2
            continue
        length = _be(data, at + 2, 2)
        if marker in _JPEG_SOF:
            if at + 9 > end:
                return None
            height, width = _be(data, at + 5, 2), _be(data, at + 7, 2)
            return ("image/jpeg", width, height) if width and height else None
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            return None
        at += 2 + length
    return None


def _webp(data: bytes) -> tuple[str, int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return "image/webp", _le(data, 24, 3) + 1, _le(data, 27, 3) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return "image/webp", _le(data, 26, 2) & 0x3FFF, _le(data, 28, 2) & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = _le(data, 21, 4)
        return "image/webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None
