"""Checks a model-written reply must pass before it is kept (annotation-guided generation, GMAI-VL's rules).

Each function returns the problems found (empty = keep); the client re-asks with them, and a reply still
failing after the re-asks is rejected with them as the reason. Phrases match whole words, case-insensitively.
- region captions start with "This region" and do not state the region's label;
- captions and QA mention no label of the dataset that the record does not carry ("no finding" labels such as
  "normal" are exempt: the word is common in descriptions) and no imaging technique other than the record's;
- answers agree with the labels: a "no" to a question about a present label, or a negation of it, is a violation;
- translations keep every ``<box>`` tag with its numbers, every ``<ref>`` pair and ``<image>``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from medvl.generate.semantics import is_no_finding

_BOX = re.compile(r"<box>.*?</box>", re.DOTALL)
_NEGATIVE_START = re.compile(r"^\W*(no|not|none|absent|negative)\b", re.IGNORECASE)
_NEGATION = r"\b(?:no|not|without|absent|absence of|free of|rules? out|ruled out|negative for)\b[^.;]{0,40}?"


def _phrase_rx(phrase: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w-])" + re.escape(phrase.strip()) + r"(?:s|es)?(?![\w-])", re.IGNORECASE)


def mentioned(text: str, phrases: Iterable[str]) -> list[str]:
    """The phrases that occur in ``text`` as whole words (a plural s/es allowed)."""
    return [p for p in dict.fromkeys(phrases) if p.strip() and _phrase_rx(p).search(text)]


@lru_cache(maxsize=None)
def modality_phrases() -> dict[str, tuple[str, ...]]:
    """Modality key -> the unambiguous English phrases naming it (names, and synonyms of 6+ characters)."""
    from medvl.taxonomy import vocabulary

    out = {}
    for m in vocabulary("modality"):
        names = {str(m.get("en", "")), str(m.get("en_image", ""))}
        names |= {s for s in m.get("synonyms", []) or [] if len(s) >= 6 and s.isascii()}
        out[m["key"]] = tuple(sorted(n for n in names if n))
    if "MR" in out:
        out["MR"] = (*out["MR"], "MRI")
    return out


def other_modalities(text: str, modality: str | None) -> list[str]:
    """Names of imaging techniques other than ``modality`` that ``text`` mentions."""
    from medvl.taxonomy import normalize_modality

    key = normalize_modality(modality) if modality else None
    if key is None:
        return []
    own = {p.lower() for p in modality_phrases().get(key, ())}
    found = []
    for k, phrases in modality_phrases().items():
        if k != key:
            found += [p for p in mentioned(text, phrases) if p.lower() not in own]
    return found


def absent_labels(present: Iterable[str], label_space: Iterable[str]) -> list[str]:
    present_l = {p.lower() for p in present}
    return [x for x in label_space if x.lower() not in present_l and not is_no_finding(x)]


def content_problems(text: str, present: list[str], label_space: list[str], modality: str | None) -> list[str]:
    """What a caption, question or answer must not say: absent labels, other imaging techniques, a present
    label negated."""
    problems = []
    absent = [x for x in mentioned(text, absent_labels(present, label_space))
              if not any(x.lower() in p.lower() for p in present)]  # "tumour" inside "liver tumour" is fine
    if absent:
        problems.append(f"it mentions {', '.join(map(repr, absent))}, which the annotations do not give")
    others = other_modalities(text, modality)
    if others:
        problems.append(f"it names another imaging technique ({', '.join(map(repr, others))})")
    negated = [p for p in present if not is_no_finding(p)
               and re.search(_NEGATION + re.escape(p), text, re.IGNORECASE)]
    if negated:
        problems.append(f"it denies {', '.join(map(repr, negated))}, which the annotations give as present")
    return problems


def region_caption_problems(text: str, label: str, aliases: Iterable[str] = ()) -> list[str]:
    problems = []
    if not text.strip().startswith("This region"):
        problems.append('the description must start with "This region"')
    stated = mentioned(text, [label, *aliases])
    if stated:
        problems.append(f"it states the label ({', '.join(map(repr, stated))}); it may only hint at it")
    return problems


def answer_problems(question: str, answer: str, present: list[str]) -> list[str]:
    """A "no" to a question about a present label contradicts the annotations."""
    asked = [p for p in mentioned(question, present) if not is_no_finding(p)]
    if asked and _NEGATIVE_START.match(answer):
        return [f"the answer says no about {', '.join(map(repr, asked))}, which the annotations give as present"]
    return []


def tag_problems(source: list[str], translated: list[str]) -> list[str]:
    """A translation must keep the turns, every <box> tag with its numbers, the <ref> pairs and <image>."""
    if len(source) != len(translated):
        return [f"expected {len(source)} translated turns, got {len(translated)}"]
    problems = []
    for i, (s, t) in enumerate(zip(source, translated)):
        if _BOX.findall(s) != _BOX.findall(t):
            problems.append(f"turn {i + 1}: the <box> tags changed (expected {_BOX.findall(s)})")
        for tag in ("<ref>", "</ref>", "<image>"):
            if s.count(tag) != t.count(tag):
                problems.append(f"turn {i + 1}: expected {s.count(tag)} {tag} tag(s), got {t.count(tag)}")
        if not re.search(r"[\u4e00-\u9fff]", t):
            problems.append(f"turn {i + 1} is not in Chinese")
    return problems
