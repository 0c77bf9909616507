"""A :class:`~medvl.export.base.Corpus` read from a build's shards (see :mod:`medvl.generate.stage`): each
split's views are a k-way merge of the chunks' id-sorted view shards, so exports stream a split of any size
in memory bounded by the number of chunks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from medvl.core.records import ImageRecord, Reject, Sample, Turn
from medvl.core.shards import merge_distinct, merge_keyed, read_lines
from medvl.export.base import Corpus, View, split_sort_key


def _distinct(paths: list[Path]) -> int:
    return sum(1 for _ in merge_distinct(paths, key=lambda x: x))


class DuplicateSampleId(ValueError):
    """Two samples of one split share an id (exports would mix them up)."""


class ShardCorpus(Corpus):
    """The corpus of a build: ``records`` (the id-sorted records file), ``sample_shards`` (in order),
    ``views_dir`` (``<split>/chunk-*.jsonl`` and ``<split>/images-*.txt``), ``rejects`` (the final rejects
    file) and the samples no export could use."""

    def __init__(self, records: Path, sample_shards: list[Path], views_dir: Path, rejects: Path | None,
                 skipped: list[str], images_file: Path | None = None) -> None:
        self._records, self._sample_shards, self._views = Path(records), list(sample_shards), Path(views_dir)
        self._rejects, self.skipped, self._images_file = rejects, list(skipped), images_file
        self._counts: dict[str, int] = {}
        self._images: dict[str, int] = {}

    def splits(self) -> list[str]:
        names = [p.name for p in self._views.iterdir() if p.is_dir()] if self._views.is_dir() else []
        return sorted((n for n in names if any((self._views / n).glob("chunk-*.jsonl"))), key=split_sort_key)

    def _chunks(self, split: str) -> list[Path]:
        return sorted((self._views / split).glob("chunk-*.jsonl"))

    def views(self, split: str) -> Iterator[View]:
        for _, body in merge_keyed(self._chunks(split), lambda sid: DuplicateSampleId(
                f"two samples have the id {sid!r}: exports would mix them up")):
            d = json.loads(body)
            s = Sample.from_dict(d["sample"])
            yield View(sample=s, split=split, turns=[(r, t) for r, t in d["turns"]], images=list(s.images),
                       sizes=[(int(w), int(h)) for w, h in d["sizes"]], meta=d["meta"])

    def count(self, split: str) -> int:
        if split not in self._counts:
            self._counts[split] = sum(sum(1 for _ in read_lines(p)) for p in self._chunks(split))
        return self._counts[split]

    def images(self, split: str) -> int:
        if split not in self._images:
            self._images[split] = _distinct(sorted((self._views / split).glob("images-*.txt")))
        return self._images[split]

    def n_images(self) -> int:
        runs = sorted(self._views.glob("*/images-*.txt"))
        if self._images_file is not None and self._images_file.is_file():
            runs.append(self._images_file)
        return _distinct(runs)

    def records(self) -> Iterator[ImageRecord]:
        for line in read_lines(self._records):
            yield ImageRecord.from_dict(json.loads(line))

    def samples(self) -> Iterator[Sample]:
        for p in self._sample_shards:
            for line in read_lines(p):
                d = json.loads(line)
                d["turns"] = [Turn(**t) for t in d["turns"]]
                yield Sample(**d)

    def rejects(self) -> Iterator[Reject] | None:
        if self._rejects is None:
            return None
        return (Reject(**json.loads(line)) for line in read_lines(self._rejects))
