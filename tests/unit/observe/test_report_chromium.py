"""The HTML report rendered by a real headless Chromium (Debian package ``chromium``): the
screenshot shows the RPO line and one red mark per failure; the DOM has the page's content."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from pverep.observe import report
from pverep.observe.history import RunRecord

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium missing")

NOW = 1_704_068_200
LINE = (0x15, 0x65, 0xC0)  # report.py's RPO polyline
MARK = (0xD3, 0x2F, 0x2F)  # report.py's failure circles


def _runs(failing: set[int]) -> list[RunRecord]:
    return [
        RunRecord(
            "100-0",
            100,
            "pve2",
            "pve1",
            NOW + 900.0 * n,
            NOW + 900.0 * n + 20,
            "error" if n in failing else "ok",
            "No route to host" if n in failing else None,
            ({"volid": "local-zfs:vm-100-disk-0", "mode": "incremental", "bytes": 1000},),
        )
        for n in range(30)
    ]


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu"]
    argv += [f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)


def _pixels(png: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = bpp = 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and color in (2, 6) and data[12] == 0
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += data
    raw, stride, prev = zlib.decompress(idat), width * bpp, bytearray(width * bpp)
    out: list[tuple[int, int, int]] = []
    for y in range(height):
        ftype, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        out += [tuple(line[x * bpp : x * bpp + 3]) for x in range(width)]  # type: ignore[misc]
        prev = line
    return width, height, out


def _count(pixels: list[tuple[int, int, int]], rgb: tuple[int, int, int]) -> int:
    return sum(1 for p in pixels if all(abs(p[i] - rgb[i]) <= 12 for i in range(3)))


def _screenshot(tmp: Path, page: str) -> tuple[int, int, list[tuple[int, int, int]]]:
    html = tmp / "report.html"
    html.write_text(page)
    shot = tmp / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=900,700", html.as_uri(), tmp=tmp)
    return _pixels(shot.read_bytes())


def test_screenshot_shows_the_rpo_line_and_each_failure(tmp_path: Path) -> None:
    width, height, pixels = _screenshot(tmp_path, report.render(_runs({3, 10, 17}), NOW + 27000))
    assert (width, height) == (900, 700)
    assert _count(pixels, LINE) > 500  # the sawtooth: 30 runs across 640 px
    marks = _count(pixels, MARK)
    assert marks > 3 * 40  # three filled circles of radius 5
    _, _, clean = _screenshot(tmp_path, report.render(_runs(set()), NOW + 27000))
    assert _count(clean, MARK) == 0 and _count(clean, LINE) > 500


def test_the_rendered_dom_has_the_guest_job_and_failures(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    html.write_text(report.render(_runs({3, 10}), NOW + 27000))
    dom = _chromium("--dump-dom", html.as_uri(), tmp=tmp_path).stdout
    assert "guest 100" in dom and "job 100-0 → pve2" in dom
    assert dom.count('class="failure"') == 2 and dom.count("No route to host") >= 2
    assert "30 runs" in dom and "2 failed" in dom
