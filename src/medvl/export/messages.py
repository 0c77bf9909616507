"""Messages JSONL, the ShareGPT "messages" layout LLaMA-Factory and ms-swift read:
``messages/<split>.jsonl``, one object per line::

    {"id": ..., "messages": [{"role": "user", "content": "<image>..."}, {"role": "assistant", "content": ...}],
     "images": ["images/3f/3fa2....png"]}

Image paths are relative to the output folder by default; the options ``image_paths: absolute`` or
``image_root: <folder>`` (:mod:`medvl.export.paths`) write them absolute or relative to another folder. The
export also writes
``dataset_info.json`` in the output folder, the LLaMA-Factory dataset registry, so training with
``dataset_dir`` = the output folder resolves both the JSONL files and the image paths (LLaMA-Factory
resolves images against its media dir, which defaults to ``dataset_dir``). ms-swift resolves relative
image paths against the working directory, then against ``ROOT_IMAGE_DIR``: set ``ROOT_IMAGE_DIR`` to the
output folder (default paths) or to ``image_root``, or write absolute paths."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medvl.export.base import EXPORTS, TextWriter, View, clear_outputs, dumps, skipped_extra, write_text
from medvl.export.manifest import ManifestEntry
from medvl.export.paths import PathFn, check_export_options, image_path_fn, map_images

DEFAULTS: dict[str, Any] = {"dataset_info": True}


def messages_item(v: View, path_fn: PathFn | None = None) -> dict[str, Any]:
    """One messages row (stable key order); ``path_fn`` rewrites image paths (default: unchanged)."""
    return {"id": v.sample.id, "messages": [{"role": r, "content": t} for r, t in v.turns],
            "images": map_images(v.images, path_fn)}


def dataset_info(name: str, splits: list[str]) -> dict[str, Any]:
    """LLaMA-Factory ``dataset_info.json`` entries, one per split file (sharegpt formatting, messages columns)."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "medvl"
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "system_tag": "system"}
    return {f"{base}_{split}": {"file_name": f"messages/{split}.jsonl", "formatting": "sharegpt",
                                "columns": {"messages": "messages", "images": "images"}, "tags": dict(tags)}
            for split in splits}


@EXPORTS.register("messages")
def export_messages(corpus, out_dir: Path, recipe=None, *, options=None, entries=None) -> list[ManifestEntry]:
    """Write ``messages/<split>.jsonl`` (streamed) and ``dataset_info.json``; return their manifest entries."""
    opts, paths = check_export_options("messages", options, DEFAULTS)
    out_dir = Path(out_dir)
    path_fn, path_extra = image_path_fn(out_dir, paths, recipe)
    folder = out_dir / "messages"
    clear_outputs(folder, ["*.jsonl"])
    out: list[ManifestEntry] = []
    splits = corpus.splits()
    for split in splits:
        n = 0
        with TextWriter(folder / f"{split}.jsonl") as f:
            for v in corpus.views(split):
                f.write(dumps(messages_item(v, path_fn)) + "\n")
                n += 1
        out.append(ManifestEntry(f"messages/{split}.jsonl", "messages-jsonl", split, n, corpus.images(split),
                                 {**skipped_extra(corpus.skipped), **path_extra}))
    if opts["dataset_info"]:
        info = dataset_info(getattr(recipe, "name", None) or "medvl", splits)
        write_text(out_dir / "dataset_info.json", json.dumps(info, ensure_ascii=False, indent=2) + "\n")
        out.append(ManifestEntry("dataset_info.json", "llamafactory-dataset-info", None, None, None,
                                 {"datasets": sorted(info)}))
    return out
