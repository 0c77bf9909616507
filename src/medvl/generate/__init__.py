"""Generators: records -> samples. ``make_generator`` builds the one named in the recipe's
``generation.generator`` ("template" ships here; an LLM-backed one plugs into the same interface,
see :mod:`medvl.generate.base`). ``source_rules(recipe.sources)`` is what each source's text may count.
``missing_zh_labels(labels, label_zh_map)`` lists labels that Chinese samples would leave in English and
``count_label_warnings(rules, label_spaces)`` the ``count_labels`` entries no record has, for the pipeline
to warn about."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from medvl.generate.base import GENERATORS, Generator, SourceRules, missing_zh_labels

if TYPE_CHECKING:
    from medvl.generate.config import GenerationConfig
    from medvl.sources.config import SourceConfig


def make_generator(config: "GenerationConfig", seed: int, label_spaces: dict[str, list[str]],
                   source_rules: Mapping[str, SourceRules] | None = None) -> Generator:
    """The registered generator named by ``config.generator``, ready to ``generate(record)``;
    ``source_rules``: dataset name -> what text may say about its regions (counting)."""
    cls = GENERATORS.get(config.generator)
    return cls(config, seed, label_spaces, source_rules)


def source_rules(sources: Iterable["SourceConfig"]) -> dict[str, SourceRules]:
    """Per recipe source, what its generated text may count: ``count_labels`` ("auto", "none", or its list
    normalized like the data's labels, with the source's ``label_synonyms``), and whether the format gives one
    region per connected component (``options.per_component``, true where the format has no such option)."""
    from medvl.sources import SOURCES
    from medvl.taxonomy import normalize_label

    rules = {}
    for cfg in sources:
        count = cfg.count_labels
        if not isinstance(count, str):
            count = frozenset(normalize_label(x, cfg.label_synonyms) for x in count)
        opts = SOURCES.get(cfg.format).Options.model_validate(cfg.options or {})
        rules[cfg.name] = SourceRules(count_labels=count,
                                      regions_are_instances=bool(getattr(opts, "per_component", True)))
    return rules


def count_label_warnings(rules: Mapping[str, SourceRules], label_spaces: Mapping[str, list[str]]) -> list[str]:
    """One warning per source whose ``count_labels`` list names labels none of its records has (a typo would
    otherwise switch counting off without a word)."""
    out = []
    for name, r in sorted(rules.items()):
        if isinstance(r.count_labels, frozenset):
            unknown = sorted(r.count_labels - set(label_spaces.get(name, [])))
            if unknown:
                out.append(f"source {name!r}: count_labels names {', '.join(map(repr, unknown))}, which no record "
                           f"of the source carries (labels are compared after normalization and label_synonyms)")
    return out


__all__ = ["GENERATORS", "Generator", "SourceRules", "count_label_warnings", "make_generator", "missing_zh_labels",
           "source_rules"]
