"""SLAKE (bilingual radiology VQA). Layouts: ``Slake1.0/`` (``train.json``, ``validate.json``, ``test.json``,
``imgs/xmlab<N>/source.jpg``) or the hub copy (``validation.json`` and ``imgs.zip``; images are read straight
from the zip). Closed/open comes from the published ``answer_type`` (so the 61 English closed answers that
are not yes/no and Chinese 是的/不包含 forms are "closed").

Headline numbers differ between papers: English test only = 1,061 (645 open + 416 closed, the default
``lang="en"``) versus English + Chinese = 2,094 (``lang="all"``). Say which one a score uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medvl.eval.benchmarks._common import (
    LoaderBase, ZipImages, check_split, clean_str, listing, missing_fields, read_json_list, require_dir,
    require_record_fields, safe_join)
from medvl.eval.benchmarks._options import BenchmarkOptions
from medvl.eval.types import BENCHMARKS, BenchmarkFormatError, EvalItem

FIELDS = ("img_name", "question", "answer", "q_lang", "answer_type")
SPLIT_FILES = {"test": ("test.json",), "train": ("train.json",), "validation": ("validate.json", "validation.json")}
LANGS = ("en", "zh", "all")


class SLAKEOptions(BenchmarkOptions):
    lang: Literal["en", "zh", "all"] = Field(
        "en", description="question language: en = 1,061 test QA, zh = 1,033, all = both (2,094)")


@BENCHMARKS.register("slake")
class SLAKE(LoaderBase):
    """SLAKE loader (Slake1.0 folder or hub copy with imgs.zip); option ``lang`` = en (default) / zh / all."""

    Options = SLAKEOptions
    splits = ("test", "validation", "train")
    default_protocol = "short_answer"
    description = "SLAKE test, English only by default: 1,061 = 645 open + 416 closed (lang=all: en+zh 2,094)"

    def _folder(self, d: Path) -> Path:
        for folder in (d, d / "Slake1.0", d / "SLAKE"):
            if any((folder / n).is_file() for names in SPLIT_FILES.values() for n in names):
                return folder
        raise BenchmarkFormatError(
            f"slake: no SLAKE json in {d}: expected test.json / train.json / validate.json (or validation.json) "
            f"with imgs/ or imgs.zip; present: {listing(d)}")

    def load(self, data_dir: Path, split: str | None = None, **options: Any) -> list[EvalItem]:
        """Items of ``split`` (default test) filtered by ``lang`` ("en" default, "zh", "all"), in file order."""
        self._reset()
        lang = self._options(options).lang
        split = check_split("slake", split, self.splits, "test")
        folder = self._folder(require_dir(data_dir, "slake"))
        path = next((folder / n for n in SPLIT_FILES[split] if (folder / n).is_file()), None)
        if path is None:
            raise BenchmarkFormatError(
                f"slake: no file for split {split!r} in {folder}: expected {' or '.join(SPLIT_FILES[split])}; "
                f"present: {listing(folder)}")
        records = read_json_list(path)
        require_record_fields(records, FIELDS, path)
        zip_path = folder / "imgs.zip"
        img_dir = folder / "imgs"
        zimgs = ZipImages(zip_path) if not img_dir.is_dir() and zip_path.is_file() else None
        if zimgs is None and not img_dir.is_dir():
            raise BenchmarkFormatError(f"slake: no images in {folder}: expected imgs/ or imgs.zip; present: {listing(folder)}")
        self.layout = "hub" if zimgs is not None else "slake1.0"
        items = []
        try:
            for k, r in enumerate(records):
                rid = clean_str(r.get("qid")) if isinstance(r, dict) else ""
                rid = rid or f"{path.name}#{k}"
                miss = missing_fields(r, FIELDS)
                if miss:
                    self._skip(rid, f"{path}: record {k} lacks {', '.join(miss)}", "missing_field")
                    continue
                q_lang = clean_str(r["q_lang"])
                if lang != "all" and q_lang != lang:
                    self._not_selected(f"q_lang {q_lang!r} (option lang={lang})")
                    continue
                name = clean_str(r["img_name"])
                image: str | bytes | None
                if zimgs is not None:
                    image = zimgs.get([f"imgs/{name}", name, f"Slake1.0/imgs/{name}"])
                    where = zip_path
                else:
                    p = safe_join(img_dir, name)
                    image, where = (str(p) if p is not None and p.is_file() else None), img_dir
                if image is None:
                    self._skip(rid, f"{path}: image {name!r} not found in {where}", "missing_image")
                    continue
                atype = clean_str(r["answer_type"]).upper()
                groups = {"answer_type": atype}
                for src, dst in (("modality", "modality"), ("content_type", "content_type"),
                                 ("location", "location"), ("base_type", "base_type")):
                    if r.get(src) is not None:
                        groups[dst] = clean_str(r[src])
                meta = {"layout": self.layout, "img_id": r.get("img_id"), "img_name": name, "source_file": path.name}
                if r.get("triple") is not None:
                    meta["triple"] = r["triple"]
                items.append(EvalItem(id=rid, question=clean_str(r["question"]), images=[image],
                                      answer=clean_str(r["answer"]),
                                      answer_type="closed" if atype == "CLOSED" else "open",
                                      lang=q_lang or "en", groups=groups, meta=meta))
        finally:
            if zimgs is not None:
                zimgs.close()
        return items
