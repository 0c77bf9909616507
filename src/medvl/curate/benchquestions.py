"""The phrasing pool of ``bench-build``: question templates per clinical task and granularity (a data file).

``data/bench_questions.yaml`` (English; other languages as ``bench_questions.<lang>.yaml``) maps each
clinical VQA task to a task cue and phrasings with a ``{target}`` slot, and each granularity to target
phrases that name the modality and the drawn mark. Loading checks that every phrasing carries its task
cue and every target phrase its modality slot and mark word, so each generated question names the
modality, a task cue and the granularity."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

GRANULARITIES = ("image", "box", "mask", "contour")


class PhrasePoolError(ValueError):
    """A phrasing file that is missing or malformed; the message names the file and the key."""


@dataclass
class TaskPhrases:
    """Phrasings of one clinical task: the cue every phrasing contains, and the phrasings."""

    name: str
    cue: str
    phrasings: list[str]


@dataclass
class PhrasePool:
    """Question phrasings, granularity target phrases, drawing styles and modality names."""

    lang: str
    tasks: dict[str, TaskPhrases]  # lower-cased task name -> phrasings ("default" included)
    targets: dict[str, list[str]]  # granularity -> target phrases with {modality}
    marks: dict[str, str]  # granularity -> the word naming it in every target phrase
    draw: dict[str, dict[str, Any]]  # granularity -> drawing style (color, alpha)
    modality_names: dict[str, str] = field(default_factory=dict)

    def task(self, clinical_task: str | None) -> TaskPhrases:
        """Phrasings for a record's clinical task: exact (case-insensitive) name, else the part before
        " - " / " (", else the default pool."""
        if clinical_task:
            key = clinical_task.strip().lower()
            for candidate in (key, key.split(" - ")[0].strip(), key.split(" (")[0].strip()):
                if candidate in self.tasks:
                    return self.tasks[candidate]
        return self.tasks["default"]

    def modality(self, modality: str) -> str:
        return self.modality_names.get(modality, modality)

    def question(self, clinical_task: str | None, granularity: str, modality: str, pick: int) -> str:
        """One question; ``pick`` (a stable integer) chooses the phrasing and the target phrase."""
        tp = self.task(clinical_task)
        targets = self.targets[granularity]
        phrasing = tp.phrasings[pick % len(tp.phrasings)]
        target = targets[(pick // len(tp.phrasings)) % len(targets)].format(modality=self.modality(modality))
        text = phrasing.format(target=target)
        return text[0].upper() + text[1:]


def _pool_path(lang: str) -> Path:
    base = resources.files("medvl.curate") / "data"
    name = "bench_questions.yaml" if lang == "en" else f"bench_questions.{lang}.yaml"
    return Path(str(base / name))


def load_phrase_pool(lang: str = "en", path: str | Path | None = None) -> PhrasePool:
    """Read and check a phrasing file (the packaged one for ``lang`` unless ``path`` is given)."""
    p = Path(path) if path else _pool_path(lang)
    if not p.is_file():
        raise PhrasePoolError(f"{p}: no question phrasing file for language {lang!r}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise PhrasePoolError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise PhrasePoolError(f"{p}: expected a mapping at the top level")
    tasks: dict[str, TaskPhrases] = {}
    for name, spec in (data.get("tasks") or {}).items():
        cue = str((spec or {}).get("cue", "")).strip()
        phrasings = [str(x) for x in (spec or {}).get("phrasings") or []]
        if not cue or not phrasings:
            raise PhrasePoolError(f"{p}: tasks.{name}: needs a 'cue' and a non-empty 'phrasings' list")
        for i, ph in enumerate(phrasings):
            if "{target}" not in ph or cue.lower() not in ph.lower():
                raise PhrasePoolError(f"{p}: tasks.{name}.phrasings[{i}]: must contain '{{target}}' and the cue {cue!r}")
        tasks[str(name).lower()] = TaskPhrases(str(name), cue, phrasings)
    if "default" not in tasks:
        raise PhrasePoolError(f"{p}: tasks: a 'default' task is required")
    targets: dict[str, list[str]] = {}
    marks: dict[str, str] = {}
    draw: dict[str, dict[str, Any]] = {}
    grans = data.get("granularities") or {}
    for g in GRANULARITIES:
        spec = grans.get(g)
        if not isinstance(spec, dict) or not spec.get("targets") or not spec.get("mark"):
            raise PhrasePoolError(f"{p}: granularities.{g}: needs 'mark' and a non-empty 'targets' list")
        mark = str(spec["mark"])
        for i, t in enumerate(spec["targets"]):
            if "{modality}" not in t or mark.lower() not in t.lower():
                raise PhrasePoolError(f"{p}: granularities.{g}.targets[{i}]: must contain '{{modality}}' and {mark!r}")
        targets[g] = [str(t) for t in spec["targets"]]
        marks[g] = mark
        draw[g] = dict(spec.get("draw") or {})
    names = {str(k): str(v) for k, v in (data.get("modality_names") or {}).items()}
    return PhrasePool(lang=str(data.get("lang", lang)), tasks=tasks, targets=targets, marks=marks, draw=draw,
                      modality_names=names)
