"""A small PNG the echo bot sends when asked for a picture, drawn in code (no image library)."""

from __future__ import annotations

import functools
import struct
import zlib

WIDTH = 320
HEIGHT = 200


def _chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def encode_png(width: int, height: int, rows: list[bytes]) -> bytes:
    """An 8-bit RGB PNG from ``height`` rows of ``3 * width`` bytes each."""
    if len(rows) != height or any(len(row) != 3 * width for row in rows):
        raise ValueError("rows do not match the size")
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 on every row
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def _pixel(x: int, y: int) -> tuple[int, int, int]:
    """A sky fading to the horizon, a sun, and green hills."""
    sun_x, sun_y, sun_r = 230, 70, 34
    if (x - sun_x) ** 2 + (y - sun_y) ** 2 <= sun_r**2:
        return 255, 214, 10
    hill = 150 + int(144 * (x / WIDTH - 0.45) ** 2)
    if y >= hill:
        shade = min(40, (y - hill) // 2)
        return 40, 160 - shade, 80
    fade = y / HEIGHT
    return int(29 + 120 * fade), int(155 + 60 * fade), 240


@functools.cache
def sandbox_picture() -> bytes:
    """The echo bot's picture: 320x200, a few kilobytes, the same bytes every time."""
    rows = [bytes(channel for x in range(WIDTH) for channel in _pixel(x, y)) for y in range(HEIGHT)]
    return encode_png(WIDTH, HEIGHT, rows)
