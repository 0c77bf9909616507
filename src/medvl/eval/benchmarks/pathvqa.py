"""PathVQA (pathology VQA), parquet copy ``flaviagiammarino/path-vqa``: ``data/{train,validation,test}-*.parquet``
with columns image, question, answer. Test = 6,719 QA in this copy (the original paper's split has 6,761).
No answer type is published: yes/no answers are "closed", everything else "open"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.eval.benchmarks._common import (
    LoaderBase, check_split, clean_str, image_cell_bytes, is_yes_no, read_parquet_rows, require_dir, shard_files)
from medvl.eval.types import BENCHMARKS, EvalItem


@BENCHMARKS.register("pathvqa")
class PathVQA(LoaderBase):
    """PathVQA loader (parquet shards, images as bytes)."""

    splits = ("test", "validation", "train")
    default_protocol = "short_answer"
    description = "PathVQA test, parquet copy: 6,719 QA (paper: 6,761); closed = yes/no answers"

    def load(self, data_dir: Path, split: str | None = None, **options: Any) -> list[EvalItem]:
        """Items of ``split`` (default test) over all shards in name order; ids are ``<split>-<row>``."""
        self._reset()
        self._check_options(options, ())
        split = check_split("pathvqa", split, self.splits, "test")
        d = require_dir(data_dir, "pathvqa")
        folder = d / "path-vqa" if not (d / "data").is_dir() and (d / "path-vqa").is_dir() else d
        items, n = [], 0
        for shard in shard_files(folder, split, "pathvqa"):
            for r in read_parquet_rows(shard, ("image", "question", "answer")):
                rid, n = f"{split}-{n:05d}", n + 1
                img = image_cell_bytes(r["image"])
                if img is None:
                    self._skip(rid, f"{shard}: row {rid} has no image bytes")
                    continue
                if r["question"] is None or r["answer"] is None:
                    self._skip(rid, f"{shard}: row {rid} lacks question or answer")
                    continue
                ans = clean_str(r["answer"])
                closed = is_yes_no(ans, "en")
                items.append(EvalItem(id=rid, question=clean_str(r["question"]), images=[img], answer=ans,
                                      answer_type="closed" if closed else "open", lang="en",
                                      groups={"answer_type": "CLOSED" if closed else "OPEN"},
                                      meta={"source_file": shard.name}))
        return items
