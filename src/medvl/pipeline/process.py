"""Moved: the read stage lives in :mod:`medvl.sources.read` (stages sit beside their configs; the
orchestrator in :mod:`medvl.pipeline` imports them). Kept so old imports keep working."""

from medvl.sources.read import (Job, UnitResult, _encode_label_png, encode_png, finalize_item, get_source,  # noqa: F401
                                patient_unit, run_job, write_once)
