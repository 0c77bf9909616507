"""PathVQA (pathology VQA), parquet copy ``flaviagiammarino/path-vqa``: ``data/{train,validation,test}-*.parquet``
with columns image, question, answer. Test = 6,719 QA in this copy (the original paper's split has 6,761).
No answer type is published: yes/no answers are "closed", everything else "open"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.eval.benchmarks._common import LoaderBase, check_split, require_dir
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
        self._options(options)
        split = check_split("pathvqa", split, self.splits, "test")
        d = require_dir(data_dir, "pathvqa")
        folder = d / "path-vqa" if not (d / "data").is_dir() and (d / "path-vqa").is_dir() else d
        return self._load_qa_parquet(folder, split, "pathvqa", {})
