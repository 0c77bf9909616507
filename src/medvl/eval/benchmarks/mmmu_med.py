"""MMMU, Health & Medicine discipline: the 5 subjects Basic_Medical_Science, Clinical_Medicine,
Diagnostics_and_Laboratory_Medicine, Pharmacy, Public_Health, each ``<Subject>/<split>-*.parquet``
(dev 5 / validation 30 / test hidden per subject). Validation = 150 QA; the H&M overall is the question-count
weighted mean over the subjects (group ``subject``).

``options`` is a string holding a Python list: it is parsed with ``ast.literal_eval`` only (never ``eval``);
a row whose options are not a list literal, or whose question names an ``<image N>`` that the row lacks,
is skipped and recorded. Multiple-choice items get letters A, B, ...
(up to as many options as published); ``open`` items keep their free-text answer (some have letter answers:
kept as published, meta ``letter_answer``). Images are image_1..image_7 in number order; the question keeps
its ``<image N>`` placeholders (meta ``image_numbers`` maps images to N)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medvl.eval.benchmarks._common import (
    LETTERS, LoaderBase, check_split, clean_str, image_cell_bytes, listing, read_parquet_rows, require_dir)
from medvl.eval.benchmarks._options import BenchmarkOptions, CommaList
from medvl.eval.types import BENCHMARKS, BenchmarkFormatError, EvalItem

SUBJECTS = ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine", "Pharmacy",
            "Public_Health")
REQUIRED = ("id", "question", "options", "answer", "question_type")
PLACEHOLDER = re.compile(r"<image (\d+)>")


def parse_literal_list(text: Any) -> list[str]:
    """A string holding a Python list of strings -> the list, via ``ast.literal_eval`` only.
    Raises ValueError for anything that is not a list literal (code is never executed)."""
    if isinstance(text, list):
        value: Any = text
    else:
        try:
            value = ast.literal_eval(str(text).strip() or "[]")
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
            raise ValueError(f"not a Python list literal ({type(e).__name__})") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ValueError(f"not a list of strings (got {type(value).__name__})")
    return [str(v) for v in value]


class MMMUOptions(BenchmarkOptions):
    subjects: CommaList(Literal[SUBJECTS]) | None = Field(  # type: ignore[valid-type]
        None, description="only these subjects (default: all 5)")


@BENCHMARKS.register("mmmu-med")
class MMMUMed(LoaderBase):
    """MMMU Health & Medicine loader; option ``subjects`` (list) restricts the subjects."""

    Options = MMMUOptions
    splits = ("validation", "dev", "test")
    default_protocol = "mc_letter"
    description = "MMMU Health & Medicine validation: 150 QA over 5 subjects (30 each); overall = count-weighted"

    def load(self, data_dir: Path, split: str | None = None, **options: Any) -> list[EvalItem]:
        """Items of ``split`` (default validation): subjects in the order above, rows in file order."""
        self._reset()
        chosen = self._options(options).subjects or SUBJECTS
        subjects = tuple(s for s in SUBJECTS if s in chosen)  # always in the published order
        split = check_split("mmmu-med", split, self.splits, "validation")
        d = require_dir(data_dir, "mmmu-med")
        if not any((d / s).is_dir() for s in SUBJECTS) and (d / "MMMU").is_dir():
            d = d / "MMMU"
        items = []
        for subj in subjects:
            folder = d / subj
            files = sorted(folder.glob(f"{split}-*.parquet")) or sorted((folder / "data").glob(f"{split}-*.parquet"))
            if not files:
                raise BenchmarkFormatError(
                    f"mmmu-med: no {subj}/{split}-*.parquet in {d}; present: {listing(folder if folder.is_dir() else d)}")
            for path in files:
                for k, r in enumerate(read_parquet_rows(path, REQUIRED)):
                    item = self._item(r, k, subj, split, path)
                    if item is not None:
                        items.append(item)
        return items

    def _item(self, r: dict[str, Any], k: int, subj: str, split: str, path: Path) -> EvalItem | None:
        rid = clean_str(r["id"]) or f"{path.name}#{k}"
        try:
            option_list = parse_literal_list(r["options"])
        except ValueError as e:
            self._skip(rid, f"{path}: row {k} field 'options' {e}: {str(r['options'])[:80]!r}", "bad_options")
            return None
        qtype = clean_str(r["question_type"]) or "multiple-choice"
        answer = clean_str(r["answer"])
        hidden = split == "test" or answer in ("", "?")
        images, numbers = [], []
        for n in range(1, 8):
            b = image_cell_bytes(r.get(f"image_{n}"))
            if b is not None:
                images.append(b)
                numbers.append(n)
        question = clean_str(r["question"])
        mentioned = [int(m) for m in PLACEHOLDER.findall(question + " " + " ".join(option_list))]
        meta: dict[str, Any] = {"subject": subj, "image_numbers": numbers, "question_type": qtype,
                                "source_file": f"{subj}/{path.name}"}
        absent = sorted({n for n in mentioned if n not in numbers})
        if absent:  # the question cannot be asked without the image it names
            self._skip(rid, f"{path}: row {k} names <image {absent[0]}> but its image_{absent[0]} is empty",
                       "missing_image")
            return None
        if r.get("explanation"):
            meta["explanation"] = clean_str(r["explanation"])
        groups = {"subject": subj, "question_type": qtype}
        for c in ("subfield", "topic_difficulty"):
            if r.get(c):
                groups[c] = clean_str(r[c])
        if r.get("img_type"):
            try:
                groups["img_type"] = "; ".join(parse_literal_list(r["img_type"]))
            except ValueError:
                groups["img_type"] = clean_str(r["img_type"])
        if qtype == "multiple-choice":
            if not option_list:
                self._skip(rid, f"{path}: row {k} is multiple-choice but 'options' is empty", "bad_options")
                return None
            if len(option_list) > len(LETTERS):
                self._skip(rid, f"{path}: row {k} has {len(option_list)} options (too many)", "bad_options")
                return None
            opts = dict(zip(LETTERS, option_list))
            if not hidden and answer not in opts:
                self._skip(rid, f"{path}: row {k} answer {answer!r} is not an option letter {sorted(opts)}",
                           "bad_answer")
                return None
            return EvalItem(id=rid, question=question, images=images, answer=None if hidden else answer,
                            options=opts, answer_type="mc", lang="en", groups=groups, meta=meta)
        if option_list:
            meta["options"] = option_list
        if not hidden and len(answer) == 1 and answer in LETTERS:
            meta["letter_answer"] = True
        return EvalItem(id=rid, question=question, images=images, answer=None if hidden else answer,
                        answer_type="open", lang="en", groups=groups, meta=meta)
