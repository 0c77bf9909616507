"""Checks for user-supplied regular expressions in configs."""

from __future__ import annotations

import re


def one_group_pattern(v: str | None) -> str | None:
    """Validate a regex that must capture exactly one group (e.g. the patient id in a file path)."""
    if v is None:
        return v
    try:
        rx = re.compile(v)
    except re.error as e:
        raise ValueError(f"{v!r} is not a regular expression ({e})") from None
    if rx.groups != 1:
        raise ValueError(f"{v!r} must have exactly one group (the patient id), it has {rx.groups}")
    return v
