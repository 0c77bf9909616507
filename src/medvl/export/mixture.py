"""The training mixture list in GMAI-VL's shape: each annotation file mapped to
``{"image_dir", "annotations", "sample_ratio", "length"}``.

Per-dataset annotation files make per-dataset ratios possible: ``mixture/<split>/<dataset>.jsonl``
(LLaVA JSONL rows, as in ``llava/``), listed in ``mixture/<split>.json``. ``mixture.json`` at the top is the
train split's list (what a trainer consumes; the first split when there is no train split). All paths are
relative to the output folder; ``image_dir`` is ``"."`` because image paths already start with
``images/``. Samples without a dataset go to ``text`` (text-only) or ``unknown``. Options: ``ratios`` (dataset -> sample_ratio), ``default_ratio`` (1.0), ``image_dir``, ``text_share``: the
share of text-only samples in each split's mixture (GMAI-VL mixes its Text-Single / Text-Multi data into stage
III): the text-only datasets' sample_ratio is scaled so that, weighted by sample_ratio x length, they make up
that share (null: ratios as given)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from medvl.export.base import EXPORTS, TextWriter, check_options, clear_outputs, dumps, write_text
from medvl.export.llava import llava_item
from medvl.export.manifest import ManifestEntry

DEFAULTS: dict[str, Any] = {"ratios": {}, "default_ratio": 1.0, "image_dir": ".", "text_share": None}


def _file_name(dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", dataset).strip("._") or "unknown"


@EXPORTS.register("mixture")
def export_mixture(corpus, out_dir: Path, recipe=None, *, options=None, entries=None) -> list[ManifestEntry]:
    """Write per-dataset annotation files (streamed, one open file per dataset of a split),
    ``mixture/<split>.json`` and ``mixture.json``."""
    opts = check_options("mixture", options, DEFAULTS)
    ratios = {str(k): float(v) for k, v in dict(opts["ratios"] or {}).items()}
    for k, v in [*ratios.items(), ("default_ratio", float(opts["default_ratio"]))]:
        if v < 0:
            raise ValueError(f"export 'mixture': sample_ratio for {k!r} must be >= 0, got {v}")
    share = opts["text_share"]
    if share is not None and not 0.0 <= float(share) < 1.0:
        raise ValueError(f"export 'mixture': text_share must be >= 0 and < 1, got {share}")
    out_dir = Path(out_dir)
    folder = out_dir / "mixture"
    clear_outputs(folder, ["*.json", "*/*.jsonl"])
    (out_dir / "mixture.json").unlink(missing_ok=True)
    out: list[ManifestEntry] = []
    lists: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for split in corpus.splits():
        files: dict[str, TextWriter] = {}
        counts: dict[str, int] = defaultdict(int)
        images: dict[str, set[int]] = defaultdict(set)  # hashes of image paths: distinct counts in bounded memory
        with_images: set[str] = set()
        with ExitStack() as stack:
            for v in corpus.views(split):
                ds = str(v.meta.get("dataset") or ("text" if not v.images else "unknown"))
                f = files.get(ds)
                if f is None:
                    f = files[ds] = stack.enter_context(TextWriter(out_dir / f"mixture/{split}/{_file_name(ds)}.jsonl"))
                f.write(dumps(llava_item(v)) + "\n")
                counts[ds] += 1
                images[ds].update(hash(p) for p in v.images)
                if v.images:
                    with_images.add(ds)
        base = {ds: ratios.get(ds, float(opts["default_ratio"])) for ds in files}
        if share is not None:
            base = text_share_ratios(base, counts, with_images, float(share))
        mapping: dict[str, Any] = {}
        for ds in sorted(files):
            rel = f"mixture/{split}/{_file_name(ds)}.jsonl"
            used.add(ds)
            mapping[ds] = {"image_dir": opts["image_dir"], "annotations": rel,
                           "sample_ratio": base[ds], "length": counts[ds]}
            out.append(ManifestEntry(rel, "llava-jsonl", split, counts[ds], len(images[ds]), {"dataset": ds}))
        lists[split] = mapping
        text = json.dumps(mapping, ensure_ascii=False, indent=2) + "\n"
        write_text(folder / f"{split}.json", text)
        out.append(ManifestEntry(f"mixture/{split}.json", "mixture-json", split, sum(m["length"] for m in
                                 mapping.values()), None, {"annotation_files": len(mapping)}))
    if lists:
        main = "train" if "train" in lists else next(iter(lists))
        write_text(out_dir / "mixture.json", json.dumps(lists[main], ensure_ascii=False, indent=2) + "\n")
        extra: dict[str, Any] = {"annotation_files": len(lists[main])}
        unused = sorted(set(ratios) - used)
        if unused:
            extra["unused_ratios"] = unused
        out.append(ManifestEntry("mixture.json", "mixture-json", main,
                                 sum(m["length"] for m in lists[main].values()), None, extra))
    return out


def text_share_ratios(ratios: dict[str, float], counts: dict[str, int], with_images: set[str],
                      share: float) -> dict[str, float]:
    """Scale the text-only datasets' ratios so that sum(ratio x length) of text is ``share`` of the whole."""
    image = sum(ratios[d] * counts[d] for d in ratios if d in with_images)
    text = sum(ratios[d] * counts[d] for d in ratios if d not in with_images)
    if image <= 0 or text <= 0:
        return dict(ratios)
    scale = share * image / ((1.0 - share) * text)
    return {d: (r if d in with_images else round(r * scale, 6)) for d, r in ratios.items()}
