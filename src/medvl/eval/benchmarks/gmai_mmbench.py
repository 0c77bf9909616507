"""GMAI-MMBench (VLMEvalKit TSV): ``GMAI-MMBench_VAL.tsv`` (4,550 rows with answers) and the TEST split as
11 part files ``GMAI_mm_bench_TEST_part_<k>.tsv`` without an answer column (answers are hidden: items get
``answer=None`` and ``write_submission`` writes the predictions file for the organizers).

Columns: index, image (base64 PNG; a value of 64 characters or fewer is the ``index`` of another row whose
image it shares), question, A..E (empty when absent), answer (VAL), category, and the group columns read
case-insensitively: clinical vqa task, department, perceptual granularity (and modality when present).
Any other TSV in this format (e.g. written by ``medvl bench-build``) is read with option ``file=`` (or
``tsv=``); its ``image_path`` column, when ``image`` is empty, is a file path relative to the TSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field

from medvl.eval.benchmarks._common import (
    LETTERS, LoaderBase, check_split, clean_str, column_map, decode_base64_image, listing, read_delimited,
    require_dir, safe_join)
from medvl.eval.benchmarks._options import BenchmarkOptions
from medvl.eval.types import BENCHMARKS, BenchmarkFormatError, EvalItem

GROUP_COLUMNS = {  # TSV column (lower case) -> EvalItem group key
    "clinical vqa task": "clinical_task",
    "department": "department",
    "perceptual granularity": "granularity",
    "modality": "modality",
    "category": "category",
}
REF_MAX_LEN = 64  # image values this short refer to another row's index
SUBMISSION_NAME = "GMAI-MMBench_TEST_submission"


def _part_number(p: Path) -> tuple[int, str]:
    digits = "".join(ch if ch.isdigit() else " " for ch in p.stem).split()
    return (int(digits[-1]) if digits else 0, p.name)


class GMAIOptions(BenchmarkOptions):
    file: str | None = Field(None, validation_alias=AliasChoices("file", "tsv"),
                             description="read this TSV (relative to --data) instead of the split's files, "
                                         "e.g. a bench-build bench.tsv (default: the split's files)")


@BENCHMARKS.register("gmai-mmbench")
class GMAIMMBench(LoaderBase):
    """GMAI-MMBench loader (VAL / TEST TSVs, or any TSV in its format via ``file=``)."""

    Options = GMAIOptions
    splits = ("val", "test")
    default_protocol = "mc_vlmevalkit"
    description = "GMAI-MMBench VAL (4,550 MC with answers); TEST (11 parts) hides answers -> submission file"

    def tsv_files(self, d: Path, split: str) -> list[Path]:
        """The TSV files of ``split`` in ``d`` (TEST parts in part-number order)."""
        tsvs = sorted(p for p in d.glob("*.tsv") if p.is_file())
        if split == "val":
            files = [p for p in tsvs if "val" in p.stem.lower()]
        else:
            files = sorted((p for p in tsvs if "test" in p.stem.lower() and "submission" not in p.stem.lower()),
                           key=_part_number)
        if not files:
            want = "GMAI-MMBench_VAL.tsv" if split == "val" else "GMAI_mm_bench_TEST_part_<k>.tsv"
            raise BenchmarkFormatError(f"gmai-mmbench: no {split.upper()} TSV in {d}: expected {want}; present: {listing(d)}")
        return files

    def load(self, data_dir: Path, split: str | None = None, **options: Any) -> list[EvalItem]:
        """Items in file order (TEST: part 1 first). ``file``/``tsv`` reads that TSV instead of a split."""
        self._reset()
        given = self._options(options).file
        if given:
            path = Path(given).expanduser()
            if not path.is_absolute():
                path = Path(data_dir) / path
            if not path.is_file():
                raise BenchmarkFormatError(f"gmai-mmbench: TSV {path} does not exist")
            files, split_name = [path.resolve()], "file"
        else:
            split_name = check_split("gmai-mmbench", (split or "val").lower(), self.splits, "val")
            d = require_dir(data_dir, "gmai-mmbench")
            if not any(d.glob("*.tsv")) and (d / "GMAI-MMBench").is_dir():
                d = d / "GMAI-MMBench"
            files = self.tsv_files(d, split_name)
        rows: list[tuple[Path, dict[str, str], dict[str, str]]] = []
        for path in files:
            header, file_rows = read_delimited(path, "\t", self.skipped)
            cols = column_map(header, ("index", "question", "A", "B"), path,
                              optional=("image", "image_path", "C", "D", "E", "F", "answer", *GROUP_COLUMNS))
            if "image" not in cols and "image_path" not in cols:
                raise BenchmarkFormatError(f"{path}: missing column 'image' (or 'image_path'); present: {', '.join(map(repr, header))}")
            rows += [(path, cols, r) for r in file_rows]
        # full images by index, for back-references (which may point into another part file)
        full: dict[str, str] = {}
        for _, cols, r in rows:
            img = clean_str(r.get(cols.get("image", ""), ""))
            if len(img) > REF_MAX_LEN:
                full[clean_str(r[cols["index"]])] = img
        decoded: dict[str, bytes] = {}
        items, hidden = [], 0
        for path, cols, r in rows:
            rid = clean_str(r[cols["index"]])
            image = self._image(path, cols, r, rid, full, decoded)
            if image is None:
                continue
            opts = {L: clean_str(r[cols[L.lower()]]) for L in LETTERS[:6]
                    if L.lower() in cols and clean_str(r[cols[L.lower()]])}
            answer = clean_str(r[cols["answer"]]).upper() if "answer" in cols else ""
            if answer and answer not in opts:
                self._skip(rid, f"{path}: row index {rid} answer {answer!r} is not one of its options {sorted(opts)}",
                           "bad_answer")
                continue
            if len(opts) < 2:
                self._skip(rid, f"{path}: row index {rid} has fewer than 2 options", "bad_options")
                continue
            hidden += not answer
            groups = {g: clean_str(r[cols[c]]) for c, g in GROUP_COLUMNS.items() if c in cols and clean_str(r[cols[c]])}
            items.append(EvalItem(id=rid, question=clean_str(r[cols["question"]]), images=[image],
                                  answer=answer or None, options=opts, answer_type="mc", lang="en", groups=groups,
                                  meta={"source_file": path.name, "split": split_name}))
        self.answers_hidden = bool(items) and hidden == len(items)
        return items

    def _image(self, path: Path, cols: dict[str, str], r: dict[str, str], rid: str, full: dict[str, str],
               decoded: dict[str, bytes]) -> str | bytes | None:
        """The row's image bytes (decoded once per source row) or file path; records a skip when unusable."""
        value = clean_str(r.get(cols.get("image", ""), ""))
        if not value and "image_path" in cols:
            rel = clean_str(r[cols["image_path"]])
            p = safe_join(path.parent, rel) if rel else None
            if p is None or not p.is_file():
                self._skip(rid, f"{path}: row index {rid} image_path {rel!r} not found", "missing_image")
                return None
            return str(p)
        src = value if len(value) > REF_MAX_LEN else None
        key = rid
        if src is None:
            if not value or value not in full:
                self._skip(rid, f"{path}: row index {rid} image refers to index {value!r}, which has no image",
                           "missing_image")
                return None
            key, src = value, full[value]
        if key not in decoded:
            try:
                decoded[key] = decode_base64_image(src)
            except ValueError as e:
                self._skip(rid, f"{path}: row index {key}: {e}", "bad_image")
                return None
        return decoded[key]

    def write_submission(self, results: list[dict[str, Any]], out_dir: Path) -> Path | None:
        """Write the TEST predictions file: columns ``index`` and ``prediction`` (the chosen letter, empty when
        the reply could not be parsed), sorted by index. An .xlsx when openpyxl is installed, else a .tsv.
        Each result dict needs the item id (``id``/``index``) and the letter (``parsed``/``prediction``, or
        ``score["parsed"]``). Returns None after a load whose split has answers."""
        if getattr(self, "answers_hidden", True) is False:
            return None
        preds: dict[str, str] = {}
        for res in results:
            rid = res.get("id", res.get("index"))
            if rid is None:
                continue
            letter = res.get("parsed", res.get("prediction"))
            if letter is None and isinstance(res.get("score"), dict):
                letter = res["score"].get("parsed")
            preds[str(rid)] = str(letter).strip().upper() if letter is not None else ""

        def order(k: str) -> tuple[int, int, str]:
            return (0, int(k), k) if k.isdigit() else (1, 0, k)

        ordered = sorted(preds.items(), key=lambda kv: order(kv[0]))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            import openpyxl  # optional
        except ImportError:
            openpyxl = None
        if openpyxl is not None:
            wb = openpyxl.Workbook()
            ws = wb.active
            ws.append(["index", "prediction"])
            for k, v in ordered:
                ws.append([int(k) if k.isdigit() else k, v])
            path = out_dir / f"{SUBMISSION_NAME}.xlsx"
            wb.save(path)
            return path
        path = out_dir / f"{SUBMISSION_NAME}.tsv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["index", "prediction"])
            w.writerows(ordered)
        return path
