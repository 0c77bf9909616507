"""PMC-VQA (multiple choice on figures from PubMed Central papers).

- ``version="v1"`` (default; papers' headline numbers): ``test_clean.csv`` (~2,000 QA; ``clean=False`` reads
  ``test.csv``), columns Figure_path, Question, Answer, Choice A..D, Answer_label; choices carry an ``A:`` prefix
  (sometimes after a space) which is stripped; images from ``images/`` or straight from ``images.zip``.
- ``version="v2"``: ``test_2.csv`` (unnamed index, Figure_path, Caption, Question, Choice A..D, Answer letter,
  split); images at ``figures/<Figure_path>`` or inside ``images_2.zip``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medvl.eval.benchmarks._common import (
    LETTERS, LoaderBase, ZipImages, check_split, clean_str, column_map, listing, read_delimited, require_dir,
    safe_join, strip_option_prefix)
from medvl.eval.benchmarks._options import BenchmarkOptions
from medvl.eval.types import BENCHMARKS, BenchmarkFormatError, EvalItem

CHOICES = ("choice a", "choice b", "choice c", "choice d")
VERSIONS = {
    # version -> (csv name, answer-letter column, image folder, zip name)
    "v1": ("test_clean.csv", "answer_label", "images", "images.zip"),
    "v2": ("test_2.csv", "answer", "figures", "images_2.zip"),
}


class PMCVQAOptions(BenchmarkOptions):
    version: Literal["v1", "v2"] = Field("v1", description="v1 = test_clean.csv / test.csv, v2 = test_2.csv")
    clean: bool = Field(True, description="v1 only: test_clean.csv (true, the papers' set) or test.csv (false)")


@BENCHMARKS.register("pmc-vqa")
class PMCVQA(LoaderBase):
    """PMC-VQA loader; options ``version`` ("v1" default / "v2") and ``clean`` (v1: test_clean.csv vs test.csv)."""

    Options = PMCVQAOptions
    splits = ("test",)
    default_protocol = "mc_letter"
    description = "PMC-VQA v1 test_clean (~2,000 4-option MC; version=v2 reads test_2.csv instead)"

    def load(self, data_dir: Path, split: str | None = None, **options: Any) -> list[EvalItem]:
        """Multiple-choice items in file order; ids are ``<csv name>#<row>`` (v2: the index column)."""
        self._reset()
        cfg = self._options(options)
        check_split("pmc-vqa", split, self.splits, "test")
        version = cfg.version
        d = require_dir(data_dir, "pmc-vqa")
        if not any((d / v[0]).is_file() or (d / v[3]).is_file() for v in VERSIONS.values()) and (d / "PMC-VQA").is_dir():
            d = d / "PMC-VQA"
        csv_name, ans_col, img_folder, zip_name = VERSIONS[version]
        if version == "v1" and not cfg.clean:
            csv_name = "test.csv"
        path = d / csv_name
        if not path.is_file():
            raise BenchmarkFormatError(f"pmc-vqa {version}: missing {path}; present: {listing(d)}")
        header, rows = read_delimited(path, ",", self.skipped)
        cols = column_map(header, ("figure_path", "question", *CHOICES, ans_col), path,
                          optional=("answer", "caption", "split", ""))
        images = self._image_source(d, img_folder, zip_name, version)
        self.version, self.source_file = version, csv_name
        items = []
        try:
            for k, r in enumerate(rows):
                idx = clean_str(r.get(header[0])) if version == "v2" else ""
                rid = f"{csv_name}#{idx or k}"
                fig = clean_str(r[cols["figure_path"]])
                opts = {}
                for L, c in zip(LETTERS, CHOICES):
                    text = strip_option_prefix(r[cols[c]], L)
                    if text:
                        opts[L] = text
                letter = clean_str(r[cols[ans_col]]).upper().rstrip(":.")
                question = clean_str(r[cols["question"]])
                if not fig or not question:
                    self._skip(rid, f"{path}: row {k + 2} lacks Figure_path or Question", "missing_field")
                    continue
                if letter not in opts:
                    self._skip(rid, f"{path}: row {k + 2} answer {letter!r} is not one of the options {sorted(opts)}",
                               "bad_answer")
                    continue
                image = images(fig)
                if image is None:
                    self._skip(rid, f"{path}: image {fig!r} not found in {d / img_folder} or {d / zip_name}",
                               "missing_image")
                    continue
                meta: dict[str, Any] = {"version": version, "figure_path": fig, "source_file": csv_name}
                if version == "v1" and "answer" in cols:
                    meta["answer_text"] = clean_str(r[cols["answer"]])
                if "caption" in cols:
                    meta["caption"] = clean_str(r[cols["caption"]])
                items.append(EvalItem(id=rid, question=question, images=[image], answer=letter, options=opts,
                                      answer_type="mc", lang="en", groups={}, meta=meta))
        finally:
            self._close()
        return items

    def _image_source(self, d: Path, folder: str, zip_name: str, version: str):
        """A function Figure_path -> image (file path or zip bytes) or None."""
        self._zips: list[ZipImages] = []
        img_dir = d / folder
        if img_dir.is_dir():
            def from_dir(fig: str) -> str | None:
                p = safe_join(img_dir, fig)
                return str(p) if p is not None and p.is_file() else None
            return from_dir
        zip_path = d / zip_name
        if zip_path.is_file():
            z = ZipImages(zip_path)
            self._zips.append(z)
            return lambda fig: z.get([f"{folder}/{fig}", fig])
        raise BenchmarkFormatError(
            f"pmc-vqa {version}: no images: expected {img_dir}/ or {zip_path}; present: {listing(d)}")

    def _close(self) -> None:
        for z in getattr(self, "_zips", []):
            z.close()
        self._zips = []
