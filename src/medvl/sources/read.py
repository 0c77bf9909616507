"""The read stage of a build: a source's work units become written images and ``ImageRecord``s.

:func:`run_read_task` is what an executor runs: one batch of units of one source -> one record shard
(records, rejects and the batch's counts, as JSON lines) under the build's work folder. Everything here is a
pure function of (recipe, units), so any executor gives the same shards. Images are content-addressed
(``images/<2 hex>/<2 hex>/<sha256>.png``), written through a temporary name, and reused when present."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deflate
import numpy as np
from PIL import Image

from medvl.core.hashing import content_hash, file_digest, patient_key
from medvl.core.shards import ShardWriter
from medvl.core.ids import slice_suffix
from medvl.core.records import ImageRecord, Region, Reject
from medvl.imaging.boxes import box_inside, clip_box, normalize_box, scale_regions
from medvl.io.raster import PNG_SIGNATURE
from medvl.core.privacy import Scrubber
from medvl.sources.config import ImageConfig, SourceConfig
from medvl.sources.base import SOURCES, Item, Source, Unit

_SOURCE_CACHE: dict[str, Source] = {}


@dataclass
class UnitResult:
    key: str
    records: list[ImageRecord] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    redacted: int = 0  # strings of this unit's records and rejects in which identifying values were replaced


@dataclass
class Job:
    """Everything a worker needs for one unit (picklable)."""

    source: dict[str, Any]  # SourceConfig.model_dump()
    unit: Unit
    out_dir: str
    image: dict[str, Any]  # ImageConfig.model_dump()
    salt: str
    verify: bool = False  # re-hash images already on disk before reusing them (a resumed build)


def get_source(cfg: SourceConfig) -> Source:
    key = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    src = _SOURCE_CACHE.get(key)
    if src is None:
        src = SOURCES.get(cfg.format)(cfg)
        _SOURCE_CACHE[key] = src
    return src


FAST_PNG_LEVELS = (0, 1, 2, 3)
"""``image.png_compress_level`` values that :func:`encode_png` writes itself (uint8 grey / RGB images): 0 stored
rows; 1-3 every row "Up"-filtered and deflated by libdeflate (the ``deflate`` package) at that level. Levels 4-9 go
through Pillow (per-row adaptive filters, zlib at that level)."""
_IDAT_MAX = 1 << 30  # bytes per IDAT chunk (a chunk length must stay below 2**31)


def encode_png(arr: np.ndarray, compress_level: int = 6) -> bytes:
    """Deterministic PNG bytes (no timestamps or text chunks) at ``compress_level`` (record images pass the
    recipe's ``image.png_compress_level``; the bytes, and so the content-addressed name, depend on it).

    A uint8 grey or RGB array at a level in :data:`FAST_PNG_LEVELS` is written here: level 0 as stored (unfiltered,
    uncompressed) rows; levels 1-3 with the PNG "Up" filter on every row (a vectorized subtraction of the row
    above) and libdeflate's deflate at that level, several times faster than Pillow's per-row filter search with
    zlib level 1 for about the same bytes on real medical images (README table). libdeflate compresses the whole
    buffer at once and its output depends only on the input, the level and the libdeflate release (which the
    ``deflate`` wheel bundles), so equal pixels always give equal bytes and equal content-addressed names; ISA-L,
    used before, gave a different (valid) stream for the same pixels in about 1 process in 200. Other arrays and
    levels 4-9 go through Pillow."""
    arr = np.asarray(arr)
    if compress_level in FAST_PNG_LEVELS and arr.dtype == np.uint8 and (
            arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        return _encode_rows_png(arr, compress_level)
    img = Image.fromarray(arr)  # uint8 -> L/RGB, uint16 2D -> I;16 (Pillow infers the mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _encode_rows_png(arr: np.ndarray, level: int) -> bytes:
    """PNG of a uint8 (H, W) or (H, W, 3) array: level 0 stored rows, 1-3 "Up"-filtered rows deflated by libdeflate."""
    h, w = arr.shape[:2]
    pixels = arr.reshape(h, -1)
    rows = np.empty((h, pixels.shape[1] + 1), dtype=np.uint8)
    if level == 0:
        rows[:, 0] = 0  # filter None
        rows[:, 1:] = pixels
        data = zlib.compress(rows, 0)
    else:
        rows[:, 0] = 2  # filter Up: each byte minus the byte above it, modulo 256 (the first row's "above" is 0)
        rows[0, 1:] = pixels[0]
        np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])
        data = deflate.zlib_compress(rows, level)
    return _png(w, h, 8, 0 if arr.ndim == 2 else 2, data)


def _png(width: int, height: int, depth: int, color_type: int, idat: bytes) -> bytes:
    """A PNG file: signature, IHDR (no interlace), the deflated rows in IDAT chunks, IEND."""
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    parts = [PNG_SIGNATURE, _png_chunk(b"IHDR", header)]
    view = memoryview(idat)
    for lo in range(0, max(1, len(view)), _IDAT_MAX):
        parts.append(_png_chunk(b"IDAT", view[lo:lo + _IDAT_MAX]))
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


def _png_chunk(kind: bytes, body: bytes | memoryview) -> bytes:
    return struct.pack(">I", len(body)) + kind + bytes(body) + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _encode_label_png(mask: np.ndarray) -> bytes:
    """Deterministic greyscale PNG of a 2D uint8 / uint16 label map: unfiltered rows, zlib level 1 (label
    maps are runs of a few values; per-row filter search costs more than it saves). Decodes to exactly
    the values ``encode_png`` would store."""
    h, w = mask.shape
    depth = 8 if mask.dtype == np.uint8 else 16
    rows = np.zeros((h, 1 + w * depth // 8), dtype=np.uint8)  # filter byte 0 (None) before each row
    rows[:, 1:] = np.ascontiguousarray(mask, dtype=">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(h, -1)
    return _png(w, h, depth, 0, zlib.compress(rows.tobytes(), 1))


def write_once(out_dir: Path, folder: str, data: bytes, verify: bool = False) -> tuple[str, str]:
    """Write bytes under ``folder/<2 hex>/<2 hex>/<sha256>.png`` unless already there; returns (relpath, sha256).

    Two levels of hash folders keep every folder small (65,536 leaves: ~85 files each at 5.5M images). The
    file is written to a temporary name and renamed, so a file under its real name is complete; with
    ``verify`` an existing file is re-hashed and rewritten when its bytes are not the expected ones."""
    digest = content_hash(data)
    rel = f"{folder}/{digest[:2]}/{digest[2:4]}/{digest}.png"
    path = os.path.join(out_dir, rel)
    if os.path.exists(path) and not (verify and file_digest(path) != digest):
        return rel, digest
    folder_path = os.path.dirname(path)
    tmp = os.path.join(folder_path, f".{digest}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, _WRITE_FLAGS, 0o666)
    except FileNotFoundError:  # first file of this folder: create it (no mkdir call per file)
        os.makedirs(folder_path, exist_ok=True)
        fd = os.open(tmp, _WRITE_FLAGS, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)  # atomic: concurrent writers of the same content are harmless
    return rel, digest


_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)


def _resize(item: Item, max_side: int) -> tuple[np.ndarray, np.ndarray | None, list[Region]]:
    arr, mask, regions = item.array, item.mask, item.regions
    h, w = arr.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return arr, mask, list(regions)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    arr = np.asarray(Image.fromarray(arr).resize((nw, nh), Image.Resampling.LANCZOS))
    if mask is not None:
        m = mask.astype(np.int32)
        mask = np.asarray(Image.fromarray(m, mode="I").resize((nw, nh), Image.Resampling.NEAREST)).astype(mask.dtype)
    return arr, mask, scale_regions(regions, nw / w, nh / h)


def item_key(item: Item) -> str:
    return item.source_file + slice_suffix(item.slice)


def finalize_item(item: Item, cfg: SourceConfig, src: Source, out_dir: Path, image_cfg: ImageConfig,
                  salt: str, md5_cache: dict[str, str | None] | None = None, verify: bool = False
                  ) -> tuple[ImageRecord | None, list[Reject], int]:
    """Validate, resize, write and describe one item. Returns the record (or None), any rejects, and how many
    strings had identifying values replaced."""
    scrub = Scrubber(item.sensitive, key=salt, protected=src.protected_terms())
    rec, rejects = _finalize(item, cfg, src, out_dir, image_cfg, salt, scrub,
                             md5_cache if md5_cache is not None else {}, verify)
    return rec, rejects, scrub.count


def _source_md5(src: Source, rel: str, cache: dict[str, str | None]) -> str | None:
    """MD5 of a source file's bytes (None when the item comes from a folder, e.g. a DICOM series)."""
    if rel not in cache:
        path = src.root / rel
        try:
            cache[rel] = file_digest(path, "md5") if path.is_file() else None
        except OSError:
            cache[rel] = None
    return cache[rel]


def canonical_patient_id(raw: str) -> str:
    """One spelling per patient id: surrounding space dropped, digit-only ids without leading zeros (NIH's
    ``Patient ID`` 21009 and the file name's ``00021009`` are one patient)."""
    s = str(raw).strip()
    return str(int(s)) if s.isdigit() else s


def _finalize(item: Item, cfg: SourceConfig, src: Source, out_dir: Path, image_cfg: ImageConfig, salt: str,
              scrub: Scrubber, md5_cache: dict[str, str | None], verify: bool = False
              ) -> tuple[ImageRecord | None, list[Reject]]:
    from medvl.curate.phash import array_pixel_md5, perceptual_hashes
    from medvl.taxonomy import normalize_body_region, normalize_label, normalize_modality

    key = scrub(item_key(item))
    rejects: list[Reject] = []

    def rej(reason: str, stage: str = "validate", sub: str = "") -> Reject:
        return Reject(source=cfg.name, item=key + sub, reason=scrub(reason), stage=stage)

    modality = cfg.modality or (normalize_modality(item.modality) if item.modality else None)
    if modality is None:
        return None, [rej(f"{key}: modality unknown (data says {item.modality!r}); set `modality` for "
                          f"source {cfg.name!r} in the recipe", stage="read")]

    arr = np.asarray(item.array)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        return None, [rej(f"{key}: source produced an unusable array (dtype {arr.dtype}, shape {arr.shape})")]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = np.ascontiguousarray(arr[:, :, :3])
    item.array = np.ascontiguousarray(arr)
    h0, w0 = arr.shape[:2]
    if min(h0, w0) < image_cfg.min_side:
        return None, [rej(f"{key}: image is {w0}x{h0}, smaller than image.min_side={image_cfg.min_side}")]
    if item.mask is not None and item.mask.shape[:2] != (h0, w0):
        return None, [rej(f"{key}: mask is {item.mask.shape[1]}x{item.mask.shape[0]} but image is {w0}x{h0}")]

    good: list[Region] = []
    for i, r in enumerate(item.regions):
        if not box_inside(r.box, w0, h0):
            rejects.append(rej(f"{key}: box {list(r.box)} for {r.label!r} lies outside the {w0}x{h0} image",
                               sub=f"#box{i}"))
            continue
        good.append(Region(label=r.label, box=clip_box(r.box, w0, h0), area=r.area, source=r.source))
    task = item.task or cfg.task or src.task
    if task == "det" and item.regions and not good:
        return None, rejects + [rej(f"{key}: no valid box left")]
    item.regions = good

    source_pixels = array_pixel_md5(item.array)  # = pixel_md5(canonical_rgb(...)) without the image round trip
    arr, mask, regions = _resize(item, image_cfg.max_side)
    h1, w1 = arr.shape[:2]
    visible = []
    for i, r in enumerate(regions):  # a box must stay a box in the 2-decimal normalized text
        nx1, ny1, nx2, ny2 = normalize_box(r.box, w1, h1)
        if nx2 <= nx1 or ny2 <= ny1:
            rejects.append(rej(f"{key}: box for {r.label!r} is under 1% of the {w1}x{h1} image and would be empty "
                               f"in normalized text; dropped", sub=f"#box{i}"))
            continue
        visible.append(r)
    if task == "det" and regions and not visible:
        return None, rejects + [rej(f"{key}: no box left that is visible at this image size")]
    regions = visible
    rel, digest = write_once(out_dir, "images", encode_png(arr, image_cfg.png_compress_level), verify)
    phash, dhash = perceptual_hashes(arr)
    normalized: dict[Any, str] = {}  # the item's regions repeat a few label strings: normalize each once

    def norm_label(raw: Any) -> str:
        out = normalized.get(raw)
        if out is None:
            out = normalized[raw] = normalize_label(scrub(raw), cfg.label_synonyms)
        return out

    mask_rel = None
    mask_values: dict[str, str | list[str]] = {}
    if mask is not None and item.mask_values:
        dtype = np.uint8 if int(mask.max(initial=0)) < 256 else np.uint16
        # label maps are mostly runs of a few values: fast zlib level compresses them nearly as well
        mask_rel, _ = write_once(out_dir, "masks", _encode_label_png(mask.astype(dtype, copy=False)), verify)
        mask_values = {str(k): sorted({norm_label(x) for x in v}) if isinstance(v, (list, tuple)) else norm_label(v)
                       for k, v in sorted(item.mask_values.items())}

    body = cfg.body_region or (normalize_body_region(item.body_region) if item.body_region else None)
    labels = sorted({norm_label(lb) for lb in item.labels if str(lb).strip()})
    regions = [Region(label=norm_label(r.label),
                      box=tuple(round(float(v), 2) for v in r.box), area=r.area, source=r.source) for r in regions]
    unit_id = patient_unit(item, cfg)
    extra = {k: v for k, v in item.extra.items() if k != "volume_key"}
    if item.more_arrays is not None:  # a multi-image item: every kept image's path and size, the record's first
        paths, sizes = _write_more(item.more_arrays, key, out_dir, image_cfg, verify, rejects, rej)
        extra["images"], extra["image_sizes"] = [rel, *paths], [[w1, h1], *sizes]
    extra["labels_exhaustive"] = bool(cfg.exhaustive_labels if cfg.exhaustive_labels is not None
                                      else src.labels_exhaustive())
    rec = ImageRecord(
        image=rel, sha256=digest, width=int(arr.shape[1]), height=int(arr.shape[0]), modality=modality,
        dataset=cfg.name, source_format=cfg.format, task=task, dimension=item.dimension,
        source_file=scrub(item.source_file), patient_key=patient_key(unit_id, salt, cfg.patient_namespace or cfg.name),
        labels=labels,
        regions=regions, department=cfg.department, body_region=body, clinical_task=cfg.clinical_task,
        slice=item.slice, licence=cfg.licence, view=scrub(item.view) if item.view else None, window=item.window,
        mask=mask_rel, mask_values=mask_values,
        extra=scrub(extra), source_md5=_source_md5(src, item.source_file, md5_cache), pixel_md5=source_pixels,
        phash=phash, dhash=dhash,
    )
    return rec, rejects


def _write_more(arrays: list[np.ndarray], key: str, out_dir: Path, image_cfg: ImageConfig, verify: bool,
                rejects: list[Reject], rej: Any) -> tuple[list[str], list[list[int]]]:
    """Write the further images of a multi-image item like its first (checked, downscaled to ``image.max_side``,
    content-addressed under ``images/``); an unusable or too small one is a reject ``<item>#image<k>`` (k = 2 for
    the item's second image). Returns the written paths and their [width, height]."""
    paths: list[str] = []
    sizes: list[list[int]] = []
    for k, a in enumerate(arrays, start=2):
        a = np.asarray(a)
        if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
            rejects.append(rej(f"{key}: image {k}: unusable array (dtype {a.dtype}, shape {a.shape})",
                               sub=f"#image{k}"))
            continue
        a = np.ascontiguousarray(a[:, :, :3] if a.ndim == 3 else a)
        h, w = a.shape[:2]
        if min(h, w) < image_cfg.min_side:
            rejects.append(rej(f"{key}: image {k} is {w}x{h}, smaller than image.min_side={image_cfg.min_side}",
                               sub=f"#image{k}"))
            continue
        scale = image_cfg.max_side / max(h, w)
        if scale < 1.0:
            a = np.asarray(Image.fromarray(a).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                     Image.Resampling.LANCZOS))
        paths.append(write_once(out_dir, "images", encode_png(a, image_cfg.png_compress_level), verify)[0])
        sizes.append([int(a.shape[1]), int(a.shape[0])])
    return paths, sizes


def patient_unit(item: Item, cfg: SourceConfig) -> str:
    """What makes two images "the same patient" for splitting: the data's patient id; else the recipe's
    ``patient_pattern`` applied to the file path; else the file or volume itself (namespaced by source, so
    equal relative paths in two sources stay different units). With ``split_unit: image`` every image (file
    and slice) is its own unit."""
    if cfg.split_unit == "image":
        where = json.dumps(item.slice, sort_keys=True, default=str) if item.slice else ""
        return f"image:{cfg.name}:{item.source_file}:{where}"
    if item.patient_raw and str(item.patient_raw).strip():
        return "id:" + canonical_patient_id(item.patient_raw)
    if cfg.patient_pattern:
        m = re.search(cfg.patient_pattern, item.source_file)
        if m and m.group(1):
            return "id:" + canonical_patient_id(m.group(1))
    return f"file:{cfg.name}:{item.extra.get('volume_key', item.source_file)}"


def run_job(job: Job) -> UnitResult:
    """Load one unit and finalize its items; never raises for bad data (a crash in a source becomes a reject
    naming the unit and the error, so one bad item never kills a run)."""
    return _run_unit(job, SourceConfig.model_validate(job.source), ImageConfig.model_validate(job.image))


def _run_unit(job: Job, cfg: SourceConfig, image_cfg: ImageConfig) -> UnitResult:
    """:func:`run_job` with the job's source and image settings already validated (once per read task)."""
    out_dir = Path(job.out_dir)
    res = UnitResult(key=job.unit.key)
    seen: set[str] = set()  # identifying values of the unit's items: its rejects are scrubbed of them too
    md5_cache: dict[str, str | None] = {}
    protected: list[str] = []
    try:
        src = get_source(cfg)
        protected = src.protected_terms()
        for obj in src.load(job.unit):
            if isinstance(obj, Reject):
                res.rejects.append(obj)
                continue
            seen |= obj.sensitive
            rec, rej, redacted = finalize_item(obj, cfg, src, out_dir, image_cfg, job.salt, md5_cache, job.verify)
            res.redacted += redacted
            res.rejects.extend(rej)
            if rec is not None:
                res.records.append(rec)
    except Exception as e:  # a bug or an unforeseen file problem: keep going, say exactly what happened
        res.rejects.append(Reject(source=cfg.name, item=job.unit.key,
                                  reason=f"{job.unit.key}: unexpected error while reading ({type(e).__name__}: {e})",
                                  stage="read"))
    if seen:
        scrub = Scrubber(seen, key=job.salt, protected=protected)
        res.rejects = [Reject(source=r.source, item=scrub(r.item), reason=scrub(r.reason), stage=r.stage)
                       for r in res.rejects]
        res.redacted += scrub.count
    return res


@dataclass
class ReadTask:
    """One batch of consecutive units of one source, written as one record shard (picklable)."""

    name: str  # journal unit name, e.g. "read/003-000012"
    shard: str  # absolute path of the record shard to write
    source: dict[str, Any]  # SourceConfig.model_dump()
    units: list[Unit]
    out_dir: str
    image: dict[str, Any]  # ImageConfig.model_dump()
    salt: str
    verify: bool = False


@dataclass
class ReadResult:
    name: str
    shard: str
    sha256: str
    stats: dict[str, int]  # units, kept_units, rejected_units, records, partial_rejects, redacted_strings


def run_read_task(task: ReadTask) -> ReadResult:
    """Load every unit of the batch (see :func:`run_job`) and write the record shard: one JSON line per
    record (``{"rec": ...}``) and per reject (``{"rej": ...}``), in unit order. Never raises for bad data."""
    stats = {"units": 0, "kept_units": 0, "rejected_units": 0, "records": 0, "partial_rejects": 0,
             "redacted_strings": 0}
    name = task.source["name"]
    cfg, image_cfg = SourceConfig.model_validate(task.source), ImageConfig.model_validate(task.image)
    with ShardWriter(task.shard) as w:
        for unit in task.units:
            res = _run_unit(Job(source=task.source, unit=unit, out_dir=task.out_dir, image=task.image,
                                salt=task.salt, verify=task.verify), cfg, image_cfg)
            stats["units"] += 1
            if res.records:
                stats["kept_units"] += 1
                stats["partial_rejects"] += len(res.rejects)
            else:
                stats["rejected_units"] += 1
                if not res.rejects:  # nothing lost silently
                    res.rejects.append(Reject(source=name, item=res.key, reason=f"{res.key}: produced no image",
                                              stage="read"))
            stats["records"] += len(res.records)
            stats["redacted_strings"] += res.redacted
            for rec in res.records:
                # no id yet: the id is assigned once, after source-wide scrubbing and dedup merges
                w.write(json.dumps({"rec": rec.to_dict(with_id=False)}, ensure_ascii=False, sort_keys=True))
            for rej in res.rejects:
                w.write(json.dumps({"rej": rej.to_dict()}, ensure_ascii=False, sort_keys=True))
    return ReadResult(name=task.name, shard=task.shard, sha256=w.sha256, stats=stats)
