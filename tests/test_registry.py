"""The name registries import only the module named like an entry (so a spawned worker reading an image folder
does not import every source and its libraries), and still find entries registered under other names."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_a_lookup_imports_only_the_module_named_like_the_entry() -> None:
    out = _run("import sys\n"
               "from medvl.sources import SOURCES\n"
               "assert 'image_folder' in SOURCES\n"
               "import medvl.sources.read\n"  # what a read worker imports
               "print(sorted(m for m in sys.modules if m.startswith('medvl.sources.') and m.count('.') == 2))\n"
               "print('pydicom' in sys.modules, 'nibabel' in sys.modules, 'scipy.ndimage' in sys.modules)")
    mods, libs = out.strip().splitlines()
    assert "medvl.sources.image_folder" in mods and "medvl.sources.dicom" not in mods
    assert "medvl.sources.decathlon" not in mods
    assert libs == "False False False"


def test_names_registered_under_another_module_name_and_unknown_names() -> None:
    from medvl.core.registry import Registry

    out = _run("from medvl.sources import SOURCES\n"
               "print(SOURCES.get('mcq_jsonl').__module__)")  # registered in medvl/sources/mcq.py
    assert out.strip() == "medvl.sources.mcq"
    out = _run("from medvl.eval.types import BENCHMARKS\nprint(BENCHMARKS.get('vqa-rad').__module__)")
    assert out.strip().endswith("vqa_rad")
    from medvl.sources import SOURCES

    with pytest.raises(KeyError, match="unknown source format 'no_such_format'; allowed: .*image_folder"):
        SOURCES.get("no_such_format")
    assert "no_such_format" not in SOURCES
    reg: Registry = Registry("thing")  # no package: only what is registered
    reg.register("a")(object)
    assert "a" in reg and "b" not in reg
