"""One integer label map from named binary masks that may overlap (several DICOM SEGs on one image,
overlapping segments inside one SEG).

Every pixel holds one value. A value names either one label (``"liver"``) or, where several labels overlap,
the sorted list of every label present there (``["lesion", "liver"]``). Masks with the same label are one
label (their union); labels that differ only in case or spacing ("Liver", "liver ") are the same label,
spelled as first added. Numbering is canonical, so it does not depend on the order masks were added in: the
labels get 1..L in the order they were first added, then each overlap combination present gets L+1, L+2, ...
ordered by (number of labels, label numbers). Consumers find every value of one label with
:func:`values_of` (``ImageRecord.mask_values_for`` does the same on records)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import numpy as np

from medvl.imaging.boxes import present_values

ValueNames = Mapping[int, Union[str, list[str]]]
MAX_VALUE = 65535  # label maps are written as 16-bit PNGs


class OverlapLabelMap:
    """Accumulates named boolean masks into one integer map of label combinations (see module docstring).

    ``shape`` is the full map (e.g. (slices, rows, cols)); :meth:`add` takes a mask of the whole map or, with
    ``at``, of one entry along the first axis, so a volume is built one slice at a time."""

    def __init__(self, shape: tuple[int, ...]):
        self._map = np.zeros(shape, dtype=np.int32)  # internal ids into self._sets
        self._sets: list[frozenset[int]] = [frozenset()]
        self._ids: dict[frozenset[int], int] = {frozenset(): 0}
        self.labels: list[str] = []  # label number - 1 -> label, in first-added order
        self._index: dict[str, int] = {}

    def _label(self, label: str) -> int:
        key = " ".join(label.split()).casefold()
        k = self._index.get(key)
        if k is None:
            k = self._index[key] = len(self.labels)
            self.labels.append(label)
        return k

    def _id(self, labels: frozenset[int]) -> int:
        i = self._ids.get(labels)
        if i is None:
            i = self._ids[labels] = len(self._sets)
            self._sets.append(labels)
        return i

    def add(self, label: str, mask: np.ndarray, at: int | None = None) -> None:
        """Add the pixels of ``mask`` (boolean) to ``label``; ``at`` selects one entry of the first axis."""
        k = self._label(label)
        region = self._map if at is None else self._map[at]
        sel = np.asarray(mask, dtype=bool)
        if sel.shape != region.shape:
            raise ValueError(f"mask shape {sel.shape} does not match the label map {region.shape}")
        if not sel.any():
            return
        old = region[sel]
        if not old.any():  # the common case: nothing else there yet
            region[sel] = self._id(frozenset((k,)))
            return
        uniq, inverse = np.unique(old, return_inverse=True)
        new = np.array([self._id(self._sets[int(u)] | {k}) for u in uniq], dtype=np.int32)
        region[sel] = new[inverse]

    def finish(self) -> tuple[np.ndarray, dict[int, str | list[str]]]:
        """(label map, value -> label or sorted list of labels) with canonical numbering. Every label added
        keeps its number even when its pixels only occur in overlaps; overlap values are listed only when
        present. Raises ValueError when the values would not fit a 16-bit label map."""
        n = len(self.labels)
        present = present_values(self._map) if self._map.size else []
        combos = sorted({self._sets[i] for i in present if len(self._sets[i]) >= 2}, key=lambda s: (len(s), sorted(s)))
        if n + len(combos) > MAX_VALUE:
            raise ValueError(f"{n} labels with {len(combos)} overlap combinations do not fit a 16-bit label map")
        table = np.zeros(len(self._sets), dtype=np.int32)
        names: dict[int, str | list[str]] = {k + 1: label for k, label in enumerate(self.labels)}
        for i, s in enumerate(self._sets):
            if len(s) == 1:
                table[i] = next(iter(s)) + 1
        for j, s in enumerate(combos):
            table[self._ids[s]] = n + 1 + j
            names[n + 1 + j] = sorted(self.labels[k] for k in s)
        return table[self._map], names


def values_of(names: ValueNames, label: str) -> list[int]:
    """Every value whose pixels show ``label``: its own value and the overlap values it is part of."""
    return sorted(int(v) for v, x in names.items() if x == label or (isinstance(x, list) and label in x))


def labels_of(names: ValueNames, values: list[int]) -> list[str]:
    """Sorted labels shown by any of ``values`` (overlap values contribute each of their labels)."""
    out: set[str] = set()
    for v in values:
        x = names.get(v)
        if x is not None:
            out.update([x] if isinstance(x, str) else x)
    return sorted(out)
