"""Text-only sources (GMAI-VL-5.5M's Text-Single medical QA and Text-Multi dialogue; REFERENCE 1.1): what they
share. A text source is registered in ``SOURCES`` like an image source (so recipes, ``medvl taxonomy --formats``
and option checks treat it alike) but sets ``text_only = True``: the read stage skips it and the text step of the
build (:func:`run_text_task` in workers, then dedup and splits in :mod:`medvl.curate.text`) turns its rows into
text-only samples (no image) that flow through the exports, the mixture and the card like image samples.

A unit is one data file; :meth:`TextSource.load_text` yields one :class:`TextItem` per row or a Reject naming the
file, the row and the problem. Each item keeps the dataset's official split (from the file name or a field), its
language (detected from the text, not assumed) and a provenance id ``text#<task>#<dataset>#<split>#<row key>``."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from medvl.core.records import Reject
from medvl.sources.base import Item, Source, Unit

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
_SPLIT_WORDS = {"train": "train", "training": "train", "dev": "val", "val": "val", "valid": "val",
                "validation": "val", "validate": "val", "test": "test", "testing": "test"}
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


@dataclass
class TextItem:
    """One text-only sample before curation: turns alternate user / assistant, starting with the user."""

    key: str  # row key inside the dataset (its id field, else file stem + line number)
    turns: list[tuple[str, str]]
    task: str  # "qa" (Text-Single) or "dialogue" (Text-Multi)
    split: str | None  # the dataset's official split (train / val / test), None when it has none
    lang: str
    source_file: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_lang(text: str) -> str:
    """"zh" when Han characters are at least a fifth of the letters, "en" when Latin letters dominate, else
    "other" (detected from the text: a Chinese exam in a file called english.jsonl is still Chinese)."""
    han = len(_HAN.findall(text))
    latin = len(_LATIN.findall(text))
    if han and han * 5 >= han + latin / 4:  # a Han character carries about a word: ~4 Latin letters
        return "zh"
    return "en" if latin else "other"


def split_from_name(path: Path) -> str | None:
    """train / val / test from a file name (``train.jsonl``, ``dev.json``, ``phrases_no_exclude_test.jsonl``)."""
    words = re.split(r"[^a-z]+", path.stem.lower())
    found = {_SPLIT_WORDS[w] for w in words if w in _SPLIT_WORDS}
    return found.pop() if len(found) == 1 else None


def normalize_split(value: Any) -> str | None:
    return _SPLIT_WORDS.get(str(value).strip().lower()) if value not in (None, "") else None


class TextSource(Source):
    """Base of the text-only formats: units are data files; rows become TextItems."""

    text_only: ClassVar[bool] = True
    task = "cls"

    def data_files(self) -> list[Path]:
        file = getattr(self.opts, "file", None)
        if file:
            return [self.root / file]
        if self.root.is_file():
            return [self.root]
        return sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                      and self.accepts(p))

    def accepts(self, path: Path) -> bool:
        """Whether a data file found under the source folder belongs to this format (default: all)."""
        return True

    def units(self) -> Iterator[Unit | Reject]:
        files = self.data_files()
        if not files:
            yield self.reject(".", f"{self.root}: no {'/'.join(DATA_SUFFIXES)} data file found", stage="read")
        for p in files:
            if not p.is_file():
                yield self.reject(p.name, f"{p}: data file does not exist", stage="read")
                continue
            yield Unit(key=self.rel(p) if self.root.is_dir() else p.name, payload={"path": str(p)})

    def load(self, unit: Unit) -> Iterator[Item | Reject]:
        raise TypeError(f"{self.registry_name} is a text-only format: its rows are read by the text step")

    def load_text(self, unit: Unit) -> Iterator[TextItem | Reject]:
        raise NotImplementedError

    # row readers ---------------------------------------------------------------------------------
    def rows(self, unit: Unit) -> Iterator[tuple[str, Any] | Reject]:
        """(row label, parsed row) of a JSON list / dict, JSONL or CSV/TSV file; malformed rows are rejects."""
        path = Path(unit.payload["path"])
        name = unit.key
        suffix = path.suffix.lower()
        try:
            if suffix == ".json" and _is_json_lines(path):  # MedMCQA's .json files hold one object per line
                suffix = ".jsonl"
            if suffix == ".jsonl":
                with open(path, encoding="utf-8") as fh:
                    for n, line in enumerate(fh, 1):
                        if not line.strip():
                            continue
                        try:
                            yield f"{name} line {n}", json.loads(line)
                        except ValueError as e:
                            yield self.reject(f"{name}#{n}", f"{name} line {n}: not valid JSON ({e})", "validate")
            elif suffix == ".json":
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and not all(isinstance(v, (dict, list)) for v in data.values()):
                    yield f"{name} item 1", data  # one row (a JSON-lines file of one line)
                elif isinstance(data, dict):  # id -> row (PubMedQA's ori_pqal.json)
                    for k, v in data.items():
                        yield f"{name} key {k}", (k, v)
                elif isinstance(data, list):
                    for n, v in enumerate(data, 1):
                        yield f"{name} item {n}", v
                else:
                    yield self.reject(name, f"{name}: expected a JSON list or object, got {type(data).__name__}",
                                      "validate")
            else:
                delim = "\t" if suffix == ".tsv" else ","
                with open(path, encoding="utf-8-sig", newline="") as fh:
                    for n, row in enumerate(csv.DictReader(fh, delimiter=delim), 2):
                        yield f"{name} row {n}", row
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
            yield self.reject(name, f"{name}: cannot read ({type(e).__name__}: {e})", "read")


def _is_json_lines(path: Path) -> bool:
    """A .json file whose first line is a whole JSON object and which has more (JSON lines under .json)."""
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
        rest = fh.readline()
    if not first.strip().startswith("{") or not rest.strip():
        return False
    try:
        json.loads(first)
        return True
    except ValueError:
        return False


@dataclass
class TextTask:
    name: str  # journal unit "text/SSS-KKKKK"
    source: dict[str, Any]  # SourceConfig.model_dump()
    unit_key: str
    unit_payload: dict[str, Any]
    out: str  # the task's item shard


@dataclass
class TextResult:
    name: str
    items: int
    rejects: list[dict[str, Any]]
    sha256: str


def run_text_task(task: TextTask) -> TextResult:
    """Parse one data file into a shard of TextItems (one JSON line each, file order) and its rejects."""
    from medvl.core.shards import ShardWriter
    from medvl.sources.config import SourceConfig
    from medvl.sources.read import get_source

    src = get_source(SourceConfig.model_validate(task.source))
    rejects, n = [], 0
    with ShardWriter(Path(task.out)) as w:
        for obj in src.load_text(Unit(key=task.unit_key, payload=task.unit_payload)):
            if isinstance(obj, Reject):
                rejects.append(obj.to_dict())
                continue
            w.write(json.dumps(obj.to_dict(), ensure_ascii=False, sort_keys=True))
            n += 1
    return TextResult(name=task.name, items=n, rejects=rejects, sha256=w.sha256)


def is_text_format(fmt: str) -> bool:
    from medvl.sources import SOURCES

    return bool(getattr(SOURCES.get(fmt), "text_only", False))
