"""A tiny name -> class registry: one way to extend every axis (sources, generators, exports, benchmarks)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes or callables. Modules of ``package`` are imported lazily on first lookup,
    so adding a new entry is one new file that calls ``@REGISTRY.register("name")``."""

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self.package = package
        self._items: dict[str, T] = {}
        self._loaded = package is None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            try:
                obj.registry_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)  # type: ignore[arg-type]
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")

    def _find(self, name: str) -> None:
        """Make ``name`` known if it exists: first import only the module named like it (``vqa-rad`` ->
        ``<package>.vqa_rad``; a spawned worker then imports one source, not all of them and their libraries),
        then, if that module does not register it, every module of the package."""
        if self._loaded or name in self._items:
            return
        mod = str(name).replace("-", "_")
        if mod.isidentifier() and not mod.startswith("_"):
            try:
                importlib.import_module(f"{self.package}.{mod}")
            except ModuleNotFoundError as e:
                if e.name != f"{self.package}.{mod}":  # the module exists but something it imports does not
                    raise
        if name not in self._items:
            self._load()

    def get(self, name: str) -> T:
        self._find(name)
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._find(name)
        return name in self._items
