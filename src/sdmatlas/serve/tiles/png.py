"""Palette PNGs, written directly and deflated with ISA-L.

Every PNG tile is a palette image (one byte a pixel, the palette's alpha in ``tRNS``).
Two costs of writing them with Pillow (measured on 400 tiles of a dense species seeded
at zooms 5-13, 2-core VM, 2026-12-03):

* **zlib.** Pillow deflates with zlib; at level 1 that took ~130 us a tile for ~1,340
  bytes. Intel's ISA-L (``isal``, a zlib-compatible deflate with SIMD) at its level 1
  took ~20 us for ~940 bytes: 6x faster and 30 % smaller. A PNG's data is a plain zlib
  stream, so any decoder reads it (``tests/test_serve.py`` decodes them with Pillow;
  the OGC tests read the API's tiles with GDAL). zlib's level 6 made ~530 bytes in
  ~315 us: a seed of millions of tiles is bound by its CPU, so the faster one is used.
* **Pillow itself.** Around the encoder it builds an ``Image``, copies the palette in,
  looks up the plugin and writes through Python file objects: ~0.06 ms a tile.

The chunks are Pillow's (unfiltered rows, as Pillow writes palette images; ``IDAT``
chunks of 64 KiB): with zlib's stream (:func:`zlib_deflate`) the bytes are Pillow's,
which the tests check, so that only the deflate differs from the library's PNGs.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from isal import isal_zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
IDAT_BYTES = 65536  # Pillow's ImageFile.MAXBLOCK: one IDAT chunk per encoder buffer


def isal_deflate(data: bytes | memoryview) -> bytes:
    """The tiles' deflate: ISA-L at its level 1 (a zlib stream)."""
    return isal_zlib.compress(data, 1)


def zlib_deflate(level: int = 1) -> Callable[[bytes | memoryview], bytes]:
    """zlib's deflate as Pillow calls it (``deflateInit2``: window 15, memory level 9),
    at ``level``: with it :func:`palette_png` writes Pillow's bytes (the reference)."""

    def deflate(data: bytes | memoryview) -> bytes:
        z = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, 9)
        return z.compress(data) + z.flush()

    return deflate


def chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, tag, data, CRC-32 of tag and data."""
    crc = zlib.crc32(data, zlib.crc32(tag))
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def palette_png(
    indices: npt.NDArray[np.uint8],
    palette: npt.NDArray[np.uint8],
    deflate: Callable[[bytes | memoryview], bytes] = isal_deflate,
) -> bytes:
    """An 8-bit palette PNG of ``indices`` (h x w) with ``palette`` (256 x RGBA: colours
    in ``PLTE``, alpha in ``tRNS``)."""
    h, w = indices.shape
    rows = np.empty((h, w + 1), np.uint8)
    rows[:, 0] = 0  # filter type 0 (none) on every row
    rows[:, 1:] = indices
    data = deflate(rows.data)
    size = max(IDAT_BYTES, w * 4)  # Pillow's buffer: its width in RGBA bytes if larger
    parts = [
        SIGNATURE,
        chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)),  # 8 bits, palette
        chunk(b"PLTE", np.ascontiguousarray(palette[:, :3]).tobytes()),
        chunk(b"tRNS", np.ascontiguousarray(palette[:, 3]).tobytes()),
    ]
    parts += [chunk(b"IDAT", data[i : i + size]) for i in range(0, len(data), size)]
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)
