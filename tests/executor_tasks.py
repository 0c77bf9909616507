"""Top-level task functions for tests/test_executor.py: they must be importable by pool processes (spawn) and
Ray workers (the test's Ray fixture puts this folder on the workers' PYTHONPATH)."""

from __future__ import annotations

import hashlib
import os
import sys
import time

DICOM_FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "US1_UNCR.dcm", "rtdose.dcm", "OBXXXX1A.dcm",
               "SC_rgb.dcm", "emri_small.dcm"]


def dicom_pixels(task: tuple[str, float]) -> dict:
    """Read a pydicom test file after `delay` seconds; its shape, dtype and a digest of its pixels."""
    import pydicom
    from pydicom.data import get_testdata_file

    name, delay = task
    time.sleep(delay)
    arr = pydicom.dcmread(get_testdata_file(name)).pixel_array
    return {"name": name, "shape": list(arr.shape), "dtype": str(arr.dtype),
            "sha256": hashlib.sha256(arr.tobytes()).hexdigest(), "sum": int(arr.astype("int64").sum())}


def sleep_then_square(task: tuple[int, float]) -> int:
    """Square `value` after `delay` seconds (uneven delays finish out of order)."""
    value, delay = task
    time.sleep(delay)
    return value * value


def fail_on_three(value: int) -> int:
    """Raise ValueError for 3; identity otherwise."""
    if value == 3:
        raise ValueError(f"bad value {value}")
    return value


class TwoArgError(Exception):
    """An exception that pickles but does not unpickle (its __init__ needs two arguments)."""

    def __init__(self, a: str, b: str):
        super().__init__(f"{a}/{b}")


def raise_two_arg(value: int) -> int:
    """Raise TwoArgError for 2; identity otherwise."""
    if value == 2:
        raise TwoArgError("left", "right")
    return value


def pid(_: object) -> int:
    """The id of the process the task ran in."""
    return os.getpid()


def die_on_one(value: int) -> int:
    """Kill the worker process abruptly for 1 (as the OOM killer would); identity otherwise."""
    if value == 1:
        os._exit(13)
    return value


def loaded(names: tuple[str, ...]) -> tuple[int, list[bool]]:
    """(this worker's pid, whether each module is imported in it)."""
    return os.getpid(), [n in sys.modules for n in names]
