"""OmniMedVQA (127,995 multiple-choice QA on 118,010 images from 73 datasets; test only).

Layout: ``QA_information/Open-access/<dataset>.json`` and ``QA_information/Restricted-access/<dataset>.json``
(lists of items with question, gt_answer = the correct option text, option_A..option_D, image_path relative
to the root, question_type, modality_type) and ``Images/<dataset>/...``. Restricted-access images are not
redistributed: with ``access="restricted"`` or ``"all"`` items whose image is missing are skipped and counted
(``self.missing_images``), never dropped silently. The default ``access="open"`` is the open-access subset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medvl.eval.benchmarks._common import (
    LETTERS, LoaderBase, check_split, clean_str, listing, missing_fields, read_json_list, require_dir, safe_join)
from medvl.eval.benchmarks._options import BenchmarkOptions
from medvl.eval.types import BENCHMARKS, BenchmarkFormatError, EvalItem

ACCESS = {"open": ("Open-access",), "restricted": ("Restricted-access",), "all": ("Open-access", "Restricted-access")}
FIELDS = ("question", "gt_answer", "image_path")


class OmniMedVQAOptions(BenchmarkOptions):
    access: Literal["open", "restricted", "all"] = Field(
        "open", description="QA_information group(s): Open-access, Restricted-access (images not redistributed) or both")


@BENCHMARKS.register("omnimedvqa")
class OmniMedVQA(LoaderBase):
    """OmniMedVQA loader; option ``access`` = "open" (default) / "restricted" / "all"."""

    Options = OmniMedVQAOptions
    splits = ("test",)
    default_protocol = "mc_vlmevalkit"
    description = "OmniMedVQA open-access subset by default (access=all: 127,995 QA incl. restricted, if images present)"

    def load(self, data_dir: Path, split: str | None = None, **options: Any) -> list[EvalItem]:
        """Items of the selected access groups; datasets in name order, items in file order."""
        self._reset()
        access = self._options(options).access
        self.missing_images = 0
        check_split("omnimedvqa", split, self.splits, "test")
        d = require_dir(data_dir, "omnimedvqa")
        if not (d / "QA_information").is_dir() and (d / "OmniMedVQA" / "QA_information").is_dir():
            d = d / "OmniMedVQA"
        qa = d / "QA_information"
        files: list[Path] = []
        for group in ACCESS[access]:
            files += sorted((qa / group).glob("*.json"))
        if not files:
            raise BenchmarkFormatError(
                f"omnimedvqa: no QA json for access={access!r}: expected "
                f"{' and '.join(str(qa / g / '<dataset>.json') for g in ACCESS[access])}; "
                f"present: {listing(qa if qa.is_dir() else d)}")
        items = []
        for path in files:
            group = path.parent.name
            for k, r in enumerate(read_json_list(path)):
                rid = clean_str(r.get("question_id")) if isinstance(r, dict) else ""
                rid = rid or f"{path.stem}#{k}"
                miss = missing_fields(r, FIELDS)
                if miss:
                    self._skip(rid, f"{path}: item {k} lacks {', '.join(miss)}; present: {', '.join(r) if isinstance(r, dict) else type(r).__name__}",
                               "missing_field")
                    continue
                opts = {}
                for L in LETTERS[:6]:
                    text = clean_str(r.get(f"option_{L}"))
                    if text:
                        opts[L] = text
                gt = clean_str(r["gt_answer"])
                letter = next((L for L, t in opts.items() if t == gt), None)
                if letter is None:
                    self._skip(rid, f"{path}: item {k} gt_answer {gt!r} matches none of the options", "bad_answer")
                    continue
                img = safe_join(d, clean_str(r["image_path"]))
                if img is None or not img.is_file():
                    self.missing_images += 1
                    self._skip(rid, f"{path}: image {r['image_path']!r} not found under {d} ({group})", "missing_image")
                    continue
                groups = {"dataset": clean_str(r.get("dataset")) or path.stem, "access": group}
                if r.get("question_type") is not None:
                    groups["question_type"] = clean_str(r["question_type"])
                if r.get("modality_type") is not None:
                    groups["modality"] = clean_str(r["modality_type"])
                items.append(EvalItem(id=rid, question=clean_str(r["question"]), images=[str(img)], answer=letter,
                                      options=opts, answer_type="mc", lang="en", groups=groups,
                                      meta={"gt_answer": gt, "image_path": r["image_path"], "source_file": f"{group}/{path.name}"}))
        return items
