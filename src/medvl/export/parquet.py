"""Parquet shards in the Hugging Face ``datasets`` layout, images embedded:
``parquet/<split>-00000-of-0000N.parquet``.

Columns: ``id``, ``image`` (struct ``{bytes: binary, path: string}``, the ``datasets.Image`` storage, PNG
bytes embedded; null for text-only samples), ``extra_images`` (list of the same struct, images beyond the
first of multi-image samples, usually empty), ``conversations`` (list of ``{from, value}`` with ``<image>``
placeholders, LLaVA style), ``kind``, ``lang``, ``modality``, ``department``, ``clinical_task``,
``dataset``, ``record_id``, ``width``, ``height`` (of the first image). The schema metadata carries the
``huggingface`` features JSON, so ``datasets.load_dataset("parquet", data_files=...)`` decodes ``image``
to a PIL image. Shards hold ``rows_per_shard`` rows (default 5,000), written in row groups that end at
``row_group_rows`` rows (default 256) or once their embedded images reach ``row_group_bytes`` (default 16 MiB;
the Hugging Face ``datasets`` library writes image datasets in groups of 100 rows), so memory stays bounded
whatever the image size. 16 MiB keeps each group's image column below glibc's 32 MiB ceiling for serving a
buffer from the reusable heap instead of fresh pages: in a fresh process, the benchmark's train split (4,785 rows
of 140 KB images) took 121,000 page faults in 256-row groups and 27,000 in 16 MiB groups. Shards go through
:class:`~medvl.core.writeback.WriteBehindFile` (written to disk as they grow, not kept in the page cache)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from medvl.core.hashing import remember_digest
from medvl.core.writeback import WriteBehindFile
from medvl.export.base import EXPORTS, View, check_options, clear_outputs, clear_split_outputs, skipped_extra
from medvl.export.manifest import ManifestEntry

DEFAULTS: dict[str, Any] = {"rows_per_shard": 5000, "row_group_rows": 256, "row_group_bytes": 16 << 20,
                            "embed_images": True, "compression": "zstd"}
FROM = {"user": "human", "assistant": "gpt", "system": "system"}
STRING_COLUMNS = ("kind", "lang", "modality", "department", "clinical_task", "dataset", "record_id")

_STR = {"dtype": "string", "_type": "Value"}
# datasets features JSON; lists use the "[feature]" spelling that datasets 2.x to 5.x all read
HF_FEATURES: dict[str, Any] = {
    "id": _STR,
    "image": {"_type": "Image"},
    "extra_images": [{"_type": "Image"}],
    "conversations": [{"from": _STR, "value": _STR}],
    **{c: _STR for c in STRING_COLUMNS},
    "width": {"dtype": "int32", "_type": "Value"},
    "height": {"dtype": "int32", "_type": "Value"},
}


def arrow_schema():
    """The pyarrow schema with the Hugging Face features metadata attached."""
    import pyarrow as pa

    img = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [("id", pa.string()), ("image", img), ("extra_images", pa.list_(img)),
              ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
              *[(c, pa.string()) for c in STRING_COLUMNS], ("width", pa.int32()), ("height", pa.int32())]
    meta = {"huggingface": json.dumps({"info": {"features": HF_FEATURES}}, separators=(",", ":"))}
    return pa.schema(fields, metadata=meta)


def _row(v: View, out_dir: Path, embed: bool, cache: dict[str, bytes]) -> dict[str, Any]:
    def image(p: str) -> dict[str, Any]:
        if not embed:
            return {"bytes": None, "path": p}
        if p not in cache:
            cache.clear()  # samples are sorted by id, so an image's samples are mostly adjacent
            cache[p] = (out_dir / p).read_bytes()
        return {"bytes": cache[p], "path": p}

    row: dict[str, Any] = {"id": v.sample.id, "image": image(v.images[0]) if v.images else None,
                           "extra_images": [image(p) for p in v.images[1:]],
                           "conversations": [{"from": FROM[r], "value": t} for r, t in v.turns],
                           "kind": v.sample.kind, "lang": v.sample.lang}
    for c in ("modality", "department", "clinical_task", "dataset", "record_id"):
        row[c] = None if v.meta.get(c) is None else str(v.meta[c])
    row["width"], row["height"] = v.sizes[0] if v.sizes else (None, None)
    return row


@EXPORTS.register("parquet")
def export_parquet(corpus, out_dir: Path, recipe=None, *, options=None, entries=None,
                   split: str | None = None) -> list[ManifestEntry]:
    """Write the Parquet shards of every split (or of ``split`` only, replacing only that split's shards, so the
    splits of one build can be written side by side), streamed in row groups; one manifest entry per shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    opts = check_options("parquet", options, DEFAULTS)
    per_shard, per_group, group_bytes = (int(opts[k]) for k in ("rows_per_shard", "row_group_rows", "row_group_bytes"))
    if per_shard < 1 or per_group < 1 or group_bytes < 1:
        raise ValueError("export 'parquet': rows_per_shard, row_group_rows and row_group_bytes must be >= 1")
    out_dir = Path(out_dir)
    folder = out_dir / "parquet"
    if split is None:
        clear_outputs(folder, ["*.parquet"])
    else:
        clear_split_outputs(folder, split, r"-\d{5,}-of-\d{5,}\.parquet(\.tmp)?")
    folder.mkdir(parents=True, exist_ok=True)
    schema = arrow_schema()
    out: list[ManifestEntry] = []
    cache: dict[str, bytes] = {}
    embed = bool(opts["embed_images"])
    for split in corpus.splits() if split is None else [split]:
        n_shards = max(1, math.ceil(corpus.count(split) / per_shard))
        views = corpus.views(split)
        for k in range(n_shards):
            name = f"{split}-{k:05d}-of-{n_shards:05d}.parquet"
            tmp = folder / (name + ".tmp")
            bad: list[str] = []
            written, images = 0, set()
            with WriteBehindFile(tmp, sha256=True) as sink, \
                    pq.ParquetWriter(sink, schema, compression=opts["compression"]) as writer:
                rows, held = [], 0  # the row group being gathered and the image bytes it embeds
                for v in itertools.islice(views, per_shard):
                    images.update(v.images)
                    try:
                        row = _row(v, out_dir, embed, cache)
                    except OSError as e:
                        bad.append(f"sample {v.sample.id}: cannot read image ({e})")
                        continue
                    rows.append(row)
                    held += _embedded_bytes(row)
                    if len(rows) >= per_group or held >= group_bytes:
                        writer.write_table(rows_table(rows, schema))
                        written += len(rows)
                        rows, held = [], 0
                if rows:
                    writer.write_table(rows_table(rows, schema))
                    written += len(rows)
            tmp.replace(folder / name)
            remember_digest(folder / name, sink.hexdigest())  # the manifest's checksum, without reading it back
            # the footer just written (pyarrow's writer keeps it; read it back if this pyarrow does not)
            meta = getattr(getattr(writer, "writer", None), "metadata", None) or pq.read_metadata(folder / name)
            extra = skipped_extra(corpus.skipped + bad)
            extra["shard"], extra["shards"] = k, n_shards
            # the data's size before compression, which the card's dataset_info reports (as `datasets` does)
            extra["num_bytes"] = data_bytes(meta)
            out.append(ManifestEntry(f"parquet/{name}", "parquet", split, written, len(images), extra))
    return out


def rows_table(rows: list[dict[str, Any]], schema: Any) -> Any:
    """The pyarrow table of ``rows`` (dicts of the schema's columns), equal to ``pa.Table.from_pylist(rows, schema)``.

    Columns are assembled from their buffers (offsets, values, validity bitmaps) instead of converting Python
    lists: ``pa.array`` of a list checks whether it is a pandas object and so imports pandas, about 0.5 s in
    each worker that writes Parquet. Types handled: string, binary, int32, struct and list of those, any of
    them null (a test compares with ``from_pylist`` on every column shape the export writes)."""
    import pyarrow as pa

    return pa.Table.from_arrays([_column([r[f.name] for r in rows], f.type) for f in schema], schema=schema)


def _column(values: list[Any], typ: Any) -> Any:
    import numpy as np
    import pyarrow as pa

    n = len(values)
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    nulls = n - int(valid.sum())
    bitmap = None if nulls == 0 else pa.py_buffer(np.packbits(valid, bitorder="little"))
    if pa.types.is_string(typ) or pa.types.is_binary(typ):
        want = str if pa.types.is_string(typ) else (bytes, bytearray, memoryview)
        bad = next((v for v in values if v is not None and not isinstance(v, want)), None)
        if bad is not None:
            raise TypeError(f"rows_table: a {typ} column holds {type(bad).__name__} {bad!r:.40}")
        data = [b"" if v is None else (v.encode("utf-8") if isinstance(v, str) else bytes(v)) for v in values]
        return pa.Array.from_buffers(typ, n, [bitmap, pa.py_buffer(_offsets([len(d) for d in data])),
                                              pa.py_buffer(b"".join(data))], null_count=nulls)
    if pa.types.is_int32(typ):
        ints = np.fromiter((0 if v is None else int(v) for v in values), dtype=np.int32, count=n)
        return pa.Array.from_buffers(typ, n, [bitmap, pa.py_buffer(ints)], null_count=nulls)
    if pa.types.is_struct(typ):
        children = [_column([None if v is None else v.get(f.name) for v in values], f.type) for f in typ]
        return pa.Array.from_buffers(typ, n, [bitmap], null_count=nulls, children=children)
    if pa.types.is_list(typ):
        items = [x for v in values if v is not None for x in v]
        offsets = _offsets([0 if v is None else len(v) for v in values])
        return pa.Array.from_buffers(typ, n, [bitmap, pa.py_buffer(offsets)], null_count=nulls,
                                     children=[_column(items, typ.value_type)])
    raise TypeError(f"rows_table: column type {typ} is not handled")


def _offsets(lengths: list[int]) -> Any:
    """int32 offsets (n + 1 of them) of consecutive values of these lengths."""
    import numpy as np

    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    if out[-1] > np.iinfo(np.int32).max:
        raise ValueError("rows_table: a row group holds more than 2 GiB of one column; lower row_group_rows")
    return out.astype(np.int32)


def data_bytes(meta: Any) -> int:
    """A Parquet footer's data size before compression (its row groups' ``total_byte_size``), what ``datasets``
    reports as a split's ``num_bytes``."""
    return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))


def _embedded_bytes(row: dict[str, Any]) -> int:
    """Image bytes one row embeds (its first and extra images)."""
    return sum(len(im["bytes"]) for im in [row["image"], *row["extra_images"]] if im and im["bytes"])
