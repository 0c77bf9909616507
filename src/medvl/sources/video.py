"""Video clips split into frames (GMAI-VL: "videos are split into frames"): endoscopy, surgery, ultrasound.

Where the labels come from (``options.labels``):

- ``folder``: ``root/<label>/<clip>`` (clips nested deeper keep their label folder); one label per clip.
- ``csv``: a table of clip -> label (``clip_column``, ``label_column``, optional ``patient_column``).
- ``segments``: a table of annotated segments, one row per segment: clip, label, start, end; times in
  seconds (``time_unit: seconds``, the segment is [start, end)) or frame numbers (``time_unit: frames``,
  both ends included, counted from 0 at ``annotation_fps``, default the clip's own rate).
- ``cholec80``: the published Cholec80 layout: ``videos/videoNN.mp4``, ``phase_annotations/videoNN-phase.txt``
  (tab-separated, header ``Frame<TAB>Phase``, one row per frame of the 25 fps video, frames from 0) and
  ``tool_annotations/videoNN-tool.txt`` (header ``Frame<TAB>Grasper<TAB>Bipolar<TAB>Hook<TAB>Scissors<TAB>
  Clipper<TAB>Irrigator<TAB>SpecimenBag``, one row per second: frames 0, 25, 50, ...; 0/1 per tool). Runs of one
  phase are the segments; with ``tool_labels`` the tools present (their latest row at or before the frame)
  are labels too. Videos without a phase file are rejects (the public release lacks a few).

Which frames (``options.policy``): ``every_seconds`` (t = 0, N, 2N, ... before the clip's end),
``per_clip`` (K frames at the centres of K equal parts of the clip) or ``per_segment`` (K frames at the
centres of K equal parts of each annotated segment). A clip with fewer frames than asked gives each of its
frames once; a clip shorter than ``min_duration_s`` is a filter reject. A sampled frame that is
near-identical to the previous kept frame of the same label (``skip_similar``: mean absolute difference of
64x64 grayscale copies <= ``max_mean_abs_diff``, or pHash distance <= ``max_phash_distance``) is a filter
reject naming the clip, the time and the frame it repeats.

Each kept frame is an ordinary item: ``source_file`` = the clip, ``slice`` = ``{"frame": n, "time_s": t}``
(+ ``"of"``: the clip's frame count when the header gives it), ``extra`` = clip fps and duration and, for
annotated clips, the segment ``[start_s, end_s]``. The modality is the recipe's. All frames of a clip are one
patient for splitting (the pipeline's default unit is the file), unless ``patient_column`` or the recipe's
``patient_pattern`` says otherwise. A clip that cannot be opened or decoded is a reject naming the file; one
that stops decoding early keeps the frames read before and rejects the rest with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

from pydantic import Field, model_validator

from medvl.core.ids import slice_suffix
from medvl.core.records import Reject
from medvl.io.video import (ClipInfo, VideoBackendMissing, VideoReadError, frame_difference, is_probably_video,
                            probe, read_frames, require_av)
from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit
from medvl.sources.csv_labels import TableError, column_index, read_table
from medvl.sources.video_labels import Segment, cholec80_segments, segment_rows


class VideoOptions(SourceOptions):
    """Options of the ``video`` source."""

    labels: Literal["folder", "csv", "segments", "cholec80"] = Field(
        "folder", description="where labels come from: 'folder' (root/<label>/<clip>), 'csv' (clip -> label table), "
        "'segments' (table of clip, label, start, end), 'cholec80' (videos/, phase_annotations/, tool_annotations/)")
    videos_dir: str | None = Field(None, description="folder of the clips, relative to the source path (default: "
                                   "'videos' for cholec80, else the source path itself)")
    csv: str | None = Field(None, description="the label or segment table (labels csv/segments), relative to the "
                            "source path; .tsv/.tab = tabs")
    delimiter: str | None = Field(None, description="cell delimiter; null = tab for .tsv/.tab files, else comma")
    clip_column: str = Field("clip", description="column with the clip's path relative to videos_dir")
    label_column: str = Field("label", description="column with the label (clip or segment)")
    patient_column: str | None = Field(None, description="column with the patient id (hashed, never stored); "
                                       "null = each clip is its own patient")
    start_column: str = Field("start", description="segments: column with the segment start")
    end_column: str = Field("end", description="segments: column with the segment end")
    time_unit: Literal["seconds", "frames"] = Field(
        "seconds", description="segments: start/end in seconds ([start, end)) or frame numbers (both included)")
    annotation_fps: float | None = Field(None, gt=0, description="frame rate of frame-numbered annotations "
                                         "(default: 25 for cholec80, else the clip's own rate)")
    phase_dir: str = Field("phase_annotations", description="cholec80: folder of the videoNN-phase.txt files")
    tool_dir: str = Field("tool_annotations", description="cholec80: folder of the videoNN-tool.txt files")
    tool_labels: bool = Field(False, description="cholec80: add the tools present in a frame to its labels "
                              "(a clip without a tool file is then a reject)")
    policy: Literal["every_seconds", "per_clip", "per_segment"] = Field(
        "every_seconds", description="frame sampling: one every `every_seconds`, `frames_per_clip` evenly spaced, or "
        "`frames_per_segment` evenly spaced in each annotated segment (labels segments/cholec80)")
    every_seconds: float = Field(1.0, gt=0, description="every_seconds: seconds between sampled frames")
    frames_per_clip: int = Field(8, ge=1, description="per_clip: frames per clip")
    frames_per_segment: int = Field(3, ge=1, description="per_segment: frames per annotated segment")
    skip_similar: Literal["mean_abs_diff", "phash", "none"] = Field(
        "mean_abs_diff", description="drop a sampled frame near-identical to the previous kept frame of its clip "
        "and label: by mean absolute grey difference, by pHash distance, or never")
    max_mean_abs_diff: float = Field(3.0, ge=0, description="mean_abs_diff: frames differing by at most this many "
                                     "grey levels (0-255, 64x64 grayscale) are near-identical")
    max_phash_distance: int = Field(2, ge=0, le=64, description="phash: frames within this pHash Hamming distance "
                                    "are near-identical")
    min_duration_s: float = Field(0.0, ge=0, description="clips shorter than this many seconds are rejects (filter)")
    seek_gap_s: float = Field(5.0, gt=0, description="seek instead of decoding forward when the next sampled time "
                              "is more than this many seconds ahead")

    @model_validator(mode="after")
    def _consistent(self) -> "VideoOptions":
        if self.labels in ("csv", "segments") and not self.csv:
            raise ValueError(f"labels {self.labels!r} needs options.csv (the table)")
        if self.policy == "per_segment" and self.labels not in ("segments", "cholec80"):
            raise ValueError("policy 'per_segment' needs annotated segments (labels 'segments' or 'cholec80')")
        return self


@dataclass
class _Target:
    t: float
    segment: Segment | None  # (start_s, end_s, label) it was drawn from (per_segment)


@SOURCES.register("video")
class VideoSource(Source):
    """One unit per clip; its sampled frames are the items."""

    task = "cls"
    Options = VideoOptions
    opts: VideoOptions

    def labels_exhaustive(self) -> bool:
        return True  # one label (phase, class) per frame; cholec80 tools are all annotated

    @property
    def videos_base(self) -> Path:
        d = self.opts.videos_dir
        return self.root / (d if d is not None else ("videos" if self.opts.labels == "cholec80" else ""))

    def _label(self, raw: str) -> str:
        raw = raw.strip()
        return self.cfg.label_map.get(raw, raw)

    # enumeration -----------------------------------------------------------------------------------
    def units(self) -> Iterator[Unit | Reject]:
        try:
            require_av()
        except VideoBackendMissing as e:
            yield self.reject(".", f"{self.root}: {e}")
            return
        base = self.videos_base
        if not base.is_dir():
            yield self.reject(".", f"{base}: folder of video clips not found")
            return
        if self.opts.labels == "folder":
            yield from self._folder_units(base)
        elif self.opts.labels == "cholec80":
            yield from self._cholec80_units(base)
        else:
            yield from self._table_units()

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()

    def _walk(self, folder: Path) -> Iterator[Path | Reject]:
        """Every clip under ``folder`` (sorted), rejects for hidden, non-video and escaping entries."""
        for entry in sorted(folder.iterdir()):
            rel = self._rel(entry)
            if entry.name.startswith("."):
                yield self.reject(rel, f"{rel}: hidden {'folder' if entry.is_dir() else 'file'} skipped")
            elif not self.inside_root(entry) or (entry.is_dir() and entry.is_symlink()):
                yield self.reject(rel, f"{rel}: symlink not followed (it leaves the dataset folder or may loop)")
            elif entry.is_dir():
                yield from self._walk(entry)
            elif not is_probably_video(entry):
                yield self.reject(rel, f"{rel}: not a video file ({entry.suffix or '(no extension)'})")
            else:
                yield entry

    def _folder_units(self, base: Path) -> Iterator[Unit | Reject]:
        for entry in sorted(base.iterdir()):
            rel = self._rel(entry)
            if entry.name.startswith("."):
                yield self.reject(rel, f"{rel}: hidden {'folder' if entry.is_dir() else 'file'} skipped")
            elif entry.is_symlink() or not self.inside_root(entry):
                yield self.reject(rel, f"{rel}: symlink not followed (it leaves the dataset folder or may loop)")
            elif entry.is_dir():
                label = self._label(entry.name)
                for clip in self._walk(entry):
                    yield clip if isinstance(clip, Reject) else Unit(key=self._rel(clip), payload={"labels": [label]})
            else:
                yield self.reject(rel, f"{rel}: file is not inside a label folder, so it has no label")

    def _cholec80_units(self, base: Path) -> Iterator[Unit | Reject]:
        phase_dir, tool_dir = self.root / self.opts.phase_dir, self.root / self.opts.tool_dir
        for clip in self._walk(base):
            if isinstance(clip, Reject):
                yield clip
                continue
            rel = self._rel(clip)
            phase = phase_dir / f"{clip.stem}-phase.txt"
            tool = tool_dir / f"{clip.stem}-tool.txt"
            if not phase.is_file():
                yield self.reject(rel, f"{rel}: no phase annotation file {self._rel(phase)}")
            elif self.opts.tool_labels and not tool.is_file():
                yield self.reject(rel, f"{rel}: no tool annotation file {self._rel(tool)} (options.tool_labels)")
            else:
                yield Unit(key=rel, payload={"phase": self._rel(phase),
                                             "tool": self._rel(tool) if self.opts.tool_labels else None})

    def _table_units(self) -> Iterator[Unit | Reject]:
        table, o = str(self.opts.csv), self.opts
        try:
            header, rows = read_table(self.root / table, o.delimiter)
            cols = {"clip": column_index(header, o.clip_column, table),
                    "label": column_index(header, o.label_column, table)}
            if o.patient_column:
                cols["patient"] = column_index(header, o.patient_column, table)
            if o.labels == "segments":
                cols["start"] = column_index(header, o.start_column, table)
                cols["end"] = column_index(header, o.end_column, table)
        except TableError as e:
            yield self.reject(table, str(e))
            return
        clips: dict[str, dict] = {}
        for line, cells in rows:
            where = f"{table}#row{line}"
            if len(cells) <= max(cols.values()):
                yield self.reject(where, f"{table} row {line}: expected at least {max(cols.values()) + 1} columns, "
                                         f"got {len(cells)}", stage="validate")
                continue
            key, problem = self._resolve(cells[cols["clip"]])
            if key is None:
                yield self.reject(where, f"{table} row {line}: {problem}")
                continue
            label = self._label(cells[cols["label"]])
            if not label:
                yield self.reject(where, f"{table} row {line}: {key} has an empty label", stage="validate")
                continue
            patient = cells[cols["patient"]].strip() or None if "patient" in cols else None
            entry = clips.setdefault(key, {"labels": [label], "patient": patient, "rows": [], "first": line})
            if o.labels == "csv":
                if entry["first"] != line:
                    yield self.reject(where, f"{table} row {line}: {key} already listed in row {entry['first']}",
                                      stage="validate")
                continue
            seg, problem = segment_rows(cells[cols["start"]], cells[cols["end"]], o.time_unit)
            if seg is None:
                yield self.reject(where, f"{table} row {line}: {key}: {problem}", stage="validate")
                continue
            entry["rows"].append([*seg, label])
        for key in sorted(clips, key=lambda k: k.split("/")):
            e = clips[key]
            payload = {"labels": e["labels"], "patient": e["patient"]}
            if o.labels == "segments":
                if not e["rows"]:
                    continue  # every row of the clip was rejected above
                payload = {"segments": sorted(e["rows"]), "patient": e["patient"]}
            yield Unit(key=key, payload=payload)

    def _resolve(self, cell: str) -> tuple[str | None, str | None]:
        cell = cell.strip()
        if not cell:
            return None, "empty clip path"
        path = self.videos_base / cell
        if not self.inside_root(path):
            return None, f"clip {cell!r}: path escapes the dataset folder"
        if not path.is_file():
            return None, f"clip {cell!r}: file not found"
        return self.rel(path), None

    # loading ---------------------------------------------------------------------------------------
    def load(self, unit: Unit) -> Iterator[Item | Reject]:
        key, p, o = unit.key, unit.payload, self.opts
        try:
            info = probe(self.root / key)
        except VideoReadError as e:
            yield self.reject(key, f"{key}: {e.problem}")
            return
        if info.duration_s < o.min_duration_s:
            yield self.reject(key, f"{key}: clip is {info.duration_s:.3f} s, shorter than options.min_duration_s="
                                   f"{o.min_duration_s}", stage="filter")
            return
        tools = None
        if "phase" in p:
            try:
                segments, tools = cholec80_segments(self.root / p["phase"], self.root / p["tool"] if p["tool"] else
                                                    None, o.annotation_fps or 25.0, self.cfg.label_map)
            except ValueError as e:
                yield self.reject(key, f"{key}: {e}")
                return
        elif "segments" in p:
            fps = o.annotation_fps or info.fps
            segments = [(s, e, lb) if o.time_unit == "seconds" else (s / fps, (e + 1) / fps, lb)
                        for s, e, lb in p["segments"]]
        else:
            segments = None
        if segments is not None:
            late = [s for s in segments if s[0] >= info.duration_s]
            for s, e, lb in late:
                yield self.reject(f"{key}@{s:.3f}s", f"{key}: segment {lb!r} [{s:.3f}, {e:.3f}) s starts after the "
                                                     f"clip ends ({info.duration_s:.3f} s)", stage="validate")
            segments = [s for s in segments if s[0] < info.duration_s]
        targets = self._targets(info.duration_s, segments)
        yield from self._frames(unit, info, targets, segments, tools)

    def _targets(self, duration: float, segments: list[Segment] | None) -> list[_Target]:
        """The sampled times of a clip under ``options.policy`` (each with its segment for per_segment)."""
        o = self.opts
        if o.policy == "every_seconds":
            n = max(1, int(duration / o.every_seconds - 1e-9) + 1)
            return [_Target(round(k * o.every_seconds, 6), None) for k in range(n)
                    if k == 0 or k * o.every_seconds < duration]
        if o.policy == "per_clip":
            k = o.frames_per_clip
            return [_Target((i + 0.5) * duration / k, None) for i in range(k)]
        out = []
        for s, e, lb in segments or []:
            e = min(e, duration)
            k = o.frames_per_segment
            out += [_Target(s + (i + 0.5) * (e - s) / k, (s, e, lb)) for i in range(k)]
        return out

    def _frames(self, unit: Unit, info: ClipInfo, targets: list[_Target], segments: list[Segment] | None,
                tools: Callable[[float], list[str]] | None) -> Iterator[Item | Reject]:
        """Decode the sampled frames of one clip -> items, and rejects for skipped, missing or unlabelled ones."""
        key, o = unit.key, self.opts
        by_time: dict[float, list[_Target]] = {}
        for tg in targets:
            by_time.setdefault(tg.t, []).append(tg)
        seen: set[int] = set()
        kept_ref: dict[str, tuple[float, object]] = {}  # label -> (time, fingerprint) of its last kept frame
        outside = 0
        done: set[float] = set()
        try:
            for t, fr in read_frames(self.root / key, sorted(by_time), o.seek_gap_s):
                done.add(t)
                if fr.index in seen:
                    continue  # a short clip or segment: two sampled times fall on one frame
                seen.add(fr.index)
                seg = by_time[t][0].segment or _segment_at(segments, fr.time_s)
                if segments is not None and seg is None:
                    outside += 1
                    continue
                labels = [seg[2]] if seg else list(unit.payload["labels"])
                ref_key = labels[0]
                sl = {"frame": fr.index, "time_s": round(fr.time_s, 3)}
                if info.frames:
                    sl["of"] = info.frames
                fp = self._fingerprint(fr.array)
                prev = kept_ref.get(ref_key)
                if prev is not None and self._similar(prev[1], fp):
                    yield self.reject(key + slice_suffix(sl), f"{key}: frame at {fr.time_s:.3f} s is near-identical to the kept frame at "
                                          f"{prev[0]:.3f} s (options.skip_similar={o.skip_similar})", stage="filter")
                    continue
                kept_ref[ref_key] = (fr.time_s, fp)
                if tools is not None:
                    labels += tools(fr.time_s)
                extra = {"clip_fps": round(info.fps, 3), "clip_duration_s": round(info.duration_s, 3)}
                if seg:
                    extra["segment_s"] = [round(seg[0], 3), round(seg[1], 3)]
                yield Item(array=fr.array, source_file=key, patient_raw=unit.payload.get("patient"), labels=labels,
                           slice=sl, extra=extra)
        except VideoReadError as e:
            missing = len(set(by_time) - done)
            yield self.reject(key, f"{key}: {e.problem}; {missing} of {len(by_time)} sampled frames not read")
            return
        missing = sorted(set(by_time) - done)
        if missing:
            yield self.reject(f"{key}@{missing[0]:.3f}s", f"{key}: no frame at {len(missing)} sampled time(s) from "
                                                          f"{missing[0]:.3f} s on: the clip ends before its header's "
                                                          f"duration ({info.duration_s:.3f} s; a truncated file?)")
        if outside:
            yield self.reject(key, f"{key}: {outside} sampled frame(s) fall in no annotated segment", stage="filter")

    def _fingerprint(self, array) -> object:
        if self.opts.skip_similar == "phash":
            from medvl.curate.phash import perceptual_hashes

            return perceptual_hashes(array)[0]
        return array if self.opts.skip_similar == "mean_abs_diff" else None

    def _similar(self, a: object, b: object) -> bool:
        o = self.opts
        if o.skip_similar == "none":
            return False
        if o.skip_similar == "phash":
            from medvl.curate.phash import hamming

            return a is not None and b is not None and hamming(a, b) <= o.max_phash_distance
        return frame_difference(a, b) <= o.max_mean_abs_diff


def _segment_at(segments: list[Segment] | None, t: float) -> Segment | None:
    """The annotated segment whose [start, end) holds time ``t`` (the first one when several overlap)."""
    for s in segments or []:
        if s[0] <= t + 1e-6 and t < s[1] - 1e-6:
            return s
    return None
