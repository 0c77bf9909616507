"""Perceptual image hashes (DCT pHash and difference hash) and fast Hamming-distance search.

Both hashes are 64-bit integers computed from a grayscale, downscaled copy of the image, so they survive
re-encoding (PNG <-> JPEG), mild resizing and small intensity changes, unlike byte or pixel MD5s:

- ``phash``: 32x32 grayscale -> 2D DCT-II -> the 8x8 lowest frequencies -> one bit per coefficient,
  set when it is above the median of those 64 coefficients (the DC term excluded from the median).
- ``dhash``: 9x8 grayscale -> one bit per horizontally adjacent pair, set when the left pixel is brighter.

``near_pairs`` finds every (query, reference) pair within a Hamming distance with numpy's vectorized
popcount over uint64 XORs, in blocks, so 100k x 10k pairs take seconds and bounded memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
from PIL import Image
from scipy.fft import dctn

HASH_SIZE = 8  # 8x8 = 64 bits
PHASH_SIDE = 32  # DCT input side (4x the hash side)


def canonical_rgb(img: Image.Image) -> np.ndarray:
    """The image as an (H, W, 3) uint8 array: the canonical pixels that pixel MD5s and hashes use.

    16-bit and float images are scaled linearly from their own min..max to 0..255; palette, grayscale,
    CMYK and alpha images go through PIL's RGB conversion (alpha is dropped)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def pixel_md5(rgb: np.ndarray) -> str:
    """MD5 of canonical RGB pixels plus their shape: equal for lossless re-encodes of the same image."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"pixel_md5 expects an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    h = hashlib.md5(f"{rgb.shape[0]}x{rgb.shape[1]}x3:".encode("ascii"))
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


def _gray(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Luma of ``rgb`` resized to (height, width) with PIL's box-averaging resampler, as float64."""
    im = Image.fromarray(rgb, mode="RGB").convert("L")
    return np.asarray(im.resize((width, height), Image.Resampling.BOX), dtype=np.float64)


def _bits_to_int(bits: np.ndarray) -> int:
    """Row-major boolean bits -> one int (first bit is the most significant)."""
    return int.from_bytes(np.packbits(bits.ravel().astype(bool)).tobytes(), "big")


def phash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an (H, W, 3) uint8 image."""
    small = _gray(rgb, PHASH_SIDE, PHASH_SIDE)
    coeffs = dctn(small, type=2, norm="ortho")[:HASH_SIZE, :HASH_SIZE]
    median = float(np.median(coeffs.ravel()[1:]))
    return _bits_to_int(coeffs > median)


def dhash(rgb: np.ndarray) -> int:
    """64-bit horizontal difference hash of an (H, W, 3) uint8 image."""
    small = _gray(rgb, HASH_SIZE + 1, HASH_SIZE)
    return _bits_to_int(small[:, :-1] > small[:, 1:])


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return int((a ^ b).bit_count())


def as_hash_array(hashes: list[int]) -> np.ndarray:
    """Python ints -> a uint64 array suitable for :func:`near_pairs`."""
    return np.array(hashes, dtype=np.uint64) if hashes else np.zeros(0, dtype=np.uint64)


def near_pairs(queries: np.ndarray, refs: np.ndarray, max_distance: int,
               block_elems: int = 1 << 22) -> Iterator[tuple[int, int, int]]:
    """Every ``(query index, ref index, distance)`` with Hamming distance <= ``max_distance``.

    Works on blocks of queries so at most ``block_elems`` distances are held at once; yields in
    (query, ref) order."""
    queries = np.asarray(queries, dtype=np.uint64)
    refs = np.asarray(refs, dtype=np.uint64)
    if queries.size == 0 or refs.size == 0:
        return
    rows = max(1, block_elems // refs.size)
    for start in range(0, queries.size, rows):
        block = queries[start:start + rows]
        dist = np.bitwise_count(block[:, None] ^ refs[None, :])
        qi, ri = np.nonzero(dist <= max_distance)
        for q, r in zip(qi.tolist(), ri.tolist()):
            yield start + q, r, int(dist[q, r])
