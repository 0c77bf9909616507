"""MedXpertQA, multimodal subset: ``MM/test.jsonl`` (2,000 QA) and ``MM/dev.jsonl``; images in ``images/``
(extracted from ``images.zip``; the zip itself is also read). Each question already ends with
``Answer Choices: (A) ... (E) ...``, so items carry ``meta["options_in_question"] = True`` and prompts must not
list the options again. Gold = ``label`` (a letter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.eval.benchmarks._common import (
    LETTERS, LoaderBase, ZipImages, check_split, clean_str, listing, missing_fields, read_jsonl, require_dir,
    safe_join)
from medvl.eval.types import BENCHMARKS, BenchmarkFormatError, EvalItem

FIELDS = ("id", "question", "options", "label", "images")


@BENCHMARKS.register("medxpertqa")
class MedXpertQA(LoaderBase):
    """MedXpertQA MM loader (5-option multiple choice, options already inside the question)."""

    splits = ("test", "dev")
    default_protocol = "mc_letter"
    description = "MedXpertQA MM test: 2,000 5-option MC (options already in the question text)"

    def load(self, data_dir: Path, split: str | None = None, **options: Any) -> list[EvalItem]:
        """Items of ``split`` (default test) in file order."""
        self._reset()
        self._options(options)
        split = check_split("medxpertqa", split, self.splits, "test")
        d = require_dir(data_dir, "medxpertqa")
        if not (d / "MM").is_dir() and (d / "MedXpertQA" / "MM").is_dir():
            d = d / "MedXpertQA"
        path = d / "MM" / f"{split}.jsonl"
        if not path.is_file():
            raise BenchmarkFormatError(f"medxpertqa: missing {path}; present: {listing(d / 'MM' if (d / 'MM').is_dir() else d)}")
        records = read_jsonl(path, self.skipped)
        if records and missing_fields({k: 1 for k in records[0]}, FIELDS):
            raise BenchmarkFormatError(
                f"{path}: missing field(s) {', '.join(missing_fields({k: 1 for k in records[0]}, FIELDS))}; "
                f"present: {', '.join(records[0])}")
        img_dir, zip_path = d / "images", d / "images.zip"
        zimgs = ZipImages(zip_path) if not img_dir.is_dir() and zip_path.is_file() else None
        if zimgs is None and not img_dir.is_dir():
            raise BenchmarkFormatError(f"medxpertqa: no images in {d}: expected images/ or images.zip; present: {listing(d)}")
        items = []
        try:
            for k, r in enumerate(records):
                rid = clean_str(r.get("id")) or f"{path.name}#{k + 1}"
                miss = missing_fields(r, FIELDS)
                if miss:
                    self._skip(rid, f"{path}: line {k + 1} lacks {', '.join(miss)}", "missing_field")
                    continue
                if not isinstance(r["options"], dict) or not isinstance(r["images"], list):
                    self._skip(rid, f"{path}: line {k + 1}: 'options' must be an object and 'images' a list",
                               "bad_options")
                    continue
                opts = {L: clean_str(r["options"][L]) for L in LETTERS if L in r["options"]}
                label = clean_str(r["label"]).upper()
                if label not in opts:
                    self._skip(rid, f"{path}: line {k + 1} label {label!r} is not one of the options {sorted(opts)}",
                               "bad_answer")
                    continue
                images: list[str | bytes] = []
                for name in r["images"]:
                    name = clean_str(name)
                    if zimgs is not None:
                        img: str | bytes | None = zimgs.get([f"images/{name}", name])
                    else:
                        p = safe_join(img_dir, name)
                        img = str(p) if p is not None and p.is_file() else None
                    if img is None:
                        break
                    images.append(img)
                if len(images) != len(r["images"]) or not images:
                    self._skip(rid, f"{path}: line {k + 1} image(s) {r['images']} not all found in {zip_path if zimgs else img_dir}",
                               "missing_image")
                    continue
                question = clean_str(r["question"])
                groups = {c: clean_str(r[c]) for c in ("medical_task", "body_system", "question_type") if r.get(c)}
                items.append(EvalItem(id=rid, question=question, images=images, answer=label, options=opts,
                                      answer_type="mc", lang="en", groups=groups,
                                      meta={"options_in_question": "Answer Choices:" in question,
                                            "image_names": r["images"], "source_file": f"MM/{path.name}"}))
        finally:
            if zimgs is not None:
                zimgs.close()
        return items
