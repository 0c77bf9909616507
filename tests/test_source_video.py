"""The ``video`` source on clips written here with PyAV from real pip-shipped images: a pan across the fundus
photograph (skimage ``retina``) and a sweep through the MNI152 T1 volume (nilearn), in mp4/h264, mp4/mpeg4,
mkv/ffv1 and avi/mjpeg. A sampled frame must be the frame written at its time (pixels compared), policies
give the expected times, repeated frames are skipped, Cholec80 phase/tool files label frames, bad clips are
rejects naming the file, and a build keeps the frames of one clip in one split."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from medvl.io.video import VideoReadError, frame_difference, probe, read_frames, write_clip  # noqa: E402
from medvl.sources.base import SOURCES  # noqa: E402
from medvl.sources.config import SourceConfig  # noqa: E402
from source_helpers import run_source  # noqa: E402

FPS = 10
CODECS = {  # suffix -> (codec, pixel format, encoder options)
    "mp4": ("libx264", "yuv420p", {"crf": "12", "g": "12"}),
    "m4v": ("mpeg4", "yuv420p", {"b": "4M"}),
    "mkv": ("ffv1", "yuv444p", None),
    "avi": ("mjpeg", "yuvj444p", {"b": "20M"}),  # a high fixed rate: repeated frames stay identical
}


def retina_pan(n: int = 30, side: int = 96) -> list[np.ndarray]:
    """A camera panning right across the fundus photograph: frame k is the window at x = 6k."""
    from skimage.data import retina

    img = np.asarray(Image.fromarray(retina()).resize((384, 384), Image.Resampling.LANCZOS))
    y0 = 384 // 2 - side // 2
    return [np.ascontiguousarray(img[y0:y0 + side, 6 * k:6 * k + side]) for k in range(n)]


def mni_sweep(n: int = 32) -> list[np.ndarray]:
    """An axial sweep through the MNI152 T1 template: frame k is axial slice 12 + 2k, as 8-bit grey RGB."""
    from nilearn.datasets import load_mni152_template

    vol = load_mni152_template(resolution=2).get_fdata()  # (99, 117, 95)
    vol = np.clip(vol / np.percentile(vol, 99.5) * 255, 0, 255).astype(np.uint8)
    out = []
    for k in range(n):
        sl = np.rot90(vol[:, :, 12 + 2 * k])[:112, :96]  # even sizes for 4:2:0 codecs
        out.append(np.repeat(sl[:, :, None], 3, axis=2).copy())
    return out


def write(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    codec, pix, opts = CODECS[path.suffix.lstrip(".")]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_clip(path, frames, fps, codec, pix, opts)
    return path


def source(root: Path, **options):
    cfg = SourceConfig(name="vid", format="video", path=str(root), modality="endoscopy", options=options)
    return SOURCES.get("video")(cfg)


def best_match(array: np.ndarray, frames: list[np.ndarray]) -> tuple[int, float]:
    """Index of the written frame closest to ``array`` and the distance to it."""
    d = [frame_difference(array, f) for f in frames]
    return int(np.argmin(d)), float(min(d))


@pytest.fixture(scope="module")
def pan() -> list[np.ndarray]:
    return retina_pan()


@pytest.fixture(scope="module")
def sweep() -> list[np.ndarray]:
    return mni_sweep()


@pytest.mark.parametrize("suffix", list(CODECS))
def test_frame_at_time_is_the_frame_written_then(tmp_path, pan, sweep, suffix):
    for name, frames in (("pan", pan), ("sweep", sweep)):
        clip = write(tmp_path / f"{name}.{suffix}", frames)
        info = probe(clip)
        assert info.fps == FPS and abs(info.duration_s - len(frames) / FPS) < 1e-6
        times = [0.0, 0.7, 1.3, 2.9, 2.97]
        got = list(read_frames(clip, times, seek_gap_s=1.0))  # 1.3 -> 2.9 seeks
        assert [t for t, _ in got] == times
        for t, fr in got:
            # the nearest frame; past the last frame (2.97 s in the 3.0 s pan) the last one
            assert fr.index == min(round(t * FPS), len(frames) - 1) and abs(fr.time_s - fr.index / FPS) < 1e-6
            k, dist = best_match(fr.array, frames)
            assert k == fr.index, (name, suffix, t, k)
            assert dist < 8.0, (name, suffix, t, dist)  # compression noise; neighbours differ by 15-20
            assert fr.array.shape == frames[0].shape and fr.array.dtype == np.uint8


def test_every_seconds_and_per_clip_policies(tmp_path, pan, sweep):
    write(tmp_path / "fundus" / "pan.mp4", pan)  # 3.0 s
    write(tmp_path / "brain" / "sweep.mkv", sweep)  # 3.2 s
    (tmp_path / "brain" / "README.txt").write_text("notes")
    _, items, rejects = run_source(source(tmp_path, policy="every_seconds", every_seconds=0.5))
    by_clip = defaultdict(list)
    for it in items:
        by_clip[it.source_file].append(it)
    assert [i.slice["frame"] for i in by_clip["fundus/pan.mp4"]] == [0, 5, 10, 15, 20, 25]
    assert [i.slice["time_s"] for i in by_clip["brain/sweep.mkv"]] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert {tuple(i.labels) for i in by_clip["fundus/pan.mp4"]} == {("fundus",)}
    assert {tuple(i.labels) for i in by_clip["brain/sweep.mkv"]} == {("brain",)}
    it = by_clip["brain/sweep.mkv"][3]
    assert best_match(it.array, sweep)[0] == 15 and it.slice == {"frame": 15, "time_s": 1.5}
    assert it.extra == {"clip_fps": 10.0, "clip_duration_s": 3.2} and it.patient_raw is None
    assert by_clip["fundus/pan.mp4"][1].slice == {"frame": 5, "time_s": 0.5, "of": 30}
    assert [r.reason for r in rejects] == ["brain/README.txt: not a video file (.txt)"]

    _, items, _ = run_source(source(tmp_path, policy="per_clip", frames_per_clip=4))
    got = defaultdict(list)
    for it in items:
        got[it.source_file].append(it.slice["frame"])
        assert best_match(it.array, pan if "pan" in it.source_file else sweep)[0] == it.slice["frame"]
    # centres of 4 equal parts: 3 s -> 0.375, 1.125, 1.875, 2.625 s; 3.2 s -> 0.4, 1.2, 2.0, 2.8 s
    assert got == {"fundus/pan.mp4": [4, 11, 19, 26], "brain/sweep.mkv": [4, 12, 20, 28]}


def test_short_clip_gives_each_frame_once_and_min_duration(tmp_path, pan):
    write(tmp_path / "fundus" / "short.avi", pan[:3])  # 0.3 s, 3 frames
    _, items, rejects = run_source(source(tmp_path, policy="per_clip", frames_per_clip=8, skip_similar="none"))
    assert [i.slice["frame"] for i in items] == [0, 1, 2] and not rejects
    _, items, rejects = run_source(source(tmp_path, policy="every_seconds", every_seconds=2.0))
    assert [i.slice["frame"] for i in items] == [0]
    _, items, rejects = run_source(source(tmp_path, min_duration_s=1.0))
    assert not items and len(rejects) == 1 and rejects[0].stage == "filter"
    assert "fundus/short.avi: clip is 0.300 s, shorter than options.min_duration_s=1.0" in rejects[0].reason


@pytest.mark.parametrize("suffix", ["mp4", "avi"])
def test_near_identical_frames_are_skipped(tmp_path, pan, suffix):
    held = [pan[0]] * 10 + [pan[20]] * 10 + [pan[0]] * 5  # a still camera, a jump, and back
    write(tmp_path / "fundus" / f"still.{suffix}", held)
    _, items, rejects = run_source(source(tmp_path, every_seconds=0.2))
    assert [i.slice["frame"] for i in items] == [0, 10, 20]
    skipped = [r for r in rejects if r.stage == "filter"]
    assert len(skipped) == 10 and len(rejects) == 10
    assert skipped[0].item == "fundus/still.%s@frame0002-t0.200s" % suffix  # the frame and its time stamp
    assert "frame at 0.200 s is near-identical to the kept frame at 0.000 s" in skipped[0].reason
    _, items, _ = run_source(source(tmp_path, every_seconds=0.2, skip_similar="phash"))
    assert [i.slice["frame"] for i in items] == [0, 10, 20]
    _, items, rejects = run_source(source(tmp_path, every_seconds=0.2, skip_similar="none"))
    assert len(items) == 13 and not rejects
    # a pan moves 6 px per frame (15-20 grey levels apart): never near-identical at the default threshold ...
    write(tmp_path / "fundus" / f"still.{suffix}", pan)
    _, items, rejects = run_source(source(tmp_path, every_seconds=0.1))
    assert len(items) == 30 and not rejects
    # ... but at a threshold of 30 grey levels only frames far enough from the last kept one remain
    _, items, rejects = run_source(source(tmp_path, every_seconds=0.1, max_mean_abs_diff=30))
    assert 2 <= len(items) < 30 and len(items) + len(rejects) == 30
    assert all(frame_difference(a.array, b.array) > 30 for a, b in zip(items, items[1:]))


def test_labels_from_csv_with_patient_column(tmp_path, pan, sweep):
    write(tmp_path / "clips" / "a.mp4", pan)
    write(tmp_path / "clips" / "b.mkv", sweep)
    (tmp_path / "labels.csv").write_text("clip,label,patient\na.mp4,retina,P1\nb.mkv,brain,P1\n"
                                         "missing.mp4,x,P2\na.mp4,again,P1\n../../escape.mp4,x,P3\n")
    units, items, rejects = run_source(source(tmp_path, labels="csv", csv="labels.csv", videos_dir="clips",
                                              patient_column="patient", policy="per_clip", frames_per_clip=2))
    assert [u.key for u in units] == ["clips/a.mp4", "clips/b.mkv"]
    assert {(i.source_file, i.labels[0], i.patient_raw) for i in items} == {
        ("clips/a.mp4", "retina", "P1"), ("clips/b.mkv", "brain", "P1")}
    assert sorted(r.reason for r in rejects) == [
        "labels.csv row 4: clip 'missing.mp4': file not found",
        "labels.csv row 5: clips/a.mp4 already listed in row 2",
        "labels.csv row 6: clip '../../escape.mp4': path escapes the dataset folder"]


def test_segments_in_seconds_and_frame_ranges(tmp_path, sweep):
    write(tmp_path / "us" / "sweep.mp4", sweep)  # 32 frames, 3.2 s
    (tmp_path / "seg.csv").write_text("clip,label,start,end\nus/sweep.mp4,upper,0,1.0\nus/sweep.mp4,lower,2.0,3.2\n"
                                      "us/sweep.mp4,bad,3,2\nus/sweep.mp4,late,9,10\n")
    _, items, rejects = run_source(source(tmp_path, labels="segments", csv="seg.csv", policy="per_segment",
                                          frames_per_segment=2))
    # [0, 1) -> 0.25, 0.75 s (ties between two frames go to the earlier); [2, 3.2) -> 2.3, 2.9 s
    assert [(i.labels, i.slice["frame"]) for i in items] == [(["upper"], 2), (["upper"], 7), (["lower"], 23),
                                                             (["lower"], 29)]
    assert items[2].extra["segment_s"] == [2.0, 3.2]
    assert all(best_match(i.array, sweep)[0] == i.slice["frame"] for i in items)
    reasons = sorted(r.reason for r in rejects)
    assert reasons == ["seg.csv row 4: us/sweep.mp4: segment [3.0, 2.0) s is empty (end not after start)",
                       "us/sweep.mp4: segment 'late' [9.000, 10.000) s starts after the clip ends (3.200 s)"]
    # frame ranges (both ends included), sampled every 0.5 s: frames outside any segment are one filter reject
    (tmp_path / "seg.csv").write_text("clip,label,start,end\nus/sweep.mp4,upper,0,9\nus/sweep.mp4,lower,20,31\n")
    _, items, rejects = run_source(source(tmp_path, labels="segments", csv="seg.csv", time_unit="frames",
                                          every_seconds=0.5))
    assert [(i.labels[0], i.slice["frame"]) for i in items] == [("upper", 0), ("upper", 5), ("lower", 20),
                                                                ("lower", 25), ("lower", 30)]
    assert [r.reason for r in rejects] == ["us/sweep.mp4: 2 sampled frame(s) fall in no annotated segment"]


def _cholec80(root: Path, pan: list[np.ndarray]) -> None:
    """The Cholec80 release layout at 25 fps: video01 (3 s) with its phase and tool files, video02 without."""
    frames = (pan + pan[::-1] + pan)[:75]
    write(root / "videos" / "video01.mp4", frames, fps=25)
    write(root / "videos" / "video02.mp4", frames[:30], fps=25)
    (root / "phase_annotations").mkdir()
    rows = ["Frame\tPhase"] + [f"{f}\t{'Preparation' if f < 30 else 'CalotTriangleDissection'}" for f in range(75)]
    (root / "phase_annotations" / "video01-phase.txt").write_text("\n".join(rows) + "\n")
    (root / "tool_annotations").mkdir()
    (root / "tool_annotations" / "video01-tool.txt").write_text(
        "Frame\tGrasper\tBipolar\tHook\tScissors\tClipper\tIrrigator\tSpecimenBag\n"
        "0\t1\t0\t0\t0\t0\t0\t0\n25\t1\t0\t1\t0\t0\t0\t0\n50\t0\t0\t1\t0\t0\t0\t0\n")


def test_cholec80_phase_and_tool_files(tmp_path, pan):
    _cholec80(tmp_path, pan)
    _, items, rejects = run_source(source(tmp_path, labels="cholec80", policy="per_segment", frames_per_segment=2,
                                          tool_labels=True))
    # Preparation = frames 0-29 ([0, 1.2) s) -> 0.3, 0.9 s; Calot = frames 30-74 ([1.2, 3.0) s) -> 1.65, 2.55 s
    # (frames 7.5, 22.5, 41.25, 63.75 at 25 fps: ties go to the earlier frame)
    assert [(i.slice["frame"], i.labels) for i in items] == [
        (7, ["Preparation", "Grasper"]), (22, ["Preparation", "Grasper"]),
        (41, ["CalotTriangleDissection", "Grasper", "Hook"]), (64, ["CalotTriangleDissection", "Hook"])]
    assert items[0].slice["time_s"] == 0.28 and items[2].extra["segment_s"] == [1.2, 3.0]
    assert [r.reason for r in rejects] == [
        "videos/video02.mp4: no phase annotation file phase_annotations/video02-phase.txt"]
    _, items, _ = run_source(source(tmp_path, labels="cholec80", every_seconds=1.0))
    assert [(i.slice["frame"], i.labels) for i in items] == [
        (0, ["Preparation"]), (25, ["Preparation"]), (50, ["CalotTriangleDissection"])]
    # a malformed phase file is a reject naming it and the line
    p = tmp_path / "phase_annotations" / "video01-phase.txt"
    p.write_text(p.read_text().replace("40\tCalot", "forty\tCalot"))
    _, items, rejects = run_source(source(tmp_path, labels="cholec80"))
    assert not items and [r.reason for r in rejects if r.item == "videos/video01.mp4"] == [
        "videos/video01.mp4: video01-phase.txt line 42: frame 'forty' is not a frame number"]


def test_corrupt_and_non_video_clips_are_rejects(tmp_path, pan):
    good = write(tmp_path / "fundus" / "good.mp4", pan)
    data = good.read_bytes()
    (tmp_path / "fundus" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    mkv = write(tmp_path / "fundus" / "cut.mkv", pan)
    whole = mkv.read_bytes()
    mkv.write_bytes(whole[: len(whole) // 2])  # Matroska plays up to the cut: the rest is a reject
    Image.fromarray(pan[0]).save(tmp_path / "fundus" / "photo.png")
    (tmp_path / "fundus" / "photo.png").rename(tmp_path / "fundus" / "not_a_clip.avi")
    (tmp_path / "fundus" / "zeroed.mp4").write_bytes(data[: len(data) // 3] + bytes(3000) + data[len(data) // 3 + 3000:])
    (tmp_path / "fundus" / "empty.mkv").write_bytes(b"")
    (tmp_path / "fundus" / "notes.mp4").write_text("clip list, see README\n" * 20)
    (tmp_path / "loose.mp4").write_bytes(data)
    units, items, rejects = run_source(source(tmp_path, every_seconds=0.5))
    reasons = {r.item: r.reason for r in rejects}
    assert reasons["fundus/truncated.mp4"].startswith("fundus/truncated.mp4: not a readable video container")
    assert reasons["fundus/not_a_clip.avi"] == "fundus/not_a_clip.avi: not a video: the file is a still image (png)"
    assert reasons["fundus/notes.mp4"].startswith("fundus/notes.mp4: not a readable video container (")
    assert reasons["fundus/empty.mkv"] == "fundus/empty.mkv: empty file (0 bytes)"
    assert reasons["loose.mp4"] == "loose.mp4: file is not inside a label folder, so it has no label"
    assert reasons["fundus/truncated.mp4"] == ("fundus/truncated.mp4: not a readable video container (Invalid data "
                                               "found when processing input)")  # no absolute path, no errno
    cut = [r.reason for r in rejects if r.item.startswith("fundus/cut.mkv")]
    assert len(cut) == 1 and cut[0].startswith("fundus/cut.mkv: no frame at ") and "a truncated file?" in cut[0]
    assert reasons["fundus/zeroed.mp4"].startswith("fundus/zeroed.mp4: decoding failed after ")
    assert reasons["fundus/zeroed.mp4"].endswith(" of 6 sampled frames not read")
    kept = defaultdict(list)
    for it in items:
        kept[it.source_file].append(it.slice["frame"])
    assert kept["fundus/good.mp4"] == [0, 5, 10, 15, 20, 25]
    assert 0 < len(kept["fundus/cut.mkv"]) < 6 and 0 < len(kept["fundus/zeroed.mp4"]) < 6  # frames before the damage
    for it in items:
        assert best_match(it.array, pan)[0] == it.slice["frame"]
    with pytest.raises(VideoReadError, match="truncated.mp4"):
        probe(tmp_path / "fundus" / "truncated.mp4")


def test_options_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="per_segment"):
        source(Path("x"), policy="per_segment")
    with pytest.raises(ValidationError, match="needs options.csv"):
        source(Path("x"), labels="csv")
    with pytest.raises(ValidationError):
        source(Path("x"), every_seconds=0)


def test_build_keeps_each_clip_in_one_split(tmp_path, pan, sweep):
    from medvl.pipeline.build import run_build
    from medvl.pipeline.recipe import parse_recipe

    root = tmp_path / "clips"
    for k in range(4):  # 8 clips, 2 labels, several frames each
        write(root / "fundus" / f"pan{k}.mp4", [np.roll(f, 7 * k, axis=0) for f in pan])
        write(root / "brain" / f"sweep{k}.mkv", sweep[k * 4:k * 4 + 16])
    recipe = {"salt": "s", "seed": 3, "sources": [{"name": "vids", "format": "video", "path": str(root),
                                                   "modality": "endoscopy",
                                                   "options": {"policy": "per_clip", "frames_per_clip": 3}}],
              "curation": {"splits": {"train": 0.5, "val": 0.25, "test": 0.25}}}
    res = run_build(parse_recipe(recipe), tmp_path / "out")
    recs = res.records
    assert len(recs) == 24
    split_of = defaultdict(set)
    for r in recs:
        split_of[r.source_file].add(r.split)
        assert r.source_format == "video" and r.modality == "endoscopy" and r.slice["time_s"] >= 0
        assert "@frame" in r.id and r.source_file.split("/")[-1].split(".")[0] in r.id
    assert len(split_of) == 8 and all(len(s) == 1 for s in split_of.values())
    assert len({r.split for r in recs}) >= 2
    assert len({r.patient_key for r in recs}) == 8  # one patient per clip
    rows = [json.loads(x) for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert {tuple(sorted(r["slice"])) for r in rows} == {("frame", "of", "time_s"), ("frame", "time_s")}


def test_without_pyav_the_source_says_what_to_install(tmp_path, monkeypatch, pan):
    write(tmp_path / "fundus" / "pan.mp4", pan)
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed: `import av` raises ImportError
    units, items, rejects = run_source(source(tmp_path))
    assert not units and not items and len(rejects) == 1
    assert rejects[0].reason == (f"{tmp_path}: reading video clips needs PyAV (FFmpeg bundled in its wheels): "
                                 "pip install 'medvl[video]'  (or: pip install av)")
