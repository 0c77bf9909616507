"""LLaVA JSON, the layout GMAI-VL-5.5M was released in: ``llava/<split>.json`` (a JSON list, what LLaVA's
``--data_path`` reads) and ``llava/<split>.jsonl`` (one object per line). Each item::

    {"id": ..., "image": "images/3f/3fa2....png", "conversations": [{"from": "human", "value": "<image>\\n..."},
     {"from": "gpt", "value": ...}], "width": W, "height": H}

Image paths are relative to the output folder, so LLaVA's ``--image_folder`` is the output folder.
Multi-image samples have lists for ``image``, ``width`` and ``height``; text-only samples have none of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.export.base import EXPORTS, TextWriter, View, check_options, clear_outputs, dumps, skipped_extra
from medvl.export.manifest import ManifestEntry

FROM = {"user": "human", "assistant": "gpt", "system": "system"}
DEFAULTS: dict[str, Any] = {"jsonl": True}


def llava_item(v: View) -> dict[str, Any]:
    """One LLaVA conversation item (stable key order)."""
    item: dict[str, Any] = {"id": v.sample.id}
    if v.images:
        item["image"] = v.images[0] if len(v.images) == 1 else list(v.images)
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
    opts = check_options("llava", options, DEFAULTS)
    folder = Path(out_dir) / "llava"
    clear_outputs(folder, ["*.json", "*.jsonl"])
    out: list[ManifestEntry] = []
    for split in corpus.splits():
        extra = skipped_extra(corpus.skipped)
        n = 0
        with TextWriter(folder / f"{split}.json") as js, TextWriter(folder / f"{split}.jsonl", opts["jsonl"]) as jl:
            js.write("[\n")
            for v in corpus.views(split):
                row = dumps(llava_item(v))
                js.write((",\n" if n else "") + row)
                jl.write(row + "\n")
                n += 1
            js.write("\n]\n" if n else "]\n")
        images = corpus.images(split)
        out.append(ManifestEntry(f"llava/{split}.json", "llava-json", split, n, images, extra))
        if opts["jsonl"]:
            out.append(ManifestEntry(f"llava/{split}.jsonl", "llava-jsonl", split, n, images, dict(extra)))
    return out
