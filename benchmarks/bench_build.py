"""Conversion throughput of `medvl build`'s reading stage against its bound, measured in the same run.

2D: an image-folder source of real pathology and fundus tiles. Bound = the bare work on the same files:
    PIL decode + resize to the same size + PNG encode + write (no records, hashing, validation, bookkeeping).
3D: a Decathlon source built from the MNI152 template. Bound = nibabel load + take the same slices + resize
    + PNG encode + write of the images only (medvl also reads the label volume, ranks slices by mask area,
    resamples and writes each slice's label map and derives its boxes).
Pool: the 2D source with workers=1 vs workers=N (all cores): near-linear speed-up is the aim.
Prints ratios (bound time / medvl time: 1.0 = as fast as the bare work). Run: python benchmarks/bench_build.py"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medvl.pipeline.build import load_all
from medvl.pipeline.recipe import parse_recipe


def _encode(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def make_2d_corpus(root: Path, copies: int) -> list[Path]:
    """Tiles of the scikit-image IHC and retina images, each tile saved `copies` times with a 1-pixel shift
    so files differ (no cache effects in the bound)."""
    from skimage import data

    files = []
    for name, img, tile in (("ihc", data.immunohistochemistry(), 256), ("retina", data.retina(), 512)):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for c in range(copies):
            for y in range(0, img.shape[0] - tile + 1, tile):
                for x in range(0, img.shape[1] - tile + 1, tile):
                    p = d / f"{name}_{c}_{y}_{x}.png"
                    Image.fromarray(np.roll(img[y:y + tile, x:x + tile], c, axis=1)).save(p)
                    files.append(p)
    return sorted(files)


def bound_2d(files: list[Path], max_side: int, out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for p in files:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
        h, w = arr.shape[:2]
        s = min(1.0, max_side / max(h, w))
        if s < 1.0:
            arr = np.asarray(Image.fromarray(arr).resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS))
        (out / p.name).write_bytes(_encode(arr))
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


def bound_3d(case_dir: Path, records, out: Path, with_labels: bool = False) -> float:
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
        (out / f"{i}.png").write_bytes(_encode(u8))
        if lab is not None:
            m = np.rot90(lab[(slice(None),) * ax + (idx,)]).astype(np.uint8)
            m = np.asarray(Image.fromarray(m).resize((r.width, r.height), Image.Resampling.NEAREST))
            buf = io.BytesIO()
            Image.fromarray(m).save(buf, format="PNG", compress_level=1)
            (out / f"{i}_mask.png").write_bytes(buf.getvalue())
    return time.perf_counter() - t


def main() -> None:
    copies = int(os.environ.get("MEDVL_BENCH_COPIES", "4"))
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = make_2d_corpus(tmp / "folder", copies)
        src2d = {"name": "tiles", "format": "image_folder", "path": str(tmp / "folder"), "modality": "pathology"}
        rec2d = {"sources": [src2d], "image": {"max_side": 384}}
        t_bound = bound_2d(files, 384, tmp / "bound2d")
        t_one, n = time_medvl(rec2d, tmp / "out1", 1)
        t_pool, _ = time_medvl(rec2d, tmp / "outN", cores)
        print(f"2D  {len(files)} files -> {n} records")
        print(f"2D  bound (decode+resize+encode+write) {len(files) / t_bound:7.1f} img/s")
        print(f"2D  medvl, 1 process            {n / t_one:7.1f} img/s   ratio to bound {t_bound / t_one:.2f}")
        print(f"2D  medvl, {cores} processes          {n / t_pool:7.1f} img/s   speed-up {t_one / t_pool:.2f}x "
              f"on {cores} cores (linear = {cores:.1f}x)")

        case = make_3d_corpus(tmp / "vol")
        src3d = {"name": "mni", "format": "decathlon", "path": str(case),
                 "slicing": {"axes": ["axial", "coronal", "sagittal"], "per_label": 24, "min_area": 200}}
        t3, n3 = time_medvl({"sources": [src3d], "image": {"max_side": 512}}, tmp / "out3", 1)
        records = [r for r in load_all(parse_recipe({"sources": [src3d]}), tmp / "out3b", 1)[0]]
        tb3 = bound_3d(case, records, tmp / "bound3d")
        tb3m = bound_3d(case, records, tmp / "bound3dm", with_labels=True)
        print(f"3D  1 volume -> {n3} slices")
        print(f"3D  bound (load+slice+resize+encode+write) {n3 / tb3:7.1f} slices/s")
        print(f"3D  bound + label maps (load, slice, resize, encode, write both) {n3 / tb3m:7.1f} slices/s")
        print(f"3D  medvl, 1 process                 {n3 / t3:7.1f} slices/s   ratio to bound {tb3 / t3:.2f}, "
              f"to bound + label maps {tb3m / t3:.2f}")


if __name__ == "__main__":
    sys.exit(main())
