"""What makes a build load as it is: the Hugging Face metadata of the dataset card and its "How to load" lines.

The card is also written as ``README.md`` at the build root, where ``datasets.load_dataset(BUILD_DIR)`` and
the Hub read a dataset card (``datasets.config.REPOCARD_FILENAME``). In its YAML front matter:

- ``configs``: one config, ``default``, whose ``data_files`` is a list of ``{split, path}`` (the form
  ``datasets.utils.metadata.MetadataConfigs`` accepts), one glob per split of ``parquet/``;
- ``dataset_info``: ``features`` in the card's YAML list form (``Features._to_yaml_list``: the image column
  is ``dtype: image``) and ``splits`` with ``name``, ``num_examples`` and ``num_bytes`` (all three are
  required by ``SplitDict._from_yaml_list``, else the block is ignored); ``datasets`` checks
  ``num_examples`` against the rows it reads (``verify_splits``), so a card that does not match its shards
  fails to load instead of loading something else. ``num_bytes`` is the shards' uncompressed size from their
  Parquet footers, ``download_size`` their size on disk.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from medvl.core.yamlio import load_data_yaml
from medvl.export.base import split_sort_key
from medvl.export.manifest import ManifestEntry
from medvl.export.parquet import HF_FEATURES, data_bytes

HERE = Path(__file__).parent
README = "README.md"


def features_yaml(features: dict[str, Any]) -> list[dict[str, Any]]:
    """``datasets`` features JSON (``Features.to_dict`` form: Value, Image, ``[feature]`` lists, dict structs) in
    the dataset card's YAML list form, as ``Features._to_yaml_list`` writes it."""

    def inner(f: Any) -> dict[str, Any]:
        if isinstance(f, list):
            sub = inner(f[0])
            if list(sub) == ["dtype"] and isinstance(sub["dtype"], str):
                return {"list": sub["dtype"]}
            return {"list": sub["struct"] if list(sub) == ["struct"] else sub}
        if "_type" not in f:
            return {"struct": [{"name": k, **inner(v)} for k, v in f.items()]}
        if f["_type"] == "Value":
            return {"dtype": f["dtype"]}
        if f["_type"] == "Image":
            return {"dtype": "image"}
        raise ValueError(f"features_yaml: feature type {f['_type']!r} is not handled")

    return inner(features)["struct"]


def hub_metadata(entries: list[ManifestEntry], out_dir: Path) -> dict[str, Any]:
    """The ``configs`` and ``dataset_info`` keys of the card's front matter for the Parquet shards written
    (empty when there are none); sizes come from the entries (``num_bytes``, recorded by the export from the footer
    it wrote) or else from the shards' footers."""
    rows: dict[str, int] = {}
    size: dict[str, int] = {}
    on_disk = 0
    for e in entries:
        if e.format == "parquet" and e.split:
            rows[e.split] = rows.get(e.split, 0) + int(e.samples or 0)
            path = Path(out_dir) / e.path
            n = e.extra.get("num_bytes")
            if n is None:
                import pyarrow.parquet as pq

                n = data_bytes(pq.read_metadata(path))
            size[e.split] = size.get(e.split, 0) + int(n)
            on_disk += path.stat().st_size
    if not rows:
        return {}
    splits = sorted(rows, key=split_sort_key)
    return {
        "configs": [{"config_name": "default", "data_files": [
            {"split": s, "path": f"parquet/{s}-*.parquet"} for s in splits]}],
        "dataset_info": {"config_name": "default", "features": features_yaml(HF_FEATURES),
                         "splits": [{"name": s, "num_bytes": size[s], "num_examples": rows[s]} for s in splits],
                         "download_size": on_disk, "dataset_size": sum(size.values())},
    }


def _paths_mode(entries: list[ManifestEntry], fmt: str) -> tuple[str, str]:
    """How the files of ``fmt`` spell image paths ("relative", "absolute" or "image_root") and, for
    "image_root", this folder's path as seen from the root."""
    for e in entries:
        if e.format == fmt:
            if e.extra.get("image_paths") == "absolute":
                return "absolute", ""
            if "image_prefix" in e.extra:
                return "image_root", (e.extra["image_prefix"] or ".")
            return "relative", ""
    return "relative", ""


def loading_lines(entries: list[ManifestEntry]) -> tuple[str, str]:
    """The "How to load" list (markdown, HTML) for the formats that were written."""
    spec = load_data_yaml((HERE / "card_loading.yaml").read_text(encoding="utf-8"))
    have = {e.format for e in entries}
    splits = sorted({e.split for e in entries if e.split}, key=split_sort_key)
    split = splits[0] if splits else "train"
    # {pattern}: the WebDataset brace pattern of the first split written (train when there is one)
    patterns = {e.split: e.extra["pattern"] for e in entries if e.format == "webdataset-tar" and "pattern" in e.extra}
    pattern = next((patterns[s] for s in ("train", "val", "test", *sorted(patterns)) if s in patterns), "")
    names = [n for e in entries if e.format == "llamafactory-dataset-info" for n in e.extra.get("datasets", [])]
    dataset = next((n for n in names if n.endswith(f"_{split}")), names[0] if names else "")
    files = {"messages-jsonl": f"messages/{split}.jsonl", "llava-json": f"llava/{split}.json"}
    chosen: list[str] = []
    for line in spec.values():
        fmts = [line["format"]] if isinstance(line["format"], str) else list(line["format"])
        fmt = next((f for f in fmts if f in have), None)
        if fmt is None:
            continue
        mode, prefix = "relative", ""
        if "text" in line:
            text = line["text"]
        else:
            mode, prefix = _paths_mode(entries, fmt if line["paths_of"] == "chosen" else line["paths_of"])
            text = line[mode]
        for key, value in (("{splits}", "/".join(s for s in splits if any(
                e.format == "parquet" and e.split == s for e in entries))), ("{split}", split),
                           ("{file}", files.get(fmt, "")), ("{dataset}", dataset), ("{prefix}", prefix),
                           ("{pattern}", pattern)):
            text = text.replace(key, value)
        chosen.append(text)
    if not chosen:
        return "Only the JSONL tables (`records.jsonl`, `samples.jsonl`) were written.\n", "<p>Only the JSONL tables.</p>"
    intro = ("`BUILD_DIR` is this folder (the one holding this card); the lines that name it work from any working "
             "directory.\n\n")
    code = lambda t: re.sub(r"`([^`]*)`", lambda m: f"<code>{m.group(1)}</code>", html.escape(t, quote=False))  # noqa: E731
    return (intro + "".join(f"- {t}\n" for t in chosen),
            f"<p>{code(intro.strip())}</p>\n<ul>\n" + "".join(f"<li>{code(t)}</li>\n" for t in chosen) + "</ul>")
