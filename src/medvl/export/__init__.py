"""Exports: one module per output format, registered by name in ``EXPORTS`` (llava, messages, parquet,
mixture, card), plus ``manifest.json``. :func:`run_exports` runs a recipe's exports in order."""

from medvl.export.base import EXPORTS, View, build_views, run_exports
from medvl.export.manifest import ManifestEntry, standard_entries, write_manifest

__all__ = ["EXPORTS", "ManifestEntry", "View", "build_views", "run_exports", "standard_entries", "write_manifest"]
