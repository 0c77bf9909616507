"""Conversion throughput of `medvl build`'s reading stage against its bound, measured in the same run.

2D: an image-folder source of real pathology and fundus tiles. Bound = the bare work on the same files:
    decode + resize to the same size + PNG encode + write (no records, hashing, validation, bookkeeping), printed
    twice: with Pillow's decoder and PNG encoder (the bound as issue 11 filed it) and with medvl's codecs, i.e. the
    same codec work medvl does (`read_raster`, which decodes plain 8-bit PNGs with libspng, 1.5-2x faster than Pillow
    on these RGB tiles, and `encode_png`, which writes levels 0-3 itself, several times faster than Pillow at level 1).
3D: a Decathlon source built from the MNI152 template. Bound = nibabel load + take the same slices + resize
    + PNG encode (medvl's encoder) + write of the images only (medvl also reads the label volume, ranks slices by mask area,
    resamples and writes each slice's label map and derives its boxes).
Pool: the 2D source with workers=1 vs workers=N (all cores): near-linear speed-up is the aim.
Whole build: the same kind of 2D corpus through `medvl build` (a subprocess, every export, `--timings`) against
    the bare decode+resize+encode+write bound on the same number of processes (files split evenly over a process
    pool), at 1 and 2 processes, encoding at the recipe's `image.png_compress_level` in both (with both codec sets,
    as above). Target: >= 0.8 of the bound on two processes. Every timed run writes into a folder of its own, and
    before it `os.sync()` waits until nothing is left to write back, so no run pays for another's disk writes.
    Outputs are deleted only at the end (about 1.5 GB of disk per repeat and process count): on ext4, a file or
    folder created within a minute of a mass deletion skips past every recently deleted inode (1,200 folders + files
    took 0.40 s right after deleting 2,400 and 0.11 s otherwise), which charged each run for its predecessor's
    deletion. Every source file is read again right before each timed run (`_warm`: page cache). Prints the per-stage
    breakdown (read, curate, generate, export) from `--timings`.
Prints ratios (bound time / medvl time: 1.0 = as fast as the bare work).
PNG levels: encode time and size of `encode_png` at levels 0, 1, 2, 3, 4, 6, 9 (and of Pillow at level 1) on real
    pip-shipped medical images at the written size (the table behind the `image.png_compress_level` default).
Run: python benchmarks/bench_build.py [read|whole|png|all]   (default all; MEDVL_BENCH_COPIES sets the read corpus,
MEDVL_BENCH_BUILD_COPIES the whole-build corpus: 8 files per copy, default 150; MEDVL_BENCH_TILE=224 cuts it into
224 px tiles instead (40 files per copy: use 40 copies) and MEDVL_BENCH_FORMAT=jpg saves them as JPEG, where
per-image and per-sample work weighs more against the codecs; MEDVL_BENCH_PNG_LEVEL its PNG level,
default the recipe default; MEDVL_BENCH_RUNS how many times the whole-build measurement is repeated, each build
right after its own bounds, with the median ratio printed: the VM's speed drifts from minute to minute)"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medvl.pipeline.build import load_all
from medvl.pipeline.recipe import parse_recipe


def _encode(arr: np.ndarray, level: int, encoder: str = "pillow") -> bytes:
    """PNG bytes by Pillow's encoder (the bound as the issue filed it) or by medvl's own ``encode_png`` (which writes
    levels 0-3 itself: Up-filtered rows deflated by libdeflate), so the bound can do the same encoding work medvl does."""
    if encoder == "medvl":
        from medvl.sources.read import encode_png

        return encode_png(arr, level)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def make_2d_corpus(root: Path, copies: int, tile: int | None = None, ext: str = "png") -> list[Path]:
    """Tiles of the scikit-image IHC and retina images, each tile saved `copies` times with a 1-pixel shift
    so files differ (no cache effects in the bound). By default 256 px IHC and 512 px retina tiles (8 per copy);
    ``tile`` cuts both images into tiles of that size instead (224: 40 per copy), ``ext`` "jpg" saves them as
    JPEG (quality 90) instead of PNG."""
    from skimage import data

    files = []
    for name, img, size in (("ihc", data.immunohistochemistry(), tile or 256), ("retina", data.retina(), tile or 512)):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for c in range(copies):
            for y in range(0, img.shape[0] - size + 1, size):
                for x in range(0, img.shape[1] - size + 1, size):
                    p = d / f"{name}_{c}_{y}_{x}.{ext}"
                    Image.fromarray(np.roll(img[y:y + size, x:x + size], c, axis=1)).save(
                        p, **({"quality": 90} if ext == "jpg" else {}))
                    files.append(p)
    return sorted(files)


def bound_2d(files: list[Path], max_side: int, out: Path, level: int, encoder: str = "pillow") -> float:
    """Decode, resize, encode and write each file: with Pillow's decoder and encoder (``encoder="pillow"``, the bound
    as issue 11 filed it) or with medvl's codecs (``"medvl"``: ``read_raster``, which decodes plain PNGs with libspng,
    and ``encode_png``), the same codec work medvl does."""
    from medvl.io.raster import read_raster

    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for p in files:
        if encoder == "medvl":
            arr = read_raster(p)
        else:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
        h, w = arr.shape[:2]
        s = min(1.0, max_side / max(h, w))
        if s < 1.0:
            arr = np.asarray(Image.fromarray(arr).resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS))
        (out / p.name).write_bytes(_encode(arr, level, encoder))
    return time.perf_counter() - t


def time_medvl(recipe_dict: dict, out: Path, workers: int) -> tuple[float, int]:
    recipe = parse_recipe(recipe_dict)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t = time.perf_counter()
    records, _, _ = load_all(recipe, out, workers)
    return time.perf_counter() - t, len(records)


def make_3d_corpus(root: Path) -> Path:
    from medvl.demo.corpus import write_mni_decathlon

    write_mni_decathlon(root)
    return root / "mni152"


def bound_3d(case_dir: Path, records, out: Path, level: int, with_labels: bool = False) -> float:
    """nibabel load + extracting the same slices + resize to the written size + PNG encode + write."""
    import nibabel as nib

    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    img = nib.as_closest_canonical(nib.load(case_dir / "imagesTr" / "mni152_001.nii.gz"))
    vol = img.get_fdata()
    lab = None
    if with_labels:
        lab = np.asarray(nib.as_closest_canonical(nib.load(case_dir / "labelsTr" / "mni152_001.nii.gz")).dataobj)
    axis_of = {"sagittal": 0, "coronal": 1, "axial": 2}
    for i, r in enumerate(records):
        ax, idx = axis_of[r.slice["axis"]], r.slice["index"]
        sl = vol[(slice(None),) * ax + (idx,)]
        lo, hi = np.percentile(sl, [0.5, 99.5])
        u8 = (np.clip((sl - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)
        u8 = np.asarray(Image.fromarray(np.rot90(u8)).resize((r.width, r.height), Image.Resampling.BILINEAR))
        (out / f"{i}.png").write_bytes(_encode(u8, level, "medvl"))
        if lab is not None:
            m = np.rot90(lab[(slice(None),) * ax + (idx,)]).astype(np.uint8)
            m = np.asarray(Image.fromarray(m).resize((r.width, r.height), Image.Resampling.NEAREST))
            buf = io.BytesIO()
            Image.fromarray(m).save(buf, format="PNG", compress_level=1)
            (out / f"{i}_mask.png").write_bytes(buf.getvalue())
    return time.perf_counter() - t


def bound_2d_pool(files: list[Path], max_side: int, out: Path, level: int, processes: int,
                  encoder: str = "pillow") -> float:
    """The bare work split evenly over ``processes`` processes (pool start-up included, like medvl's)."""
    from concurrent.futures import ProcessPoolExecutor

    t = time.perf_counter()
    if processes == 1:
        bound_2d(files, max_side, out, level, encoder)
    else:
        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(bound_2d, [files[i::processes] for i in range(processes)], [max_side] * processes,
                          [out] * processes, [level] * processes, [encoder] * processes))
    return time.perf_counter() - t


def _warm(files: list[Path]) -> None:
    """Read every source file, so each timed run starts with them in the page cache: this VM's kernel reclaims pages
    left unused for a few seconds (kdamond), and reading them back from its disk ran at 1-2 MB/s; without this, the
    first timed run after a pause (the bound) paid for the disk and the build after it did not."""
    for p in files:
        p.read_bytes()


def time_build_cli(recipe_dict: dict, root: Path, workers: int) -> tuple[float, dict]:
    """`medvl build RECIPE -o OUT --workers N --timings FILE` in a subprocess: wall time and its timings."""
    import json
    import subprocess

    import yaml

    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict), encoding="utf-8")
    out, timings = root / f"build{workers}", root / f"timings{workers}.json"
    if out.exists():
        shutil.rmtree(out)
    exe = Path(sys.executable).with_name("medvl")  # the console script installed next to this interpreter
    cmd = [str(exe) if exe.exists() else (shutil.which("medvl") or "medvl"), "build", str(recipe), "-o", str(out),
           "--workers", str(workers),
           "--timings", str(timings)]
    t = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t, json.loads(timings.read_text(encoding="utf-8"))


def whole_build(copies: int, repeats: int = 1) -> None:
    """The whole build against the codec bound at 1 and 2 processes, ``repeats`` times each, every build timed
    right after its own bounds (see the module docstring)."""
    from medvl.pipeline.recipe import EXPORT_NAMES
    from medvl.sources.config import ImageConfig

    level, side = int(os.environ.get("MEDVL_BENCH_PNG_LEVEL", ImageConfig().png_compress_level)), 384
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tile = int(os.environ["MEDVL_BENCH_TILE"]) if os.environ.get("MEDVL_BENCH_TILE") else None
        files = make_2d_corpus(tmp / "folder", copies, tile, os.environ.get("MEDVL_BENCH_FORMAT", "png"))
        recipe = {"name": "bench-whole", "seed": 0, "salt": "bench-whole-salt", "exports": list(EXPORT_NAMES),
                  "sources": [{"name": "tiles", "format": "image_folder", "path": str(tmp / "folder"),
                               "modality": "pathology"}],
                  "image": {"max_side": side, "png_compress_level": level}}
        for procs in (1, 2):
            ratios, same = [], []
            for rep in range(repeats):  # bound and build side by side each time: the VM's speed drifts
                run = tmp / f"p{procs}-run{rep}"  # nothing is deleted before a timed run (see the module docstring)
                os.sync()
                _warm(files)
                t_bound = bound_2d_pool(files, side, run / "bound", level, procs)
                os.sync()
                _warm(files)
                t_same = bound_2d_pool(files, side, run / "bound-medvl", level, procs, encoder="medvl")
                os.sync()
                _warm(files)
                t_build, tm = time_build_cli(recipe, run, procs)
                ratios.append(t_bound / t_build)
                same.append(t_same / t_build)
                stages = "  ".join(f"{k} {tm.get(k, 0.0):.2f}s" for k in ("read", "curate", "generate", "export"))
                print(f"whole build, {procs} process(es), run {rep + 1}/{repeats}: {len(files)} files -> "
                      f"{tm['records']} records, {tm['samples']} samples, exports {','.join(EXPORT_NAMES)}, "
                      f"png level {level}")
                print(f"  bound, Pillow's codecs (as filed)      {t_bound:7.2f}s  {len(files) / t_bound:7.1f} img/s")
                print(f"  bound, medvl's codecs (same work)      {t_same:7.2f}s  {len(files) / t_same:7.1f} img/s")
                print(f"  medvl build (wall, incl. start-up)     {t_build:7.2f}s  {len(files) / t_build:7.1f} img/s   "
                      f"ratio to bound {t_bound / t_build:.2f} (Pillow) {t_same / t_build:.2f} (same codecs)"
                      + ("   (target >= 0.80)" if procs == 2 else ""))
                print(f"  stages: {stages}  total {tm.get('total', 0.0):.2f}s  "
                      f"(start-up and reporting {t_build - tm.get('total', 0.0):.2f}s)", flush=True)
            if repeats > 1:
                print(f"whole build, {procs} process(es): ratio to the Pillow bound over {repeats} runs: median "
                      f"{statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}; to the same-codecs "
                      f"bound: median {statistics.median(same):.2f}, range {min(same):.2f}-{max(same):.2f}")
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def _u8(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return (np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)


def _fit(a: np.ndarray, side: int = 512) -> np.ndarray:
    h, w = a.shape[:2]
    s = min(1.0, side / max(h, w))
    if s >= 1.0:
        return np.ascontiguousarray(a)
    return np.asarray(Image.fromarray(a).resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS))


def png_levels(levels: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 9)) -> None:
    """Markdown tables: total and per-image encode time (best of 3) and size per level of ``encode_png``, and of
    Pillow's encoder at level 1 (what level 1 wrote before medvl encoded levels 0-3 itself: "P1")."""
    from nilearn.datasets import load_mni152_template
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from skimage import data

    from medvl.sources.read import encode_png

    liver = dcmread(get_testdata_file("liver.dcm")).pixel_array
    vol = np.asarray(load_mni152_template().get_fdata())
    imgs = {"skimage retina (fundus, RGB)": _fit(data.retina()),
            "skimage immunohistochemistry (RGB)": _fit(data.immunohistochemistry()),
            "pydicom RG1_UNCI (CR chest)": _fit(_u8(dcmread(get_testdata_file("RG1_UNCI.dcm")).pixel_array)),
            "pydicom CT_small": _u8(dcmread(get_testdata_file("CT_small.dcm")).pixel_array),
            "pydicom MR_small": _u8(dcmread(get_testdata_file("MR_small.dcm")).pixel_array),
            "pydicom liver.dcm, middle frame": _u8(liver[len(liver) // 2]),
            "nilearn MNI152, axial": _fit(_u8(np.rot90(vol[:, :, vol.shape[2] // 2]))),
            "nilearn MNI152, coronal": _fit(_u8(np.rot90(vol[:, vol.shape[1] // 2, :])))}
    encoders = {str(lv): (lambda a, lv=lv: encode_png(a, lv)) for lv in levels}
    encoders["P1"] = lambda a: _encode(a, 1)
    rows: dict[str, dict[str, tuple[float, int]]] = {}
    for name, a in imgs.items():
        reps = max(3, int(2e6 // a.nbytes))
        for key, enc in encoders.items():
            best, size = 1e9, 0
            for _ in range(3):
                t = time.perf_counter()
                for _ in range(reps):
                    size = len(enc(a))
                best = min(best, (time.perf_counter() - t) / reps)
            rows.setdefault(name, {})[key] = (best * 1e3, size)
    tot = {k: (sum(r[k][0] for r in rows.values()), sum(r[k][1] for r in rows.values())) for k in encoders}
    raw = sum(a.nbytes for a in imgs.values())
    ref = "6" if "6" in encoders else next(iter(encoders))
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"| level | encode time, {len(imgs)} images | vs level {ref} | bytes | vs level {ref} | of raw pixels |")
    print("|---|---|---|---|---|---|")
    for k in encoders:
        print(f"| {k} | {tot[k][0]:.1f} ms | {tot[k][0] / tot[ref][0]:.2f}x | {tot[k][1]:,} | "
              f"{tot[k][1] / tot[ref][1]:.2f}x | {tot[k][1] / raw:.2f} |")
    print("\n| image | size | " + " | ".join(f"L{k}" if k.isdigit() else k for k in encoders) + " |  (ms / KB)")
    print("|---|---|" + "---|" * len(encoders))
    for name, a in imgs.items():
        dims = f"{a.shape[1]}x{a.shape[0]}" + ("x3" if a.ndim == 3 else "")
        print(f"| {name} | {dims} | " + " | ".join(f"{rows[name][k][0]:.1f} / {rows[name][k][1] / 1024:.0f}"
                                                   for k in encoders) + " |")


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what not in ("read", "whole", "png", "all"):
        raise SystemExit(f"usage: bench_build.py [read|whole|png|all], got {what!r}")
    if what in ("png", "all"):
        png_levels()
    if what in ("read", "all"):
        read_stage()
    if what in ("whole", "all"):
        whole_build(int(os.environ.get("MEDVL_BENCH_BUILD_COPIES", "150")),
                    int(os.environ.get("MEDVL_BENCH_RUNS", "1")))


def read_stage() -> None:
    from medvl.sources.config import ImageConfig

    level = ImageConfig().png_compress_level  # the bound encodes at the level medvl writes (recipe default)
    copies = int(os.environ.get("MEDVL_BENCH_COPIES", "4"))
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = make_2d_corpus(tmp / "folder", copies)
        src2d = {"name": "tiles", "format": "image_folder", "path": str(tmp / "folder"), "modality": "pathology"}
        rec2d = {"sources": [src2d], "image": {"max_side": 384}}
        t_bound = bound_2d(files, 384, tmp / "bound2d", level)
        t_same = bound_2d(files, 384, tmp / "bound2dm", level, encoder="medvl")
        t_one, n = time_medvl(rec2d, tmp / "out1", 1)
        t_pool, _ = time_medvl(rec2d, tmp / "outN", cores)
        print(f"2D  {len(files)} files -> {n} records")
        print(f"2D  bound (decode+resize+encode+write), Pillow encoder {len(files) / t_bound:7.1f} img/s")
        print(f"2D  bound, medvl's codecs (same work)                {len(files) / t_same:7.1f} img/s")
        print(f"2D  medvl, 1 process            {n / t_one:7.1f} img/s   ratio to bound {t_bound / t_one:.2f} (Pillow) "
              f"{t_same / t_one:.2f} (same codecs)")
        print(f"2D  medvl, {cores} processes          {n / t_pool:7.1f} img/s   speed-up {t_one / t_pool:.2f}x "
              f"on {cores} cores (linear = {cores:.1f}x)")

        case = make_3d_corpus(tmp / "vol")
        src3d = {"name": "mni", "format": "decathlon", "path": str(case),
                 "slicing": {"axes": ["axial", "coronal", "sagittal"], "per_label": 24, "min_area": 200}}
        t3, n3 = time_medvl({"sources": [src3d], "image": {"max_side": 512}}, tmp / "out3", 1)
        records = [r for r in load_all(parse_recipe({"sources": [src3d]}), tmp / "out3b", 1)[0]]
        tb3 = bound_3d(case, records, tmp / "bound3d", level)
        tb3m = bound_3d(case, records, tmp / "bound3dm", level, with_labels=True)
        print(f"3D  1 volume -> {n3} slices")
        print(f"3D  bound (load+slice+resize+encode+write) {n3 / tb3:7.1f} slices/s")
        print(f"3D  bound + label maps (load, slice, resize, encode, write both) {n3 / tb3m:7.1f} slices/s")
        print(f"3D  medvl, 1 process                 {n3 / t3:7.1f} slices/s   ratio to bound {tb3 / t3:.2f}, "
              f"to bound + label maps {tb3m / t3:.2f}")


if __name__ == "__main__":
    sys.exit(main())
