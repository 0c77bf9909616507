"""Checks and clean-ups the build runs on its outputs before writing them: unique ids, local paths removed
from every message, and labels that only one source of a cohort uses."""

from __future__ import annotations

import difflib
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from medvl.core.groups import Groups
from medvl.core.records import ImageRecord, Reject, Sample

if TYPE_CHECKING:
    from medvl.pipeline.recipe import Recipe


def duplicate_ids(records: Iterable[ImageRecord], samples: Iterable[Sample]) -> list[str]:
    """Ids used by more than one record, or by more than one sample (an export would attach the wrong
    metadata); one line each, naming the id and how often it occurs."""
    problems = []
    for what, ids in (("record", [r.id for r in records]), ("sample", [s.id for s in samples])):
        for i, n in sorted(Counter(ids).items()):
            if n > 1:
                problems.append(f"{what} id {i!r} is used {n} times")
    return problems


# an absolute POSIX path of at least two components, or a Windows drive path
_ABS_PATH = re.compile(r"(?<![\w.~/\\-])(?:/(?:[^\s'\"/:,;()\[\]]+/)+[^\s'\"/:,;()\[\]]*|[A-Za-z]:\\(?:[^\s'\"\\:]+\\)*"
                       r"[^\s'\"\\:]*)")


class PathScrubber:
    """Removes local paths from messages: a source's folder becomes the source's portable spelling (relative
    to the recipe's root), the output folder ``<out>``, and any other absolute path keeps only its last
    component (``…/name``). Third-party error messages quote absolute paths; outputs never do."""

    def __init__(self, recipe: "Recipe", out_dir: Path):
        prefixes: dict[str, str] = {}
        for cfg in recipe.sources:
            root = Path(cfg.path)
            for spelled in {str(root), str(root.resolve())}:
                prefixes[spelled] = recipe.portable_path(cfg.path) or cfg.name
        for spelled in {str(out_dir), str(Path(out_dir).resolve())}:
            prefixes[spelled] = "<out>"
        self._prefixes = sorted(prefixes.items(), key=lambda kv: -len(kv[0]))

    def __call__(self, text: str) -> str:
        for prefix, name in self._prefixes:
            if prefix in text:
                # a file inside a source is named as the sources name their items: relative to the source root
                text = re.sub(re.escape(prefix) + r"[/\\]", "" if name != "<out>" else "<out>/", text)
                text = text.replace(prefix, name)
        return _ABS_PATH.sub(lambda m: "…/" + re.split(r"[/\\]", m.group(0).rstrip("/\\"))[-1], text)

    def reject(self, r: Reject) -> Reject:
        return Reject(source=r.source, item=self(r.item), reason=self(r.reason), stage=r.stage)


def cohorts(recipe: "Recipe", merged: Iterable[tuple[str, str]] = ()) -> list[list[str]]:
    """Sources that describe one cohort: they share a ``patient_namespace``, or records of one were merged into
    records of another (``merged``: pairs of source names whose identical images were merged). Only groups of
    two or more sources are returned."""
    names = {cfg.name for cfg in recipe.sources}
    sources = Groups()
    by_ns: dict[str, list[str]] = defaultdict(list)
    for cfg in recipe.sources:
        if cfg.patient_namespace:
            by_ns[cfg.patient_namespace].append(cfg.name)
    for group in by_ns.values():
        for n in group[1:]:
            sources.union(group[0], n)
    for a, b in merged:
        if a in names and b in names:
            sources.union(a, b)
    groups: dict[str, list[str]] = defaultdict(list)
    for cfg in recipe.sources:
        groups[sources.find(cfg.name)].append(cfg.name)
    return [sorted(g) for _, g in sorted(groups.items()) if len(g) > 1]


def lonely_labels(recipe: "Recipe", label_sources: dict[str, set[str]], merged: Iterable[tuple[str, str]] = ()
                  ) -> list[dict[str, Any]]:
    """Labels that only one source of a cohort uses (often two spellings of one finding, e.g. BBox_List's
    "Infiltrate" and Data_Entry's "Infiltration"), with the closest labels of the other sources.
    ``label_sources``: dataset -> labels its own records carried (read before any merging)."""
    out = []
    for group in cohorts(recipe, merged):
        used: dict[str, set[str]] = defaultdict(set)
        for ds in group:
            for label in label_sources.get(ds, set()):
                used[label].add(ds)
        for label in sorted(used):
            owners = used[label]
            if len(owners) != 1:
                continue
            (owner,) = owners
            others = sorted({lb for lb, o in used.items() if owner not in o or len(o) > 1} - {label})
            close = difflib.get_close_matches(label.lower(), [o.lower() for o in others], n=3, cutoff=0.75)
            similar = [o for o in others if o.lower() in close]
            out.append({"cohort": group, "label": label, "only_in": owner, "similar": similar})
    return out


def label_owners(records: Iterable[ImageRecord]) -> dict[str, set[str]]:
    """dataset -> the labels its own records carry (image labels and region labels)."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in records:
        out[r.dataset].update(r.labels)
        out[r.dataset].update(g.label for g in r.regions)
    return dict(out)
