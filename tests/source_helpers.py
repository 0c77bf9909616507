"""Test helper: drive a source the way the pipeline does (enumerate units, then load each)."""

from medvl.core.records import Reject
from medvl.sources.base import Item


def run_source(src):
    """-> (units, items, rejects) of one source."""
    units, items, rejects = [], [], []
    for u in src.units():
        (rejects if isinstance(u, Reject) else units).append(u)
    for u in units:
        for out in src.load(u):
            (items if isinstance(out, Item) else rejects).append(out)
    return units, items, rejects
