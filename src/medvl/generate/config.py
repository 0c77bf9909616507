"""The generate stage's config: the recipe's ``generation`` block (generator, kinds, languages)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from medvl.core.config import KIND_NAMES, StrictModel
from medvl.llm.config import LLMConfig


class GenerationConfig(StrictModel):
    generator: str = "template"
    kinds: dict[str, int] = {"caption": 1, "region_caption": 1, "perception_qa": 2, "instruction_qa": 1,
                             "conversation": 1}
    languages: list[Literal["en", "zh"]] = ["en", "zh"]
    zh_share: float = Field(0.3, ge=0.0, le=1.0)
    label_zh: dict[str, str] = {}  # label -> Chinese name, used before the built-in glossary
    options: dict[str, Any] = {}
    llm: "ModelGenerationConfig | None" = None  # the model that writes a share of the samples (generator "llm")

    @model_validator(mode="after")
    def _llm_block(self) -> "GenerationConfig":
        if self.generator == "llm" and self.llm is None:
            raise ValueError("generator 'llm' needs a generation.llm block (model, base_url, share, ...)")
        return self

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if k not in KIND_NAMES:
                raise ValueError(f"{k!r} is not a sample kind; allowed: {', '.join(KIND_NAMES)}")
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"kinds.{k}: expected a count >= 0, got {n!r}")
        return v


class ModelGenerationConfig(LLMConfig):
    """``generation.llm``: the endpoint (every :class:`medvl.llm.LLMConfig` key) and what the model writes.

    ``share``: kind -> share of the records whose English samples of that kind the model writes (the rest stay
    template samples); ``source_share``: source name -> {kind: share}, overriding ``share`` for that source;
    ``translate_share``: share of the English samples (model or template) the model also translates into
    Chinese (GMAI-VL translated about 30%); ``figures``: PubMedVision's unblinded rewrite of figure-caption
    records (one alignment and one instruction VQA per figure); ``prompts``: a prompt file replacing the shipped
    ``generate/prompts/annotation.yaml`` (same keys)."""

    share: dict[str, float] = {"caption": 0.0, "region_caption": 0.0, "instruction_qa": 0.0}
    source_share: dict[str, dict[str, float]] = {}
    translate_share: float = Field(0.0, ge=0.0, le=1.0)
    figures: bool = True
    prompts: str | None = None

    @field_validator("share")
    @classmethod
    def _shares(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_shares(v, "generation.llm.share")

    @field_validator("source_share")
    @classmethod
    def _source_shares(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {src: _check_shares(s, f"generation.llm.source_share.{src}") for src, s in v.items()}

    def client_config(self) -> LLMConfig:
        return LLMConfig.model_validate(self.model_dump(include=set(LLMConfig.model_fields)))

    def share_for(self, source: str, kind: str) -> float:
        return float(self.source_share.get(source, {}).get(kind, self.share.get(kind, 0.0)))


MODEL_KINDS = ("caption", "region_caption", "instruction_qa")


def _check_shares(v: dict[str, float], where: str) -> dict[str, float]:
    for k, x in v.items():
        if k not in MODEL_KINDS:
            raise ValueError(f"{where}: the model writes {', '.join(MODEL_KINDS)}, not {k!r}")
        if not 0.0 <= float(x) <= 1.0:
            raise ValueError(f"{where}.{k}: expected a share between 0 and 1, got {x!r}")
    return v


GenerationConfig.model_rebuild()
