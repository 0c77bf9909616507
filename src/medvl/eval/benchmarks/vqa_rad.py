"""VQA-RAD (radiology VQA). Three published layouts are detected:

- MEVF split (used by most papers): ``trainset.json`` / ``testset.json`` + ``images/``; 451 test questions,
  272 closed + 179 open by the published ``answer_type``; lower-case text.
- original release: ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/``; the test rows are those whose
  ``phrase_type`` starts with ``test_`` (``test_freeform`` / ``test_para``); capitalised answers.
- parquet copy (``flaviagiammarino/vqa-rad``): ``data/{train,test}-*.parquet`` with image, question, answer;
  no answer type, so closed = yes/no answers (251 closed + 200 open on test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medvl.eval.benchmarks._common import (
    LoaderBase, check_split, clean_str, listing, missing_fields, read_json_list, require_dir, require_record_fields,
    safe_join)
from medvl.eval.benchmarks._options import BenchmarkOptions
from medvl.eval.types import BENCHMARKS, BenchmarkFormatError, EvalItem

ORIGINAL_JSON = "VQA_RAD Dataset Public.json"
ORIGINAL_IMAGES = "VQA_RAD Image Folder"
JSON_FIELDS = ("qid", "image_name", "question", "answer", "answer_type")


class VQARADOptions(BenchmarkOptions):
    layout: Literal["mevf", "original", "parquet"] | None = Field(
        None, description="force a layout (default: detected from the files present)")


@BENCHMARKS.register("vqa-rad")
class VQARAD(LoaderBase):
    """VQA-RAD loader (MEVF json, original release or parquet copy)."""

    Options = VQARADOptions
    splits = ("test", "train")
    default_protocol = "short_answer"
    description = ("VQA-RAD test: 451 QA; MEVF/original json: 272 closed + 179 open by answer_type; "
                   "parquet copy (no type): closed = yes/no, 251 + 200")

    def detect_layout(self, d: Path) -> tuple[str, Path]:
        """(layout, folder) for the VQA-RAD files found in ``d`` or a known sub-folder."""
        for folder in (d, d / "data_RAD", d / "VQA_RAD", d / "vqa-rad"):
            if (folder / "testset.json").is_file() or (folder / "trainset.json").is_file():
                return "mevf", folder
            if (folder / ORIGINAL_JSON).is_file():
                return "original", folder
            if any(folder.glob("data/*.parquet")) or any(folder.glob("*-0000*.parquet")):
                return "parquet", folder
        raise BenchmarkFormatError(
            f"vqa-rad: no known layout in {d}: expected testset.json (MEVF), '{ORIGINAL_JSON}' (original release) "
            f"or data/test-*.parquet (parquet copy); present: {listing(d)}")

    def load(self, data_dir: Path, split: str | None = None, **options: Any) -> list[EvalItem]:
        """Items of ``split`` (default test) in file order. Option ``layout`` forces mevf/original/parquet."""
        self._reset()
        opts = self._options(options)
        split = check_split("vqa-rad", split, self.splits, "test")
        layout, folder = self.detect_layout(require_dir(data_dir, "vqa-rad"))
        layout = opts.layout or layout
        self.layout = layout
        if layout == "parquet":
            return self._load_parquet(folder, split)
        if layout == "mevf":
            path = folder / f"{split}set.json"
            if not path.is_file():
                raise BenchmarkFormatError(f"vqa-rad: missing {path}; present: {listing(folder)}")
            records, image_dir = read_json_list(path), folder / "images"
        elif layout == "original":
            path = folder / ORIGINAL_JSON
            records, image_dir = read_json_list(path), folder / ORIGINAL_IMAGES
            require_record_fields(records, JSON_FIELDS + ("phrase_type",), path)
            want_test = split == "test"
            records = [r for r in records
                       if not isinstance(r, dict) or str(r.get("phrase_type", "")).startswith("test_") == want_test]
        require_record_fields(records, JSON_FIELDS, path)
        return self._json_items(records, image_dir, path)

    def _json_items(self, records: list[dict[str, Any]], image_dir: Path, path: Path) -> list[EvalItem]:
        items = []
        for k, r in enumerate(records):
            rid = clean_str(r.get("qid")) if isinstance(r, dict) else ""
            rid = rid or f"{path.name}#{k}"
            miss = missing_fields(r, JSON_FIELDS)
            if miss:
                self._skip(rid, f"{path}: record {k} lacks {', '.join(miss)}", "missing_field")
                continue
            img = safe_join(image_dir, clean_str(r["image_name"]))
            if img is None or not img.is_file():
                self._skip(rid, f"{path}: image {r['image_name']!r} not found in {image_dir}", "missing_image")
                continue
            atype = clean_str(r["answer_type"]).upper()
            groups = {"answer_type": atype}
            if r.get("question_type") is not None:
                groups["question_type"] = clean_str(r["question_type"])
            if r.get("image_organ") is not None:
                groups["organ"] = clean_str(r["image_organ"])
            meta = {"layout": self.layout, "image_name": r["image_name"], "source_file": path.name}
            if "phrase_type" in r:
                meta["phrase_type"] = r["phrase_type"]
            items.append(EvalItem(id=rid, question=clean_str(r["question"]), images=[str(img)],
                                  answer=clean_str(r["answer"]), answer_type="closed" if atype == "CLOSED" else "open",
                                  lang="en", groups=groups, meta=meta))
        return items

    def _load_parquet(self, folder: Path, split: str) -> list[EvalItem]:
        return self._load_qa_parquet(folder, split, "vqa-rad", {"layout": "parquet"})
