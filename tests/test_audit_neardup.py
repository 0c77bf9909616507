"""The audit finds re-encoded / re-rendered copies of training images in a benchmark (pHash OR dHash), and
not distant slices of the same brain or unrelated images. Training side: a folder of PNG slices of the
MNI152 template plus other real images; benchmark side: edited JPEG copies, as VQA sets ship them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from click.testing import CliRunner
from PIL import Image, ImageOps
from pydicom.data import get_testdata_file

from medvl.curate.audit import AuditConfig, BenchData, load_train, run_audit
from medvl.eval.types import EvalItem


def _mni_axial(z: int) -> np.ndarray:
    from nilearn import datasets

    v = np.asarray(datasets.load_mni152_template(resolution=1).get_fdata())
    lo, hi = np.percentile(v, [0.5, 99.5])
    return np.ascontiguousarray(np.rot90(np.clip(np.rint((v[:, :, z] - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)))


def _ct() -> np.ndarray:
    a = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array.astype(np.float64)
    return np.rint((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8)


def _jpeg(img: Image.Image, quality: int = 75) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _setup(tmp_path: Path) -> tuple[Path, BenchData, dict[str, str]]:
    from skimage import data as skd

    train = tmp_path / "train"
    train.mkdir()
    for z in (60, 80, 100, 120):
        Image.fromarray(_mni_axial(z)).save(train / f"mni_z{z}.png")
    Image.fromarray(_ct()).save(train / "ct_small.png")
    Image.fromarray(skd.retina()).resize((300, 300)).save(train / "retina.png")
    s = lambda z: Image.fromarray(_mni_axial(z))  # noqa: E731
    copies = {  # benchmark item -> (JPEG bytes, the training image it copies or None)
        "jpeg": (_jpeg(s(60)), "mni_z60.png"),  # medvl's own pHash: 12 bits off, threshold 6 -> missed before
        "gamma": (_jpeg(Image.fromarray(np.rint(255 * (_mni_axial(80) / 255) ** 1.4).astype(np.uint8))), "mni_z80.png"),
        "crop": (_jpeg(s(100).crop((3, 3, s(100).width - 3, s(100).height - 3)), 90), "mni_z100.png"),
        "resized": (_jpeg(ImageOps.autocontrast(s(120).resize((150, 180)), cutoff=1)), "mni_z120.png"),
        "ct_rgb": (_jpeg(Image.fromarray(np.repeat(_ct()[:, :, None], 3, 2)), 60), "ct_small.png"),
        "far_slice_low": (_jpeg(s(35)), None),
        "far_slice_high": (_jpeg(s(150)), None),
        "ihc": (_jpeg(Image.fromarray(skd.immunohistochemistry())), None),
    }
    items = [EvalItem(id=k, question=f"What is shown in image {k}?", images=[data], answer="x")
             for k, (data, _) in copies.items()]
    return train, BenchData(name="vqa-rad", data_dir=tmp_path, items=items), {k: v for k, (_, v) in copies.items()}


def test_edited_copies_found_far_slices_and_unrelated_not(tmp_path: Path) -> None:
    train, bench, truth = _setup(tmp_path)
    res = run_audit(load_train(train), [bench])
    found = {(e["benchmark_item"], e["train_image"]) for e in res.overlaps if e["match"] != "question"}
    assert found == {(k, v) for k, v in truth.items() if v}
    for e in res.overlaps:
        assert e["match"] == "perceptual" and e["matched_hashes"]
        assert e["bench_pixel_md5"] and e["bench_md5"] and e["md5"]
    assert res.summary["thresholds"]["dhash_distance"] == AuditConfig().dhash_distance
    assert res.summary["by_match"]["perceptual"] == 5


def test_thresholds_are_options(tmp_path: Path) -> None:
    """Zero thresholds keep only exact hash matches; the CLI takes both thresholds."""
    from medvl.cli.main import cli

    train, bench, _ = _setup(tmp_path)
    strict = run_audit(load_train(train), [bench], AuditConfig(phash_distance=0, dhash_distance=0))
    loose = run_audit(load_train(train), [bench])
    assert len(strict.overlaps) < len(loose.overlaps)
    r = CliRunner().invoke(cli, ["audit", "--help"])
    assert "--dhash-distance" in r.output and "--phash-distance" in r.output
