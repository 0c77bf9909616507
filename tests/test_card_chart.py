"""The card's bar charts (Pillow-drawn PNGs): deterministic, one bar per row, bar lengths proportional to counts."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from medvl.export.card import _nice_step, bar_png

BAR = (0x4C, 0x72, 0xB0)


def _bars(png: bytes) -> list[int]:
    """Length in pixels of each bar, top to bottom (runs of rows holding the bar colour)."""
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    hit = (np.abs(a - np.array(BAR)).sum(axis=2) == 0)
    rows = hit.sum(axis=1)
    out, inside = [], False
    for n in rows:
        if n and not inside:
            out.append(int(n))
        inside = bool(n)
    return out


def test_chart_bars_are_proportional_and_bytes_repeat() -> None:
    rows = [["pathology", 1200, "80%"], ["fundus photography", 300, "20%"], ["CT", 600, "40%"], ["MR", 0, "0%"]]
    png = bar_png("Records by modality", rows)
    assert png == bar_png("Records by modality", rows)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width == 640 and not img.info.get("Software")
    lengths = _bars(png)
    assert len(lengths) == 3  # the zero row draws no bar
    assert abs(lengths[1] / lengths[0] - 0.25) < 0.01 and abs(lengths[2] / lengths[0] - 0.5) < 0.01
    assert bar_png("Records by modality", rows[:2]) != png


def test_chart_height_grows_with_rows_and_axis_steps() -> None:
    small = Image.open(io.BytesIO(bar_png("t", [["a", 1, ""]])))
    big = Image.open(io.BytesIO(bar_png("t", [[f"k{i}", i + 1, ""] for i in range(20)])))
    assert big.height > small.height + 19 * 20
    assert [_nice_step(n) for n in (1, 6, 7, 13, 1200, 99_999)] == [1, 1, 2, 5, 200, 20_000]
