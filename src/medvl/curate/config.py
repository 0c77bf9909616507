"""The curate stage's config: the recipe's ``curation`` block (splits, dedup, near duplicates, exclusions)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from medvl.core.config import StrictModel


class CurationConfig(StrictModel):
    splits: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
    dedup: bool = True
    near_duplicates: Literal["group", "report", "off"] = Field(
        "group", description="near-identical images of different patients (pHash or dHash within the audit's "
        "thresholds): 'group' keeps them in one split, 'report' only lists those that straddle splits")
    near_duplicate_max_group: int = Field(50, ge=2, description="largest group (in records) that near-duplicate "
                                          "links may build; links that would exceed it are reported instead")
    exclude_md5: list[str] = []  # image MD5s to drop (e.g. from `medvl audit`)
    exclude_file: str | None = None  # a file with one MD5 per line, or an audit overlaps JSON

    @field_validator("splits")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(f < 0 for f in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {v}")
        return v
