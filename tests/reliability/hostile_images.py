"""Hostile image files, built in memory without ever holding their decoded pixels.

Run as a script (``python -m tests.reliability.hostile_images``) it feeds each to the
dashboard's upload parser and prints, as JSON, the outcome and time of each and the
process's peak memory: the memory bound is measured in a fresh process.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

DIGITS_PREPROCESSING = {"kind": "image", "channels": 1, "height": 8, "width": 8, "ink": "light", "scale": 1.0}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int, bit_depth: int = 1, color_type: int = 0, rows: bool = True, extra=b"") -> bytes:
    """A PNG of ``width x height``; with ``rows`` its IDAT really holds every (zero) row, compressed."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    row_bytes = 1 + (width * bit_depth * {0: 1, 2: 3}[color_type] + 7) // 8
    if rows:
        compressor = zlib.compressobj(9)
        row = bytes(row_bytes)
        idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    else:
        idat = zlib.compress(bytes(row_bytes * 4))  # a few rows only: truncated data
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def ztxt_bomb() -> bytes:
    """A small PNG with a compressed text chunk that inflates to 64 MB."""
    compressor = zlib.compressobj(9)
    text = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(64)) + compressor.flush()
    return png(8, 8, extra=_chunk(b"zTXt", b"Comment\x00\x00" + text))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose frame header is patched to claim ``width x height``."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def good_png(size: int = 28) -> bytes:
    image = Image.new("L", (size, size), 255)
    for i in range(4, size - 4):
        image.putpixel((size // 2, i), 0)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def good_jpeg(size: int = 28) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(good_png(size))).save(buffer, "JPEG")
    return buffer.getvalue()


def cases() -> dict[str, bytes]:
    """Name -> file bytes of every hostile image."""
    return {
        "PNG bomb 20000x20000 (real pixel data)": png(20_000, 20_000),
        "PNG header 20000x20000 RGB, truncated data": png(20_000, 20_000, bit_depth=8, color_type=2, rows=False),
        "PNG 5000x5000 (over the pixel limit, under Pillow's)": png(5_000, 5_000, bit_depth=8),
        "JPEG claiming 20000x20000": jpeg_claiming(20_000, 20_000),
        "JPEG claiming 65535x65535": jpeg_claiming(65_535, 65_535),
        "PNG with a 64 MB zTXt text bomb": ztxt_bomb(),
        "PNG cut after its header": good_png()[:60],
        "JPEG cut in half": good_jpeg()[: len(good_jpeg()) // 2],
        "PNG 4096x4096 RGB, at the pixel limit": png(4_096, 4_096, bit_depth=8, color_type=2),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process image in MB (Linux ``VmHWM``).

    Not ``getrusage``: on Linux its ``ru_maxrss`` survives ``exec``, so a process
    started by a big parent (pytest) would report the parent's peak.
    """
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    import json
    import time

    from dashboard.inputs import InputError, image_to_model_input

    results = {}
    for name, data in cases().items():
        start = time.perf_counter()
        try:
            image_to_model_input("upload.png", data, DIGITS_PREPROCESSING)
            outcome = "ACCEPTED"
        except InputError as err:
            outcome = str(err)
        results[name] = {"bytes": len(data), "outcome": outcome, "seconds": time.perf_counter() - start}
    peak_mb = peak_rss_mb()
    print(json.dumps({"results": results, "peak_mb": peak_mb}))


if __name__ == "__main__":
    main()
