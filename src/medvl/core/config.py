"""What every stage's config shares: the strict pydantic base (unknown keys are errors) and the sample kinds.

Stage configs live beside their stages (``medvl.sources.config``, ``medvl.curate.config``,
``medvl.generate.config``); the recipe in ``medvl.pipeline.recipe`` composes them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

KIND_NAMES = ("caption", "region_caption", "perception_qa", "instruction_qa", "conversation")


class StrictModel(BaseModel):
    """A config block that rejects keys it does not define (a typo is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid")
