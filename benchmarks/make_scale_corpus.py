"""Write a synthetic scale corpus for `medvl build`: N distinct small images in NIH ChestX-ray14 layout (a
labels table and a box list) plus M small NIfTI volumes in a Medical Segmentation Decathlon layout, and the
recipe that builds all of it with every export.

    python benchmarks/make_scale_corpus.py OUT --images 100000 --volumes 100 [--side 64] [--seed 0] [--jobs 2]

Layout under OUT (the real layouts the ``csv_labels``, ``csv_boxes`` and ``decathlon`` sources read):
- ``nih_like/images_NNN/images/PPPPPPPP_FFF.png`` (10,000 files per folder, NIH's patient_followup names),
  ``nih_like/Data_Entry_2017.csv`` (NIH's exact header plus a ``Modality`` column) listing every image, and
  ``nih_like/BBox_List_2017.csv`` (NIH's exact header) with boxes for a share of the pathology images
  (``--box-fraction``). As in the real NIH data, boxed images are also in the labels table: the build merges
  each boxed image's two copies into one record (one ``dedup`` reject per boxed image, the intended rejects).
- ``decathlon/dataset.json``, ``imagesTr/``, ``labelsTr/``: ``--volumes`` crops of ``--volume-side`` voxels of
  nilearn's MNI152 T1 template with its grey/white-matter label map (probability > 0.5 inside the brain mask).
- ``recipe.yaml``: both NIH sources (one cohort: ``patient_namespace``) and the Decathlon source, with every
  export the installed medvl registers.

Images come from two real images shipped with scikit-image: crops of the fundus photograph ``data.retina()``
(modality fundus) and of the immunohistochemistry slide ``data.immunohistochemistry()`` (modality pathology).
Each image is a crop at a random position and scale, turned by one of the 8 square symmetries, with a random
gamma, resized to ``--side`` pixels. Labels are measurements of the crop, as in ``medvl.demo.corpus``: fundus
crops are ``retinal vessels`` (Sato ridge filter, Otsu threshold) and also ``optic disc`` when they hold part of
the disc (the brightest blob); pathology crops are ``FHL2 high expression`` when at least half the crop is
DAB-positive (colour deconvolution, Otsu threshold), else ``FHL2 low expression``; boxes are the crop's
DAB-positive connected components of at least 16 pixels (at most 3, label ``DAB-positive region``).

Every image is distinct, also perceptually: after writing, the (pHash, dHash) pairs of all images are checked
with ``medvl.curate.phash.near_duplicate_pairs`` (the build's own near-duplicate thresholds), and the later
image of each near pair is drawn again, until no pair is left. Output is deterministic for a given seed.
Images are written by ``--jobs`` processes (PNG compress level 1)."""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

NIH_LABELS_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
                     "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", "Modality"]
NIH_BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
PER_FOLDER = 10_000
FUNDUS, PATHOLOGY = 0, 1
MAX_ROUNDS = 30

_G: dict[str, Any] = {}  # read-only state shared with forked workers (set before the pool starts)


# ------------------------------------------------------------------------------------------- base images
@functools.lru_cache(maxsize=1)
def base_images() -> dict[str, np.ndarray]:
    """The two source photographs and the masks their labels are measured on."""
    from scipy import ndimage
    from skimage import color, data, filters

    retina = data.retina()
    fov = retina.max(axis=2) > 20
    green = retina[..., 1].astype(np.float64) / 255.0
    ves = filters.sato(green, sigmas=[2, 4], black_ridges=True)
    ves[~fov] = 0
    vessels = (ves > filters.threshold_otsu(ves[fov])) & fov
    lum = ndimage.gaussian_filter(retina.mean(axis=2), 3)
    bright, n = ndimage.label(lum > np.percentile(lum[fov], 99.5))
    disc = bright == 1 + int(np.argmax(np.bincount(bright.ravel())[1:])) if n else np.zeros_like(fov)
    ihc = data.immunohistochemistry()
    dab = color.rgb2hed(ihc)[..., 2]
    return {"retina": retina, "fov": fov, "vessels": vessels, "disc": disc,
            "ihc": ihc, "dab": dab > filters.threshold_otsu(dab)}


def patients(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: patient number (from 1), follow-up number, and kind (fundus / pathology, one per patient);
    a patient has 1-4 images."""
    rng = np.random.default_rng([seed, 7])
    pat = np.zeros(n, dtype=np.int64)
    fol = np.zeros(n, dtype=np.int64)
    kind = np.zeros(n, dtype=np.int8)
    i, p = 0, 0
    while i < n:
        p += 1
        k = min(int(rng.integers(1, 5)), n - i)
        pat[i:i + k] = p
        fol[i:i + k] = np.arange(k)
        kind[i:i + k] = int(rng.integers(2))
        i += k
    return pat, fol, kind


def image_rel(i: int, patient: int, follow: int) -> str:
    """Path of image i under nih_like/ (NIH's images_NNN/images/ folders)."""
    return f"images_{1 + i // PER_FOLDER:03d}/images/{patient:08d}_{follow:03d}.png"


def _dihedral(a: np.ndarray, k: int) -> np.ndarray:
    a = np.rot90(a, k % 4)
    return np.ascontiguousarray(a[:, ::-1] if k >= 4 else a)


def _crop(img: np.ndarray, masks: list[np.ndarray], s: int, y: int, x: int, side: int, k: int
          ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Crop s x s at (y, x), resize to side x side (masks nearest), apply dihedral transform k."""
    im = Image.fromarray(img[y:y + s, x:x + s]).resize((side, side), Image.Resampling.LANCZOS)
    out = [_dihedral(np.asarray(Image.fromarray(m[y:y + s, x:x + s].astype(np.uint8)).resize(
        (side, side), Image.Resampling.NEAREST)) > 0, k) for m in masks]
    return _dihedral(np.asarray(im), k), out


def _boxes(mask: np.ndarray) -> list[tuple[float, float, float, float]]:
    """x, y, w, h of the 3 largest connected components of at least 16 pixels (largest first), leaving out
    boxes that span nearly the whole crop (they say nothing about where the stain is)."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if not n:
        return []
    sizes = np.bincount(lab.ravel())[1:]
    out = []
    for j in np.argsort(-sizes, kind="stable")[:3]:
        if sizes[j] < 16:
            break
        ys, xs = np.nonzero(lab == j + 1)
        w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        if w >= 0.9 * mask.shape[1] and h >= 0.9 * mask.shape[0]:
            continue
        out.append((float(xs.min()), float(ys.min()), float(w), float(h)))
    return out


def draw(i: int, attempt: int) -> tuple[np.ndarray, str, list, tuple[str | None, str | None]] | None:
    """Image i, draw `attempt`: (pixels, labels cell, boxes, hashes), or None if this draw is unusable."""
    from medvl.curate.phash import perceptual_hashes

    side, seed, kind = _G["side"], _G["seed"], int(_G["kind"][i])
    rng = np.random.default_rng([seed, i, attempt])
    k, gamma = int(rng.integers(8)), float(np.exp(rng.uniform(-0.25, 0.25)))
    if kind == FUNDUS:
        img = _G["retina"]
        s = min(round(side * np.exp(rng.uniform(0, np.log(4)))), img.shape[0] - 1)
        y, x = (int(v) for v in rng.integers(0, img.shape[0] - s, size=2))
        if _G["fov"][y:y + s, x:x + s].mean() < 0.95:
            return None
        arr, (ves, disc) = _crop(img, [_G["vessels"], _G["disc"]], s, y, x, side, k)
        if ves.mean() < 0.02:
            return None
        labels, boxes = "retinal vessels" + ("|optic disc" if disc.mean() >= 0.02 else ""), []
    else:
        img = _G["ihc"]
        s = min(round(side * np.exp(rng.uniform(np.log(0.75), np.log(3)))), img.shape[0] - 1)
        y, x = (int(v) for v in rng.integers(0, img.shape[0] - s, size=2))
        arr, (dab,) = _crop(img, [_G["dab"]], s, y, x, side, k)
        labels = "FHL2 high expression" if dab.mean() >= 0.5 else "FHL2 low expression"
        boxes = _boxes(dab) if rng.random() < _G["box_fraction"] else []
    lut = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
    arr = lut[arr]
    hashes = perceptual_hashes(arr)
    if None in hashes:  # flat at the hash's scale: not an image the near-duplicate check can tell apart
        return None
    return arr, labels, boxes, hashes


def make_images(jobs: list[tuple[int, int]]) -> list[tuple[int, int, str, list, tuple]]:
    """Worker: draw and write each (image index, first attempt); returns (i, attempt used, labels, boxes, hashes)."""
    out = []
    root = _G["root"]
    for i, attempt in jobs:
        while True:
            got = draw(i, attempt)
            if got is not None:
                break
            attempt += 1
        arr, labels, boxes, hashes = got
        path = root / image_rel(i, int(_G["patient"][i]), int(_G["follow"][i]))
        tmp = path.with_suffix(".tmp.png")
        Image.fromarray(arr).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, path)
        out.append((i, attempt, labels, boxes, hashes))
    return out


def _run(pool, todo: list[tuple[int, int]], chunk: int) -> list[tuple[int, int, str, list, tuple]]:
    tasks = [todo[j:j + chunk] for j in range(0, len(todo), chunk)]
    results = pool.imap(make_images, tasks) if pool is not None else map(make_images, tasks)
    return [r for batch in results for r in batch]


def write_images(out: Path, n: int, side: int, seed: int, box_fraction: float, jobs: int) -> dict[str, Any]:
    """Write the N images (distinct, also perceptually) and both NIH tables; returns counts."""
    from medvl.curate.phash import near_duplicate_pairs

    root = out / "nih_like"
    pat, fol, kind = patients(n, seed)
    for f in range(1 + (n - 1) // PER_FOLDER if n else 0):
        (root / f"images_{1 + f:03d}" / "images").mkdir(parents=True, exist_ok=True)
    _G.update(base_images(), side=side, seed=seed, kind=kind, patient=pat, follow=fol, root=root,
              box_fraction=box_fraction)
    attempts = np.zeros(n, dtype=np.int64)
    labels: list[str] = [""] * n
    boxes: list[list] = [[] for _ in range(n)]
    hashes: list[tuple] = [(None, None)] * n
    chunk = max(50, min(1000, n // (8 * max(jobs, 1)) or 50))
    ctx = mp.get_context("fork")
    pool = ctx.Pool(jobs) if jobs > 1 else None
    redrawn, rounds, check_s = 0, 0, 0.0
    try:
        todo = [(i, 0) for i in range(n)]
        for rounds in range(1, MAX_ROUNDS + 1):
            for i, a, lab, bx, h in _run(pool, todo, chunk):
                attempts[i], labels[i], boxes[i], hashes[i] = a, lab, bx, h
            t = time.perf_counter()
            pairs = near_duplicate_pairs(hashes)
            check_s += time.perf_counter() - t
            again = sorted({j for _, j in pairs})  # the later image of each near pair is drawn again
            if not again:
                break
            redrawn += len(again)
            todo = [(j, int(attempts[j]) + 1) for j in again]
        else:
            raise RuntimeError(f"near-duplicate images left after {MAX_ROUNDS} rounds: {len(again)}")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    modality = {FUNDUS: "fundus", PATHOLOGY: "pathology"}
    with (root / "Data_Entry_2017.csv").open("w", encoding="utf-8", newline="") as f:
        f.write(",".join(NIH_LABELS_HEADER) + "\n")
        for i in range(n):
            name = image_rel(i, int(pat[i]), int(fol[i])).rsplit("/", 1)[1]
            f.write(f"{name},{labels[i]},{fol[i]},{pat[i]},,,PA,{side},{side},,,{modality[int(kind[i])]}\n")
    boxed = 0
    with (root / "BBox_List_2017.csv").open("w", encoding="utf-8", newline="") as f:
        f.write(NIH_BBOX_HEADER + "\n")
        for i in range(n):
            if boxes[i]:
                boxed += 1
                name = image_rel(i, int(pat[i]), int(fol[i])).rsplit("/", 1)[1]
                for x, y, w, h in boxes[i]:
                    f.write(f"{name},DAB-positive region,{x:g},{y:g},{w:g},{h:g}\n")
    return {"images": n, "patients": int(pat[-1]) if n else 0, "boxed_images": boxed, "redrawn": redrawn,
            "rounds": rounds, "near_check_seconds": round(check_s, 2),
            "fundus": int((kind == FUNDUS).sum()), "pathology": int((kind == PATHOLOGY).sum())}


# ------------------------------------------------------------------------------------------------ volumes
def write_volumes(out: Path, m: int, side: int, seed: int) -> dict[str, Any]:
    """M crops of the MNI152 T1 template (side^3 voxels, each holding grey and white matter) with their labels."""
    import nibabel as nib

    from medvl.demo.corpus import mni152_tissue

    d = out / "decathlon"
    (d / "imagesTr").mkdir(parents=True, exist_ok=True)
    (d / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    if m:
        t1, label, brain = mni152_tissue()
        vol = np.asarray(t1.get_fdata(), dtype=np.float32)
        lo = np.argwhere(brain).min(axis=0)
        hi = np.argwhere(brain).max(axis=0) - side
        rng = np.random.default_rng([seed, 3])
        j = 0
        while j < m:
            o = [int(rng.integers(a, b + 1)) for a, b in zip(lo, hi)]
            sl = tuple(slice(a, a + side) for a in o)
            lab = label[sl]
            if min((lab == 1).sum(), (lab == 2).sum()) < side * side:  # both tissues, at least a slice's worth
                continue
            j += 1
            affine = t1.affine @ np.array([[1, 0, 0, o[0]], [0, 1, 0, o[1]], [0, 0, 1, o[2]], [0, 0, 0, 1]], float)
            name = f"mni_{j:05d}.nii.gz"
            nib.save(nib.Nifti1Image(np.ascontiguousarray(vol[sl]), affine), d / "imagesTr" / name)
            nib.save(nib.Nifti1Image(np.ascontiguousarray(lab), affine), d / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "MNI152-crops", "description": f"{side}^3 crops of the MNI152 T1 template with its grey/white-"
            "matter maps (p > 0.5)", "reference": "nilearn MNI152 template", "licence": "see nilearn",
            "tensorImageSize": "3D", "modality": {"0": "MRI"},
            "labels": {"0": "background", "1": "grey matter", "2": "white matter"},
            "numTraining": len(training), "numTest": 0, "training": training, "test": []}
    (d / "dataset.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return {"volumes": len(training)}


# ------------------------------------------------------------------------------------------------- recipe
def export_names() -> list[str]:
    """Every export of the recipe schema, plus ``webdataset`` when the installed medvl registers it and its
    recipe schema accepts it."""
    from medvl.export import EXPORTS
    from medvl.pipeline.recipe import EXPORT_NAMES, RecipeError, parse_recipe

    names = list(EXPORT_NAMES)
    if "webdataset" not in names:
        try:
            EXPORTS.get("webdataset")
            parse_recipe({"sources": [], "exports": [*names, "webdataset"]})
            names.append("webdataset")
        except (KeyError, ValueError, RecipeError):  # not in this version
            pass
    return names


def recipe(seed: int, min_side: int) -> dict[str, Any]:
    """The recipe building the corpus (paths relative to its folder)."""
    cohort = {"patient_namespace": "scale_nih"}  # one cohort: a patient id means one patient in both tables
    return {
        "name": "medvl-scale", "seed": seed, "salt": "medvl-scale-benchmark", "workers": 1,
        "sources": [
            {"name": "scale_labels", "format": "csv_labels", "path": "nih_like", **cohort,
             "options": {"search_subdirs": True, "modality_column": "Modality"}},
            {"name": "scale_boxes", "format": "csv_boxes", "path": "nih_like", "modality": "pathology",
             "clinical_task": "Cell Recognition", **cohort, "patient_pattern": r"(\d+)_\d+\.png$",
             "options": {"search_subdirs": True}},
            {"name": "scale_volumes", "format": "decathlon", "path": "decathlon", "body_region": "brain",
             "slicing": {"axes": ["axial"], "per_label": 2, "min_area": 32}},
        ],
        "image": {"max_side": 512, "min_side": min_side},
        "exports": export_names(),
    }


def make_corpus(out: Path, images: int, volumes: int, side: int = 64, seed: int = 0, jobs: int = 2,
                box_fraction: float = 0.1, volume_side: int = 32) -> dict[str, Any]:
    """Write the whole corpus and its recipe under ``out``; returns counts (also in ``out/corpus.json``)."""
    import yaml

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    info = write_images(out, images, side, seed, box_fraction, jobs)
    info.update(write_volumes(out, volumes, volume_side, seed))
    rec = recipe(seed, min(32, side, volume_side))
    (out / "recipe.yaml").write_text(yaml.safe_dump(rec, sort_keys=False), encoding="utf-8")
    info.update(side=side, volume_side=volume_side, seed=seed, exports=rec["exports"],
                seconds=round(time.perf_counter() - t, 2))
    (out / "corpus.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--images", type=int, required=True, help="distinct 2D images (N)")
    ap.add_argument("--volumes", type=int, default=0, help="NIfTI volumes (M)")
    ap.add_argument("--side", type=int, default=64, help="image side in pixels (default 64)")
    ap.add_argument("--volume-side", type=int, default=32, help="volume side in voxels (default 32)")
    ap.add_argument("--box-fraction", type=float, default=0.1,
                    help="share of pathology images that also get boxes in BBox_List_2017.csv (default 0.1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="writer processes (default 2)")
    a = ap.parse_args(argv)
    if a.images < 0 or a.volumes < 0 or not 16 <= a.side <= 256 or not 16 <= a.volume_side <= 96:
        ap.error("--images/--volumes must be >= 0, --side 16..256, --volume-side 16..96")
    if a.out.exists() and any(a.out.iterdir()):
        ap.error(f"{a.out}: folder exists and is not empty")
    info = make_corpus(a.out, a.images, a.volumes, a.side, a.seed, a.jobs, a.box_fraction, a.volume_side)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
