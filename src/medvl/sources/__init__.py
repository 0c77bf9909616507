"""Dataset formats, one module each, registered by name in ``SOURCES``."""

from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit

__all__ = ["SOURCES", "Item", "Source", "SourceOptions", "Unit"]
