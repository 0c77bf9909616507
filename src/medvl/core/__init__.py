"""Records, provenance ids, hashing and the name registry shared by every stage."""

from medvl.core.records import ImageRecord, Region, Reject, Sample, Turn
from medvl.core.registry import Registry

__all__ = ["ImageRecord", "Region", "Reject", "Sample", "Turn", "Registry"]
