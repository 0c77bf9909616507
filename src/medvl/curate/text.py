"""Curation of text-only samples: exact and near-duplicate removal, official splits, provenance ids.

Items (:class:`medvl.sources.text_base.TextItem`) are read from the text step's shards three times, test, then
val, then train and split-less items, so of two copies the one in the more valuable split is kept. An exact
duplicate has the same normalized text (case folded, punctuation and spaces removed); a near-duplicate has an
estimated Jaccard similarity of its shingle set (``shingle`` words, or characters for Chinese) to a kept sample of
at least ``threshold`` (MinHash with ``num_perm`` permutations, LSH candidates checked against the kept sample's
signature). Items without an official split get one by a seeded hash of their id with the recipe's fractions."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from medvl.core.records import Reject, Sample, Turn
from medvl.curate.config import TextDedupConfig

SPLIT_ORDER = ("test", "val", "train", None)
_PUNCT = re.compile(r"[\W_]+", re.UNICODE)
_WORD = re.compile(r"\w+", re.UNICODE)


def normalized(text: str) -> str:
    return _PUNCT.sub("", unicodedata.normalize("NFKC", text).casefold())


def shingles(text: str, k: int, lang: str) -> set[str]:
    t = unicodedata.normalize("NFKC", text).casefold()
    if lang == "zh":
        chars = _PUNCT.sub("", t)
        return {chars[i:i + k] for i in range(max(1, len(chars) - k + 1))}
    words = _WORD.findall(t)
    return {" ".join(words[i:i + k]) for i in range(max(1, len(words) - k + 1))}


def sample_id(task: str, dataset: str, split: str, key: str) -> str:
    return f"text#{task}#{dataset}#{split}#{key.replace('#', '_')}"


class TextDeduper:
    """Decides, item by item, whether a text is new; remembers what it kept."""

    def __init__(self, cfg: TextDedupConfig, seed: int = 0):
        self.cfg = cfg
        self.exact: dict[bytes, str] = {}
        self.lsh = None
        self.sigs: dict[str, np.ndarray] = {}
        if cfg.near_duplicates:
            from datasketch import MinHashLSH

            self.lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
        self.seed = seed

    def check(self, sid: str, text: str, lang: str) -> str | None:
        """None when ``text`` is kept (and remembered), else the reason it is a duplicate."""
        if self.cfg.exact:
            h = hashlib.sha256(normalized(text).encode("utf-8")).digest()[:16]
            if h in self.exact:
                return f"same text as {self.exact[h]} (after folding case, spaces and punctuation)"
        if self.lsh is not None:
            from datasketch import MinHash

            m = MinHash(num_perm=self.cfg.num_perm, seed=self.seed)
            m.update_batch([s.encode("utf-8") for s in sorted(shingles(text, self.cfg.shingle, lang))])
            best, best_j = None, 0.0
            for cand in sorted(self.lsh.query(m)):
                j = float(np.mean(self.sigs[cand] == m.hashvalues))
                if j > best_j or (j == best_j and best is not None and cand < best):
                    best, best_j = cand, j
            if best is not None and best_j >= self.cfg.threshold:
                return f"near-duplicate of {best} (estimated Jaccard {best_j:.2f} >= {self.cfg.threshold})"
            self.lsh.insert(sid, m)
            self.sigs[sid] = m.hashvalues.astype(np.uint64)
        if self.cfg.exact:
            self.exact[h] = sid
        return None


def split_of(item: dict[str, Any], sid_key: str, fractions: dict[str, float], seed: int) -> str:
    from medvl.curate.split import _hash_split

    return item["split"] or _hash_split(sid_key, fractions, seed)


def curate_text(passes: Iterable[Iterable[tuple[str, dict[str, Any]]]], cfg: TextDedupConfig,
                fractions: dict[str, float], seed: int) -> Iterator[Sample | Reject]:
    """Samples and rejects from the items of every text source. ``passes``: one iterable of (source name, item
    dict) per entry of :data:`SPLIT_ORDER` (items of other splits are skipped in each pass)."""
    dedup = TextDeduper(cfg, seed)
    seen_ids: set[str] = set()
    for want, items in zip(SPLIT_ORDER, passes):
        for dataset, it in items:
            if it["split"] != want:
                continue
            key = f"{dataset}#{it['key']}"
            split = split_of(it, key, fractions, seed)
            sid = sample_id(it["task"], dataset, split, str(it["key"]))
            item_name = f"{it['source_file']}#{it['key']}"
            if sid in seen_ids:
                yield Reject(source=dataset, item=item_name, reason=f"{it['source_file']}: id {it['key']!r} "
                             f"appears twice in split {split}", stage="validate")
                continue
            text = "\n".join(t for _, t in it["turns"])
            why = dedup.check(sid, text, it["lang"])
            if why is not None:
                yield Reject(source=dataset, item=item_name, reason=f"{sid}: {why}", stage="dedup")
                continue
            seen_ids.add(sid)
            yield Sample(id=sid, images=[], turns=[Turn(r, t) for r, t in it["turns"]], kind="text",
                         lang=it["lang"], record_id=None, generator="source", template_id=None, split=split,
                         meta={"dataset": dataset, "source_task": it["task"],
                               "text_subset": "multi" if len(it["turns"]) > 2 else "single",
                               "source_file": it["source_file"], **it["meta"]})
