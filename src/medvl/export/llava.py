"""LLaVA JSON, the layout GMAI-VL-5.5M was released in: ``llava/<split>.json`` (a JSON list, what LLaVA's
``--data_path`` reads) and ``llava/<split>.jsonl`` (one object per line). Each item::

    {"id": ..., "image": "images/3f/3fa2....png", "conversations": [{"from": "human", "value": "<image>\\n..."},
     {"from": "gpt", "value": ...}], "width": W, "height": H}

Image paths are relative to the output folder, so LLaVA's ``--image_folder`` is the output folder; the
options ``image_paths: absolute`` or ``image_root: <folder>`` (:mod:`medvl.export.paths`) write them absolute or
relative to another folder, for tools that resolve paths against the working directory (ms-swift). Multi-image samples have lists for ``image``, ``width`` and ``height``; text-only samples have none of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.export.base import EXPORTS, TextWriter, View, clear_outputs, dumps, skipped_extra
from medvl.export.manifest import ManifestEntry
from medvl.export.paths import PathFn, check_export_options, image_path_fn, map_images

FROM = {"user": "human", "assistant": "gpt", "system": "system"}
DEFAULTS: dict[str, Any] = {"jsonl": True}


def llava_item(v: View, path_fn: PathFn | None = None) -> dict[str, Any]:
    """One LLaVA conversation item (stable key order); ``path_fn`` rewrites image paths (default: unchanged)."""
    item: dict[str, Any] = {"id": v.sample.id}
    if v.images:
        images = map_images(v.images, path_fn)
        item["image"] = images[0] if len(images) == 1 else images
    item["conversations"] = [{"from": FROM[role], "value": text} for role, text in v.turns]
    if v.images:
        if len(v.images) == 1:
            item["width"], item["height"] = v.sizes[0]
        else:
            item["width"] = [w for w, _ in v.sizes]
            item["height"] = [h for _, h in v.sizes]
    return item


@EXPORTS.register("llava")
def export_llava(corpus, out_dir: Path, recipe=None, *, options=None, entries=None) -> list[ManifestEntry]:
    """Write ``llava/<split>.json`` (and ``.jsonl``) for every split, streamed row by row (the JSON list is
    written item by item, never built as one string); return their manifest entries."""
    opts, paths = check_export_options("llava", options, DEFAULTS)
    path_fn, path_extra = image_path_fn(Path(out_dir), paths, recipe)
    folder = Path(out_dir) / "llava"
    clear_outputs(folder, ["*.json", "*.jsonl"])
    out: list[ManifestEntry] = []
    for split in corpus.splits():
        extra = {**skipped_extra(corpus.skipped), **path_extra}
        n = 0
        with TextWriter(folder / f"{split}.json") as js, TextWriter(folder / f"{split}.jsonl", opts["jsonl"]) as jl:
            js.write("[\n")
            for v in corpus.views(split):
                row = dumps(llava_item(v, path_fn))
                js.write((",\n" if n else "") + row)
                jl.write(row + "\n")
                n += 1
            js.write("\n]\n" if n else "]\n")
        images = corpus.images(split)
        out.append(ManifestEntry(f"llava/{split}.json", "llava-json", split, n, images, extra))
        if opts["jsonl"]:
            out.append(ManifestEntry(f"llava/{split}.jsonl", "llava-jsonl", split, n, images, dict(extra)))
    return out
