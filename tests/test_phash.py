"""Perceptual hashes (``imagehash`` pHash + dHash) and the near-duplicate search, on real medical images."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medvl.curate.phash import (DHASH_THRESHOLD, PHASH_THRESHOLD, _within, canonical_rgb, hamming,
                                near_duplicate_pairs, near_pairs_between, perceptual_hashes, pixel_md5)


def _ct() -> np.ndarray:
    """pydicom's CT_small.dcm as 8-bit grey (min..max)."""
    a = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array.astype(np.float64)
    return np.rint((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8)


def _mni_axial(z: int) -> np.ndarray:
    from nilearn import datasets

    v = np.asarray(datasets.load_mni152_template(resolution=1).get_fdata())
    s = v[:, :, z] / v.max() * 255
    return np.ascontiguousarray(np.rot90(np.rint(s).astype(np.uint8)))


def _jpeg(arr: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def test_hashes_are_imagehash_of_the_grey_image() -> None:
    from skimage import data as skd

    for arr in (_ct(), skd.retina()[::4, ::4], _mni_axial(90)):
        grey = Image.fromarray(arr).convert("L")
        expected = (str(imagehash.phash(grey)), str(imagehash.dhash(grey)))
        assert perceptual_hashes(arr) == expected
        assert perceptual_hashes(Image.fromarray(arr)) == expected
        assert all(len(h) == 16 for h in expected)
    ct = _ct()
    assert perceptual_hashes(np.repeat(ct[:, :, None], 3, axis=2)) == perceptual_hashes(ct)  # grey == its RGB copy
    # a 16-bit image hashes as its canonical (min..max scaled) 8-bit copy
    raw = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    i16 = Image.fromarray((raw.astype(np.int32) - raw.min()).astype(np.uint16))
    assert perceptual_hashes(i16) == perceptual_hashes(canonical_rgb(i16))


def test_flat_images_have_no_hashes_and_bad_arrays_are_named() -> None:
    assert perceptual_hashes(np.full((64, 64), 40, np.uint8)) == (None, None)
    assert perceptual_hashes(np.zeros((1, 50, 3), np.uint8)) == (None, None)
    with pytest.raises(ValueError, match="uint8 .*float64"):
        perceptual_hashes(np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"\(8, 8, 4\)"):
        perceptual_hashes(np.zeros((8, 8, 4), np.uint8))


def test_jpeg_of_a_brain_slice_is_a_near_duplicate() -> None:
    """The issue's case: a JPEG of an MR brain slice. On the (left-right symmetric) MNI152 template half the
    low DCT coefficients are ~0, so pHash bits flip under any re-encoding (imagehash: 14-17 bits even at
    quality 95); the dHash stays within 2 bits, and either hash decides."""
    for z in (60, 80, 120):
        png = _mni_axial(z)
        p0, d0 = perceptual_hashes(png)
        p1, d1 = perceptual_hashes(_jpeg(png, 75))
        assert hamming(d0, d1) <= 2 < DHASH_THRESHOLD
        assert near_duplicate_pairs([(p0, d0), (p1, d1)]) == [(0, 1)]


def test_pixel_md5_is_stable() -> None:
    """The fingerprint definition build records store: MD5 over 'HxWx3:' + the canonical RGB bytes."""
    import hashlib

    ct = _ct()
    rgb = canonical_rgb(Image.fromarray(ct))
    want = hashlib.md5(f"{ct.shape[0]}x{ct.shape[1]}x3:".encode() + np.repeat(ct[:, :, None], 3, 2).tobytes()).hexdigest()
    assert pixel_md5(rgb) == want


def _brute(a: np.ndarray, b: np.ndarray | None, t: int) -> list[tuple[int, int]]:
    ref = a if b is None else b
    d = np.bitwise_count(a[:, None] ^ ref[None, :])
    ok = d <= t
    if b is None:
        ok &= np.arange(a.size)[:, None] < np.arange(a.size)[None, :]
    return list(zip(*(x.tolist() for x in np.nonzero(ok))))


@pytest.mark.parametrize("t", [0, 3, 6, 10, 14, 24])
def test_banded_search_equals_brute_force(t: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import medvl.curate.phash as ph

    monkeypatch.setattr(ph, "_BRUTE_LIMIT", 0)  # force the multi-index path even for small sets
    rng = np.random.default_rng(t)
    base = rng.integers(0, 2**63, 1500, dtype=np.uint64) << np.uint64(1)
    flips = np.array([sum(1 << int(b) for b in rng.choice(64, int(k), replace=False)) for k in rng.integers(0, 16, 600)],
                     dtype=np.uint64)
    a = np.concatenate([base, base[:600] ^ flips])  # planted near copies at distances 0..15
    got = _within(a, None, t)
    assert [tuple(p) for p in got.tolist()] == _brute(a, None, t)
    b = np.concatenate([base[300:900] ^ flips, rng.integers(0, 2**63, 500, dtype=np.uint64)])
    assert [tuple(p) for p in _within(a, b, t).tolist()] == _brute(a, b, t)


def test_near_duplicate_pairs_or_rule_and_none() -> None:
    ct, mri = _ct(), _mni_axial(90)
    hashes = [perceptual_hashes(ct), perceptual_hashes(mri), perceptual_hashes(_jpeg(ct, 60)), (None, None),
              perceptual_hashes(np.asarray(Image.fromarray(mri).resize((150, 170))))]
    assert near_duplicate_pairs(hashes) == [(0, 2), (1, 4)]
    # either hash alone decides: a pair only the dHash links
    p = int(hashes[0][0], 16)
    only_d = (format(p ^ ((1 << 40) - 1), "016x"), hashes[0][1])
    assert near_duplicate_pairs([hashes[0], only_d]) == [(0, 1)]
    assert near_duplicate_pairs([hashes[0], (only_d[0], None)]) == []
    assert near_pairs_between([hashes[1]], hashes) == [(0, 1), (0, 4)]
    assert PHASH_THRESHOLD >= 0 and DHASH_THRESHOLD >= 0


def test_hash_columns_give_the_same_pairs_as_hex_pairs():
    """The compact columns the build's curation holds give exactly the pairs of the hex-pair list, missing
    hashes included; a malformed hash is an error naming its position."""
    import random

    from medvl.curate.phash import HashColumns

    rnd = random.Random(1)
    pairs = []
    for _ in range(2000):
        base = rnd.getrandbits(64)
        pairs.append((None if rnd.random() < 0.05 else f"{base:016x}",
                      None if rnd.random() < 0.05 else f"{rnd.getrandbits(64):016x}"))
        if rnd.random() < 0.2:  # a near copy: one pHash bit flipped
            pairs.append((f"{base ^ (1 << rnd.randrange(64)):016x}", None))
    cols = HashColumns()
    for ph, dh in pairs:
        cols.add(ph, dh)
    want = near_duplicate_pairs(pairs)
    assert len(want) > 300 and near_duplicate_pairs(cols) == want
    with pytest.raises(ValueError, match=rf"hash \[{len(pairs)}\]: expected 16 hex digits, got 'abc'"):
        cols.add("abc", None)


def test_fast_phash_equals_imagehash_on_real_crops() -> None:
    """The 8x8-block DCT equals imagehash's full DCT bit for bit, near-ties (symmetric brains) included."""
    from skimage import data as skd

    from medvl.curate.phash import _phash_small

    rng = np.random.default_rng(7)
    bases = [skd.retina(), skd.immunohistochemistry(), _ct()] + [_mni_axial(z) for z in (40, 70, 90, 120, 150)]
    n = 0
    for base in bases:
        for _ in range(60):
            s = int(rng.integers(24, min(base.shape[:2])))
            y, x = (int(rng.integers(0, base.shape[k] - s + 1)) for k in (0, 1))
            grey = Image.fromarray(np.ascontiguousarray(base[y:y + s, x:x + s])).convert("L")
            small = grey.resize((32, 32), Image.Resampling.LANCZOS)
            assert _phash_small(small) == str(imagehash.phash(small)), (base.shape, y, x, s)
            n += 1
        small = Image.fromarray(base).convert("L").resize((32, 32), Image.Resampling.LANCZOS)  # whole (symmetric) image
        assert _phash_small(small) == str(imagehash.phash(small))
    assert n == 60 * len(bases)


def test_numpy_lanczos_equals_pillow_and_hashes_equal_imagehash() -> None:
    """The numpy passes give Pillow's LANCZOS bytes exactly (both passes down, up, mixed, one pass only, tall and
    wide images on both sides of Pillow 13's pass-order rule, sizes the hashes never use), and perceptual_hashes
    equals imagehash's pHash / dHash on real crops, grey and colour, and random noise (noise stresses rounding)."""
    from skimage import data as skd

    from medvl.curate import phash as P

    assert P._pillow_pass_order() is not None  # the installed Pillow's order was recognized: numpy does the work
    rng = np.random.default_rng(11)
    bases = [skd.retina(), skd.immunohistochemistry(), _ct(), _mni_axial(90)]
    for i in range(240):
        base = bases[i % len(bases)]
        if i % 4 == 3:
            h, w = (int(v) for v in rng.integers(2, 400, 2))
            arr = rng.integers(0, 256, (h, w) + ((3,) if i % 8 == 3 else ()), dtype=np.uint8)
        else:
            h, w = (int(rng.integers(2, min(base.shape[:2]))) for _ in range(2))
            y, x = int(rng.integers(0, base.shape[0] - h + 1)), int(rng.integers(0, base.shape[1] - w + 1))
            arr = np.ascontiguousarray(base[y:y + h, x:x + w])
        grey = Image.fromarray(arr).convert("L")
        pixels = np.asarray(grey)
        for size in ((32, 32), (9, 8), (w, 17), (23, h), tuple(int(v) for v in rng.integers(1, 300, 2))):
            want = np.asarray(grey.resize(size, Image.Resampling.LANCZOS))
            assert np.array_equal(P.lanczos_l(pixels, *size), want), (arr.shape, size)
        ph, dh = str(imagehash.phash(grey)), str(imagehash.dhash(grey))
        flat = [not P._varies(np.asarray(grey.resize(s, Image.Resampling.LANCZOS))) for s in ((32, 32), (9, 8))]
        assert perceptual_hashes(arr) == (None if flat[0] else ph, None if flat[1] else dh), arr.shape
    # large images: several row blocks of the horizontal pass, several column blocks of a vertical pass run first
    tall = np.ascontiguousarray(np.asarray(Image.fromarray(skd.retina()).convert("L"))[:1400, 100:800])
    for pixels in (tall, np.ascontiguousarray(tall.T)):
        for size in ((32, 32), (9, 8), (600, 40)):
            want = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
            assert np.array_equal(P.lanczos_l(pixels, *size), want), (pixels.shape, size)


def test_unknown_pillow_pass_order_falls_back_to_pillow(monkeypatch) -> None:
    """When no known pass-order rule reproduces the installed Pillow (a future release), Pillow does the resizes."""
    from medvl.curate import phash as P

    monkeypatch.setattr(P, "PASS_ORDERS", {"vertical first": lambda h, w, oh, ow: False})
    P._pillow_pass_order.cache_clear()
    try:
        assert P._pillow_pass_order() is None
        arr = np.ascontiguousarray(_mni_axial(90)[20:180, 10:150])
        grey = Image.fromarray(arr)
        assert np.array_equal(P.lanczos_l(arr, 32, 32), np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS)))
        assert perceptual_hashes(arr) == (str(imagehash.phash(grey)), str(imagehash.dhash(grey)))
    finally:
        P._pillow_pass_order.cache_clear()


def test_array_pixel_md5_equals_the_canonical_definition() -> None:
    """``array_pixel_md5`` (no image round trip; grey arrays hashed a block of rows at a time) equals
    ``pixel_md5(canonical_rgb(...))`` for grey and RGB arrays, a large chest X-ray (several blocks) included."""
    from skimage import data as skd

    from medvl.curate.phash import array_pixel_md5

    cr = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm")).pixel_array.astype(np.float64)
    cr8 = np.rint((cr - cr.min()) / (cr.max() - cr.min()) * 255).astype(np.uint8)
    assert cr8.shape[0] * cr8.shape[1] > 2 << 20  # more than one block of rows
    for arr in (_ct(), cr8, skd.retina(), skd.immunohistochemistry()[:100, :37]):
        assert array_pixel_md5(arr) == pixel_md5(canonical_rgb(Image.fromarray(arr)))
    with pytest.raises(ValueError, match="uint8 .*float64"):
        array_pixel_md5(np.zeros((4, 4)))
