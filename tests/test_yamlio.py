"""medvl's own YAML data files load to the same objects through libyaml's C parser as through PyYAML's
pure-Python one (the C parser is what the stages use when PyYAML has it)."""

from __future__ import annotations

from pathlib import Path

import yaml

import medvl
from medvl.core.yamlio import SafeLoader, load_data_yaml


def test_every_shipped_yaml_file_loads_the_same_with_either_parser():
    files = sorted(Path(medvl.__file__).parent.rglob("*.yaml"))
    assert len(files) >= 12
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert load_data_yaml(text) == yaml.safe_load(text), path
    assert SafeLoader is getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def test_bad_yaml_is_an_error_either_way():
    import pytest

    with pytest.raises(yaml.YAMLError):
        load_data_yaml("a: [1, 2\nb: 3")
    with pytest.raises(yaml.YAMLError):  # a safe loader: no Python objects from tags
        load_data_yaml("- !!python/name:os.system")
