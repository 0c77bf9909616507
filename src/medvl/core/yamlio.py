"""Loading medvl's own YAML data files (vocabularies, template banks, label semantics, the card's loading lines,
the evaluation's vocabularies and prompts) with libyaml's C parser when PyYAML was built with it: about 9x faster
than the pure-Python parser (310 -> 36 ms for the twelve files the read and generate stages load, in every worker
process). Both build the same objects from these files (a test checks each one); user files (recipes, configs)
keep ``yaml.safe_load`` and its error messages."""

from __future__ import annotations

from typing import Any

import yaml

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_data_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, by the C parser when available."""
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)
