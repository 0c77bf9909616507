"""What some labels mean to the generators, read from ``templates/label_semantics.yaml``: labels that record
the absence of findings ("No Finding"), and labels that name separate, countable instances ("lung nodule",
"white blood cell") as opposed to structures whose mask components are fragments ("retinal vessels",
"grey matter"). Also what a whole-image box is."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from medvl.core.yamlio import load_data_yaml

SEMANTICS_FILE = Path(__file__).parent / "templates" / "label_semantics.yaml"
WHOLE_IMAGE_FRACTION = 0.9  # default of generation.options.whole_image_fraction
_WORD = re.compile(r"[^\W_]+")


@lru_cache(maxsize=None)
def _semantics() -> dict[str, Any]:
    return load_data_yaml(SEMANTICS_FILE.read_text(encoding="utf-8")) or {}


def _label_key(label: str) -> str:
    return " ".join(str(label).replace("_", " ").replace("-", " ").lower().split())


def _words(label: str) -> list[str]:
    return _WORD.findall(str(label).lower())


@lru_cache(maxsize=None)
def no_finding_labels() -> frozenset[str]:
    """Comparison forms of the labels that mean "no finding"."""
    return frozenset(_label_key(x) for x in _semantics().get("no_finding_labels") or [])


def is_no_finding(label: str) -> bool:
    """True for a label that records the absence of findings ("No Finding", "no acute findings")."""
    return _label_key(label) in no_finding_labels()


@lru_cache(maxsize=None)
def _instance_vocab() -> tuple[frozenset[str], tuple[tuple[str, ...], ...], frozenset[str]]:
    """(single instance words, multi-word instance phrases, part words), lower-case."""
    entries = [tuple(_words(x)) for x in _semantics().get("instance_words") or []]
    single = frozenset(e[0] for e in entries if len(e) == 1)
    phrases = tuple(e for e in entries if len(e) > 1)
    parts = frozenset(w for x in _semantics().get("part_words") or [] for w in _words(x))
    return single, phrases, parts


def _singulars(word: str) -> tuple[str, ...]:
    out = [word]
    if word.endswith("s"):
        out.append(word[:-1])
    if word.endswith("es"):
        out.append(word[:-2])
    return tuple(out)


@lru_cache(maxsize=4096)
def is_instance_label(label: str) -> bool:
    """True when a label names separate, countable things (one of its words, or a listed phrase, is an
    instance word, also as a plural) and none of its words makes it a part or area ("tumour core")."""
    single, phrases, parts = _instance_vocab()
    forms = [_singulars(w) for w in _words(label)]  # per word: the word and its possible singulars
    if any(f in parts for fs in forms for f in fs):
        return False
    if any(f in single for fs in forms for f in fs):
        return True
    return any(all(phrase[j] in forms[i + j] for j in range(len(phrase)))
               for phrase in phrases for i in range(len(forms) - len(phrase) + 1))


def is_whole_image(box: Sequence[float], width: int, height: int, fraction: float = WHOLE_IMAGE_FRACTION) -> bool:
    """True when a pixel box spans at least ``fraction`` of the image's width and of its height: it says
    nothing about where something is, so it is never used as a localized finding (no region caption, no
    box question, no count)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x2 - x1) >= fraction * width and (y2 - y1) >= fraction * height
