"""Every data file under src/medvl (templates, presets, configs, tables) is matched by a package-data pattern
of pyproject.toml, so a wheel or a non-editable install carries it (an editable install hides a miss)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "medvl"


def _package_of(path: Path) -> Path:
    """The nearest folder above ``path`` that is a Python package (has __init__.py)."""
    d = path.parent
    while not (d / "__init__.py").is_file():
        d = d.parent
    return d


def test_every_data_file_is_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["*"]
    missing = []
    for path in SRC.rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(_package_of(path)).as_posix()
        if not any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"not in any package-data pattern (would be missing from a wheel): {missing}"
