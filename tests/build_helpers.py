"""Helpers shared by the build tests."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path) with its SHA-256."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def tree_differences(got: dict[str, str], want: dict[str, str]) -> list[str]:
    """Sorted paths that differ between two :func:`tree` results ("+path": only in ``got``, "-path": only in
    ``want``, "~path": different bytes): an assertion message that names every differing file."""
    return sorted([f"+{p}" for p in got.keys() - want.keys()] + [f"-{p}" for p in want.keys() - got.keys()]
                  + [f"~{p}" for p in got.keys() & want.keys() if got[p] != want[p]])


def ihc_recipe(root: Path, stride: int = 96, only: str = "corpus/ihc") -> dict:
    """The demo recipe restricted to its IHC sources (tiles of scikit-image's immunohistochemistry image: an
    image_folder source and a COCO box source), written under ``root``; ``only`` filters sources by path prefix."""
    from medvl.demo import corpus as demo

    root.mkdir(parents=True, exist_ok=True)
    demo.write_ihc(root, tile=128, stride=stride)
    r = demo.demo_recipe()
    r["sources"] = [s for s in r["sources"] if s["path"].startswith(only)]
    for s in r["sources"]:
        s["path"] = str(root / Path(s["path"]).relative_to("corpus"))
    return r


def scale_corpus_module():
    """``benchmarks/make_scale_corpus.py`` as a module (loaded once, registered under its name so the worker
    processes of ``make_corpus(jobs>1)`` can unpickle its functions)."""
    import importlib.util
    import sys

    name = "make_scale_corpus"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]
