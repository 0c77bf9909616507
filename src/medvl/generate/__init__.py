"""Generators: records -> samples. ``make_generator`` builds the one named in the recipe's
``generation.generator`` ("template" ships here; an LLM-backed one plugs into the same interface,
see :mod:`medvl.generate.base`). ``missing_zh_labels(labels, label_zh_map)`` lists labels that Chinese
samples would leave in English, for the pipeline to warn about."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from medvl.generate.base import GENERATORS, Generator, SourceRules, missing_zh_labels

if TYPE_CHECKING:
    from medvl.pipeline.recipe import GenerationConfig


def make_generator(config: "GenerationConfig", seed: int, label_spaces: dict[str, list[str]],
                   source_rules: Mapping[str, SourceRules] | None = None) -> Generator:
    """The registered generator named by ``config.generator``, ready to ``generate(record)``;
    ``source_rules``: dataset name -> what text may say about its regions (counting)."""
    cls = GENERATORS.get(config.generator)
    return cls(config, seed, label_spaces, source_rules)


__all__ = ["GENERATORS", "Generator", "SourceRules", "make_generator", "missing_zh_labels"]
