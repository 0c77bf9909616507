"""The generate stage's config: the recipe's ``generation`` block (generator, kinds, languages)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from medvl.core.config import KIND_NAMES, StrictModel


class GenerationConfig(StrictModel):
    generator: str = "template"
    kinds: dict[str, int] = {"caption": 1, "region_caption": 1, "perception_qa": 2, "instruction_qa": 1,
                             "conversation": 1}
    languages: list[Literal["en", "zh"]] = ["en", "zh"]
    zh_share: float = Field(0.3, ge=0.0, le=1.0)
    label_zh: dict[str, str] = {}  # label -> Chinese name, used before the built-in glossary
    options: dict[str, Any] = {}

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if k not in KIND_NAMES:
                raise ValueError(f"{k!r} is not a sample kind; allowed: {', '.join(KIND_NAMES)}")
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"kinds.{k}: expected a count >= 0, got {n!r}")
        return v
