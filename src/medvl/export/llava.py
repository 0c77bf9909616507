"""LLaVA JSON, the layout GMAI-VL-5.5M was released in: ``llava/<split>.json`` (a JSON list, what LLaVA's
``--data_path`` reads) and ``llava/<split>.jsonl`` (one object per line). Each item::

    {"id": ..., "image": "images/3f/3fa2....png", "conversations": [{"from": "human", "value": "<image>\\n..."},
     {"from": "gpt", "value": ...}], "width": W, "height": H}

Image paths are relative to the output folder, so LLaVA's ``--image_folder`` is the output folder.
Multi-image samples have lists for ``image``, ``width`` and ``height``; text-only samples have none of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.export.base import (EXPORTS, View, build_views, check_options, clear_outputs, distinct_images, dumps,
                               skipped_extra, write_text)
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
def export_llava(records, samples, out_dir: Path, recipe=None, *, rejects=None, options=None,
                 entries=None) -> list[ManifestEntry]:
    """Write ``llava/<split>.json`` (and ``.jsonl``) for every split; return their manifest entries."""
    opts = check_options("llava", options, DEFAULTS)
    folder = Path(out_dir) / "llava"
    clear_outputs(folder, ["*.json", "*.jsonl"])
    views, skipped = build_views(records, samples, Path(out_dir))
    out: list[ManifestEntry] = []
    for split, vs in views.items():
        rows = [dumps(llava_item(v)) for v in vs]
        extra = skipped_extra(skipped)
        write_text(folder / f"{split}.json", "[\n" + ",\n".join(rows) + ("\n]\n" if rows else "]\n"))
        out.append(ManifestEntry(f"llava/{split}.json", "llava-json", split, len(rows), distinct_images(vs), extra))
        if opts["jsonl"]:
            write_text(folder / f"{split}.jsonl", "".join(r + "\n" for r in rows))
            out.append(ManifestEntry(f"llava/{split}.jsonl", "llava-jsonl", split, len(rows), distinct_images(vs),
                                     dict(extra)))
    return out
