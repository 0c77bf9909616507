"""The build's shape: the orchestrator (``medvl.pipeline``) imports the stages; no stage imports it.

Every import statement of every module in a stage package is parsed (``ast``), including imports inside
functions and ``if TYPE_CHECKING:`` blocks, and relative imports are resolved against the module's package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import medvl

SRC = Path(medvl.__file__).resolve().parent
STAGES = ("sources", "curate", "generate", "export", "core", "imaging", "io", "taxonomy")
ORCHESTRATOR = "medvl.pipeline"


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the text of module ``module``
    (dotted, e.g. ``medvl.curate.split``; a package's ``__init__`` is named like the package)."""
    package = module.split(".")
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return out


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def orchestrator_imports(package_dir: Path) -> list[str]:
    """``file:line: module`` for every import of ``medvl.pipeline`` (or a module inside it) under ``package_dir``."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        name = module_name(path)
        if path.name == "__init__.py":
            name += ".__init__"  # relative imports in a package's __init__ start from the package itself
        for line, mod in imported_modules(path.read_text(encoding="utf-8"), name):
            if mod == ORCHESTRATOR or mod.startswith(ORCHESTRATOR + "."):
                found.append(f"{path.relative_to(SRC.parent)}:{line}: {mod}")
    return sorted(set(found))


def test_detects_every_spelling_of_an_orchestrator_import():
    src = ("import medvl.pipeline.build as b\n"
           "from medvl.pipeline.recipe import Recipe\n"
           "from typing import TYPE_CHECKING\n"
           "if TYPE_CHECKING:\n    from medvl import pipeline\n"
           "def f():\n    from ..pipeline import recipe\n"
           "x = 'from medvl.pipeline import build'  # text, not an import\n")
    hits = sorted(m for _, m in imported_modules(src, "medvl.curate.dedup")
                  if m == ORCHESTRATOR or m.startswith(ORCHESTRATOR + "."))
    assert hits == ["medvl.pipeline", "medvl.pipeline", "medvl.pipeline.build", "medvl.pipeline.recipe",
                    "medvl.pipeline.recipe", "medvl.pipeline.recipe.Recipe"]
    assert imported_modules("from . import split\n", "medvl.curate.__init__") == [
        (1, "medvl.curate"), (1, "medvl.curate.split")]


@pytest.mark.parametrize("stage", STAGES)
def test_stage_never_imports_the_orchestrator(stage):
    package_dir = SRC / stage
    assert package_dir.is_dir(), f"stage package {stage} is missing from {SRC}"
    found = orchestrator_imports(package_dir)
    assert not found, (f"medvl.{stage} imports the orchestrator {ORCHESTRATOR} (stage configs live beside their "
                       "stage, e.g. medvl.sources.config):\n" + "\n".join(found))
