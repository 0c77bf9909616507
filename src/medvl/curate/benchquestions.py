"""The phrasing pool of ``bench-build``: question templates per clinical task and granularity (a data file).

``data/bench_questions.yaml`` (English; other languages as ``bench_questions.<lang>.yaml``) maps each
clinical VQA task to a task cue and phrasings with a ``{target}`` slot, and each granularity to a list
of granularity cues and target phrases that name the modality and the granularity. Loading checks that
every phrasing carries its task cue and no granularity cue, and every target phrase its modality slot,
one of its own granularity's cues and none of another's, so each generated question names the modality,
a task cue and (unambiguously) the granularity.

An optional ``modality_recognition`` section holds the phrasings of modality-recognition questions
("which imaging modality ..."; the options are modality names): each contains the section's cue and an
image-level granularity cue, and names no modality (the answer must not be in the question)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

GRANULARITIES = ("image", "box", "mask", "contour")
QUESTION_KINDS = ("labels", "modality")  # what bench-build asks: a region's / image's label, the image's modality


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
    cues: dict[str, list[str]]  # granularity -> words naming it; every target phrase holds one of its own
    draw: dict[str, dict[str, Any]]  # granularity -> drawing style (color, alpha)
    modality_names: dict[str, str] = field(default_factory=dict)
    modality_recognition: TaskPhrases | None = None  # phrasings of "which modality" questions (no {target})

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
        """How questions name a record's modality (the key itself when the file does not map it)."""
        return self.modality_names.get(modality, modality)

    def modality_question(self, pick: int) -> str:
        """One modality-recognition question; ``pick`` (a stable integer) chooses the phrasing."""
        if self.modality_recognition is None:
            raise PhrasePoolError(f"the {self.lang!r} phrasing file has no 'modality_recognition' section")
        phrasings = self.modality_recognition.phrasings
        return phrasings[pick % len(phrasings)]

    def granularities_named(self, text: str) -> list[str]:
        """The granularities whose cues occur in ``text`` (case-insensitive), in ``GRANULARITIES`` order."""
        low = text.lower()
        return [g for g in GRANULARITIES if any(c.lower() in low for c in self.cues.get(g, []))]

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
    cues: dict[str, list[str]] = {}
    draw: dict[str, dict[str, Any]] = {}
    grans = data.get("granularities") or {}
    for g in GRANULARITIES:
        spec = grans.get(g)
        raw_cues = spec.get("cues") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or not spec.get("targets") or not isinstance(raw_cues, list) \
                or not raw_cues or not all(str(c).strip() for c in raw_cues):
            raise PhrasePoolError(f"{p}: granularities.{g}: needs a non-empty 'cues' list (words naming the "
                                  f"granularity) and a non-empty 'targets' list")
        cues[g] = [str(c).strip() for c in raw_cues]
        targets[g] = [str(t) for t in spec["targets"]]
        draw[g] = dict(spec.get("draw") or {})
    pool = PhrasePool(lang=str(data.get("lang", lang)), tasks=tasks, targets=targets, cues=cues, draw=draw,
                      modality_names={str(k): str(v) for k, v in (data.get("modality_names") or {}).items()},
                      modality_recognition=_modality_phrases(data.get("modality_recognition"), p))
    _check_granularity_cues(pool, p)
    _check_modality_phrases(pool, p)
    return pool


def _modality_phrases(spec: Any, p: Path) -> TaskPhrases | None:
    """The ``modality_recognition`` section (task name, cue, phrasings), or None when the file has none."""
    if spec is None:
        return None
    where = f"{p}: modality_recognition"
    if not isinstance(spec, dict):
        raise PhrasePoolError(f"{where}: expected a mapping with 'task', 'cue' and 'phrasings'")
    name, cue = str(spec.get("task") or "").strip(), str(spec.get("cue") or "").strip()
    phrasings = spec.get("phrasings")
    if not name or not cue or not isinstance(phrasings, list) or not phrasings:
        raise PhrasePoolError(f"{where}: needs a 'task' (the clinical VQA task name written to the TSV), a 'cue' "
                              f"and a non-empty 'phrasings' list")
    return TaskPhrases(name, cue, [str(x) for x in phrasings])


def _check_modality_phrases(pool: PhrasePool, p: Path) -> None:
    """Every modality-recognition phrasing holds the section's cue and an image-level cue (and no other
    granularity's), has no slot, and names no modality (neither a ``modality_names`` key or name nor a
    taxonomy modality), so the question never gives its answer away."""
    mr = pool.modality_recognition
    if mr is None:
        return
    from medvl.taxonomy import MODALITIES, modality_name

    names = {*pool.modality_names, *pool.modality_names.values(), *MODALITIES,
             *(modality_name(k, lang) for k in MODALITIES for lang in ("en", "zh"))}
    for i, ph in enumerate(mr.phrasings):
        where = f"{p}: modality_recognition.phrasings[{i}] {ph!r}"
        if "{" in ph or "}" in ph:
            raise PhrasePoolError(f"{where}: takes no slot ({{target}} / {{modality}} would name the answer)")
        if mr.cue.lower() not in ph.lower():
            raise PhrasePoolError(f"{where}: must contain the cue {mr.cue!r}")
        named = pool.granularities_named(ph)
        if named != ["image"]:
            raise PhrasePoolError(f"{where}: must contain one of the image cues {pool.cues['image']} and no cue of "
                                  f"another granularity (found: {named or 'none'})")
        hit = sorted(n for n in names if n and _names(ph, n))
        if hit:
            raise PhrasePoolError(f"{where}: names the modality {hit[0]!r}; the question must not give the answer away")


def _names(text: str, name: str) -> bool:
    """Whether ``text`` contains ``name`` as a whole word (case-insensitive; CJK names as a substring)."""
    if not name.isascii():
        return name in text
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", text, flags=re.IGNORECASE) is not None


def _check_granularity_cues(pool: PhrasePool, p: Path) -> None:
    """Every target phrase names its own granularity (one of its cues) and no other; task phrasings and
    modality names name none, so a question's granularity is read from its target phrase alone."""
    for g in GRANULARITIES:
        for i, t in enumerate(pool.targets[g]):
            named = pool.granularities_named(t)
            if "{modality}" not in t or named != [g]:
                raise PhrasePoolError(
                    f"{p}: granularities.{g}.targets[{i}] {t!r}: must contain '{{modality}}' and one of the "
                    f"{g} cues {pool.cues[g]} and no cue of another granularity (found: {named or 'none'})")
    for tp in pool.tasks.values():
        for i, ph in enumerate(tp.phrasings):
            if pool.granularities_named(ph.replace("{target}", "")):
                raise PhrasePoolError(f"{p}: tasks.{tp.name}.phrasings[{i}] {ph!r}: names a granularity "
                                      f"({pool.granularities_named(ph)}); leave that to the target phrase")
    for key, name in sorted(pool.modality_names.items()):
        if pool.granularities_named(name):
            raise PhrasePoolError(f"{p}: modality_names.{key} {name!r}: contains a granularity cue")
