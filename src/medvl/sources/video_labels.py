"""Annotation readers of the ``video`` source: segment table cells and the Cholec80 phase/tool files.

Cholec80 (Twinanda et al., 2016), as released: ``phase_annotations/videoNN-phase.txt`` is tab-separated with
the header ``Frame<TAB>Phase`` and one row per frame of the 25 fps video (frame numbers from 0, contiguous),
phases named ``Preparation``, ``CalotTriangleDissection``, ``ClippingCutting``, ``GallbladderDissection``,
``GallbladderPackaging``, ``CleaningCoagulation``, ``GallbladderRetraction``.
``tool_annotations/videoNN-tool.txt`` has the header ``Frame<TAB>Grasper<TAB>Bipolar<TAB>Hook<TAB>Scissors
<TAB>Clipper<TAB>Irrigator<TAB>SpecimenBag`` and one row per second (frames 0, 25, 50, ...), 1 = tool visible."""

from __future__ import annotations

import bisect
import math
from pathlib import Path
from typing import Callable

Segment = tuple[float, float, str]  # (start_s, end_s, label), end excluded


def segment_rows(start: str, end: str, unit: str) -> tuple[tuple[float, float] | None, str]:
    """A segment table row's start/end cells -> ((start, end), "") in the table's unit, or (None, problem).
    Frame numbers must be whole numbers >= 0 with end >= start (both included); seconds need end > start."""
    try:
        s, e = float(start.strip()), float(end.strip())
    except ValueError:
        return None, f"start {start.strip()!r} / end {end.strip()!r} are not numbers"
    if not (math.isfinite(s) and math.isfinite(e)) or s < 0:
        return None, f"segment [{s}, {e}] is not a range of times >= 0"
    if unit == "frames":
        if s != int(s) or e != int(e):
            return None, f"frame range [{start.strip()}, {end.strip()}] is not whole frame numbers"
        if e < s:
            return None, f"frame range [{int(s)}, {int(e)}] ends before it starts"
        return (int(s), int(e)), ""
    if e <= s:
        return None, f"segment [{s}, {e}) s is empty (end not after start)"
    return (s, e), ""


def _rows(path: Path, columns: int) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows of a tab-separated annotation file; ValueError naming the file."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path.name}: cannot read ({e})") from None
    body = [(i + 1, ln.split("\t")) for i, ln in enumerate(lines) if ln.strip()]
    if not body:
        raise ValueError(f"{path.name}: empty annotation file")
    (_, header), rows = body[0], body[1:]
    header = [h.strip() for h in header]
    if header[0].lower() != "frame" or len(header) < columns:
        raise ValueError(f"{path.name}: expected a tab-separated header starting 'Frame' with at least {columns} "
                         f"columns, got {header!r}")
    for line, cells in rows:
        if len(cells) != len(header):
            raise ValueError(f"{path.name} line {line}: {len(cells)} cells, header has {len(header)}")
        if not cells[0].strip().isdigit():
            raise ValueError(f"{path.name} line {line}: frame {cells[0].strip()!r} is not a frame number")
    if not rows:
        raise ValueError(f"{path.name}: no annotation rows")
    return header, rows


def cholec80_segments(phase: Path, tool: Path | None, fps: float, label_map: dict[str, str]
                      ) -> tuple[list[Segment], Callable[[float], list[str]] | None]:
    """Runs of one phase in a ``videoNN-phase.txt`` -> segments in seconds (frame f covers [f/fps, (f+1)/fps)),
    and, with a ``videoNN-tool.txt``, a function time -> the tools visible (the latest tool row at or before the
    frame). ValueError naming the file and line for a malformed file."""
    _, rows = _rows(phase, 2)
    segments: list[Segment] = []
    run_start = prev = None
    run_label = ""
    for line, cells in rows:
        f, label = int(cells[0]), cells[1].strip()
        if not label:
            raise ValueError(f"{phase.name} line {line}: empty phase")
        label = label_map.get(label, label)
        if prev is not None and f <= prev:
            raise ValueError(f"{phase.name} line {line}: frame {f} is not after frame {prev}")
        if run_start is None or label != run_label or f != prev + 1:
            if run_start is not None:
                segments.append((run_start / fps, (prev + 1) / fps, run_label))
            run_start, run_label = f, label
        prev = f
    segments.append((run_start / fps, (prev + 1) / fps, run_label))
    if tool is None:
        return segments, None
    header, trows = _rows(tool, 2)
    names = header[1:]
    frames, present = [], []
    for line, cells in trows:
        flags = [c.strip() for c in cells[1:]]
        if any(x not in ("0", "1") for x in flags):
            raise ValueError(f"{tool.name} line {line}: tool flags must be 0 or 1, got {flags}")
        f = int(cells[0])
        if frames and f <= frames[-1]:
            raise ValueError(f"{tool.name} line {line}: frame {f} is not after frame {frames[-1]}")
        frames.append(f)
        present.append([label_map.get(n, n) for n, x in zip(names, flags) if x == "1"])

    def tools_at(t: float) -> list[str]:
        i = bisect.bisect_right(frames, round(t * fps)) - 1
        return list(present[i]) if i >= 0 else []

    return segments, tools_at
