"""Which samples the judge reads: per source dataset (``sample.meta.dataset``) the ``n`` samples whose
seeded hash of the sample id is smallest.

The choice depends only on the seed and the sample ids, never on the order of ``samples.jsonl`` or on how
many processes wrote it, so the same build and seed always give the same samples, and a rebuild that adds
samples changes the choice only where a new sample outranks an old one. Memory is ``n`` per dataset."""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from medvl.core.records import Sample


def rank(seed: int, sample_id: str) -> str:
    """The sort key of a sample under ``seed`` (hex sha256 of ``seed|id``)."""
    return hashlib.sha256(f"{seed}|{sample_id}".encode("utf-8")).hexdigest()


def dataset_of(sample: Sample) -> str:
    """The source dataset a sample came from (the recipe source name), ``"(unknown)"`` when not recorded."""
    return str(sample.meta.get("dataset") or "(unknown)")


def iter_samples(path: Path) -> Iterator[Sample]:
    """Samples of a ``samples.jsonl``; a line that is not a sample raises ValueError naming file and line."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield Sample.from_dict(json.loads(line))
            except (ValueError, TypeError, KeyError) as e:
                raise ValueError(f"{path}: line {i} is not a medvl sample ({type(e).__name__}: {e})") from None


def choose(samples: Iterable[Sample], n: int, seed: int = 0, datasets: set[str] | None = None,
           counts: Counter | None = None) -> dict[str, list[Sample]]:
    """Up to ``n`` samples per dataset (all of a smaller dataset), each list in rank order; datasets sorted
    by name. ``datasets`` limits the choice to those names; ``counts`` (when given) gets the number of
    samples of every dataset."""
    if n < 1:
        raise ValueError(f"samples per dataset must be >= 1, got {n}")
    heaps: dict[str, list[tuple[str, int, Any]]] = {}
    for i, s in enumerate(samples):
        ds = dataset_of(s)
        if counts is not None:
            counts[ds] += 1
        if datasets is not None and ds not in datasets:
            continue
        h = heaps.setdefault(ds, [])
        item = (_neg(rank(seed, s.id)), -i, s)  # max-heap on rank: the worst kept sample is on top
        if len(h) < n:
            heapq.heappush(h, item)
        elif item[0] > h[0][0]:
            heapq.heapreplace(h, item)
    out = {}
    for ds in sorted(heaps):
        out[ds] = [s for _, _, s in sorted(heaps[ds], key=lambda t: (t[0], t[1]), reverse=True)]
    return out


def _neg(hexkey: str) -> str:
    """A key whose order is the reverse of ``hexkey``'s (heapq is a min-heap)."""
    return hexkey.translate(_FLIP)


_FLIP = str.maketrans("0123456789abcdef", "fedcba9876543210")
