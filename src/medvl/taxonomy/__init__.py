"""The shared vocabularies: modalities, departments, clinical tasks, body regions, views, and the
English -> Chinese label glossary. The vocabularies live in ``data/*.yaml``; this module loads them
once and offers lookups that accept the many spellings found in datasets and DICOM headers.

Lookups (``normalize_*``) compare a *key* form of the text: lower-case, "&" read as "and", and every
character that is not a letter or digit dropped, so "Magnetic-Resonance", "magnetic resonance" and
"MAGNETIC_RESONANCE" all meet. They return the canonical key, or None when the text is unknown."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from medvl.core.yamlio import load_data_yaml

DATA_DIR = Path(__file__).parent / "data"
LANGS = ("en", "zh")


def _load(name: str) -> Any:
    path = DATA_DIR / name
    return load_data_yaml(path.read_text(encoding="utf-8"))


def lookup_key(text: str) -> str:
    """The comparison form of a name: lower-case, '&' -> 'and', only letters and digits kept."""
    t = str(text).strip().lower().replace("&", " and ")
    return "".join(ch for ch in t if ch.isalnum())


@dataclass
class Vocabulary:
    """One vocabulary: canonical keys in file order, display names per language, and a synonym index."""

    kind: str
    keys: list[str]
    names: dict[str, dict[str, str]]  # key -> {"en": ..., "zh": ...}
    index: dict[str, str] = field(default_factory=dict)  # lookup_key(spelling) -> key
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> the raw YAML entry

    @classmethod
    def from_entries(cls, kind: str, entries: list[dict[str, Any]], spelling_fields: tuple[str, ...] = ()) -> "Vocabulary":
        voc = cls(kind=kind, keys=[], names={})
        for e in entries:
            key = str(e["key"])
            if key in voc.names:
                raise ValueError(f"{kind} vocabulary: key {key!r} is listed twice")
            voc.keys.append(key)
            voc.names[key] = {"en": str(e.get("en", key)), "zh": str(e.get("zh", e.get("en", key)))}
            voc.extra[key] = e
        # canonical keys and display names win over synonyms when spellings collide
        for key in voc.keys:
            e = voc.extra[key]
            for spelling in (key, voc.names[key]["en"], voc.names[key]["zh"]):
                voc.index.setdefault(lookup_key(spelling), key)
        for key in voc.keys:
            e = voc.extra[key]
            spellings = list(e.get("synonyms") or [])
            for f in spelling_fields:
                value = e.get(f) or []
                spellings.extend([value] if isinstance(value, str) else value)  # a string is one spelling
            for spelling in spellings:
                k = lookup_key(spelling)
                if k:
                    voc.index.setdefault(k, key)
        return voc

    def normalize(self, text: str | None) -> str | None:
        if text is None:
            return None
        return self.index.get(lookup_key(text))

    def name(self, key: str, lang: str = "en") -> str:
        if lang not in LANGS:
            raise ValueError(f"unknown language {lang!r}; allowed: {', '.join(LANGS)}")
        canon = key if key in self.names else self.normalize(key)
        if canon is None:
            raise KeyError(f"unknown {self.kind} {key!r}; allowed: {', '.join(self.keys)}")
        return self.names[canon][lang]


@lru_cache(maxsize=None)
def _vocabs() -> dict[str, Vocabulary]:
    return {
        "modality": Vocabulary.from_entries("modality", _load("modalities.yaml")["modalities"], ("dicom", "en_image")),
        "department": Vocabulary.from_entries(
            "department", [{"en": d["key"], **d} for d in _load("departments.yaml")["departments"]]),
        "clinical_task": Vocabulary.from_entries(
            "clinical task", [{"en": d["key"], **d} for d in _load("clinical_tasks.yaml")["clinical_tasks"]]),
        "body_region": Vocabulary.from_entries("body region", _load("body_regions.yaml")["body_regions"]),
        "view": Vocabulary.from_entries("view", _load("views.yaml")["views"]),
    }


VOCABULARY_KINDS: tuple[str, ...] = ("modality", "department", "clinical_task", "body_region", "view")


def vocabulary(kind: str) -> list[dict[str, Any]]:
    """The entries of one vocabulary (``VOCABULARY_KINDS``) in file order: ``key``, display names ``en`` and
    ``zh``, ``synonyms`` (other accepted spellings) and, for modalities, ``dicom`` (Modality codes)."""
    if kind not in VOCABULARY_KINDS:
        raise KeyError(f"unknown vocabulary {kind!r}; allowed: {', '.join(VOCABULARY_KINDS)}")
    voc = _vocabs()[kind]
    return [{"key": k, "en": voc.names[k]["en"], "zh": voc.names[k]["zh"],
             "synonyms": [str(x) for x in voc.extra[k].get("synonyms") or []],
             "dicom": [str(x) for x in voc.extra[k].get("dicom") or []]} for k in voc.keys]


MODALITIES: list[str] = list(_vocabs()["modality"].keys)
GMAI_VL_MODALITIES: list[str] = [k for k in MODALITIES if _vocabs()["modality"].extra[k].get("gmai_vl")]
DEPARTMENTS: list[str] = list(_vocabs()["department"].keys)
CLINICAL_TASKS: list[str] = list(_vocabs()["clinical_task"].keys)
BODY_REGIONS: list[str] = list(_vocabs()["body_region"].keys)
VIEWS: list[str] = list(_vocabs()["view"].keys)


def normalize_modality(text: str | None) -> str | None:
    """Canonical modality key for a name, synonym, Chinese name or DICOM Modality code ("MRI" -> "MR",
    "CR" -> "X-ray", "SM" -> "pathology"); None when unknown."""
    return _vocabs()["modality"].normalize(text)


def modality_name(key: str, lang: str = "en") -> str:
    """Display name of a modality ("MR" -> "MR" / "磁共振")."""
    return _vocabs()["modality"].name(key, lang)


def modality_image_name(key: str, lang: str = "en", article: bool = False) -> str:
    """Noun phrase for one image of the modality: "MR image", with ``article`` "an MR image";
    Chinese "磁共振图像" (Chinese has no article)."""
    voc = _vocabs()["modality"]
    canon = voc.normalize(key) if key not in voc.names else key
    if canon is None:
        raise KeyError(f"unknown modality {key!r}; allowed: {', '.join(voc.keys)}")
    e = voc.extra[canon]
    if lang == "zh":
        return str(e.get("zh_image", voc.names[canon]["zh"]))
    if lang != "en":
        raise ValueError(f"unknown language {lang!r}; allowed: {', '.join(LANGS)}")
    phrase = str(e.get("en_image", f"{voc.names[canon]['en']} image"))
    return f"{e.get('article', 'a')} {phrase}" if article else phrase


def normalize_department(text: str | None) -> str | None:
    """One of the 18 GMAI-MMBench departments ("ENT" -> "Otolaryngology (ENT) / Head & Neck Surgery")."""
    return _vocabs()["department"].normalize(text)


def department_name(key: str, lang: str = "en") -> str:
    return _vocabs()["department"].name(key, lang)


def normalize_clinical_task(text: str | None) -> str | None:
    """One of the 18 GMAI-MMBench clinical VQA tasks ("organ recognition (thorax)" -> "Organ Recognition - Thorax")."""
    return _vocabs()["clinical_task"].normalize(text)


def clinical_task_name(key: str, lang: str = "en") -> str:
    return _vocabs()["clinical_task"].name(key, lang)


def normalize_body_region(text: str | None) -> str | None:
    """Canonical body-region key ("thorax" -> "chest", "retina" -> "eye")."""
    return _vocabs()["body_region"].normalize(text)


def body_region_name(key: str, lang: str = "en") -> str:
    return _vocabs()["body_region"].name(key, lang)


def normalize_view(text: str | None) -> str | None:
    """Canonical view / slice-plane key ("transverse" -> "axial", "posteroanterior" -> "PA")."""
    return _vocabs()["view"].normalize(text)


def view_name(key: str, lang: str = "en") -> str:
    """Display phrase of a view ("axial" -> "axial slice" / "轴位切片")."""
    return _vocabs()["view"].name(key, lang)


# ---- labels -----------------------------------------------------------------------------------------

_HYPHEN_RUN = re.compile(r"-{2,}|(?<![0-9A-Za-z])-|-(?![0-9A-Za-z])")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=None)
def _acronyms() -> frozenset[str]:
    return frozenset(str(a).upper() for a in _load("label_rules.yaml").get("acronyms") or [])


def _is_acronym(word: str) -> bool:
    letters = [c for c in word if c.isalpha()]
    if len(letters) < 2 or not all(c.isupper() for c in letters if c.isascii()):
        return False
    if any(not c.isascii() for c in letters):
        return False
    if any(c.isdigit() for c in word) or len(letters) <= 4:
        return True
    return "".join(letters) in _acronyms() or word.strip(".,;:()") in _acronyms()


def _case_word(word: str) -> str:
    """Lower-case a word but keep acronyms, also as parts of hyphenated words ("DAB-positive")."""
    if _is_acronym(word) or _LETTER_DIGITS.fullmatch(word):
        return word
    if "-" in word:  # "X-ray", "T1-weighted": a lone capital (with digits) inside a compound stays too
        return "-".join(p if _is_acronym(p) or _LETTER_DIGITS.fullmatch(p) or p.isupper() and len(p) == 1
                        else p.lower() for p in word.split("-"))
    return word.lower()


_LETTER_DIGITS = re.compile(r"[A-Z]\d+")  # T1, T2, C5


def _clean(text: str) -> str:
    t = str(text).replace("_", " ")
    t = _HYPHEN_RUN.sub(" ", t)
    return _SPACES.sub(" ", t).strip()


def normalize_label(text: str, synonyms: Mapping[str, str] | None = None) -> str:
    """The canonical form of a dataset label.

    Trims; underscores, hyphen runs ("--") and hyphens at word edges become spaces; whitespace collapses;
    words are lower-cased except acronyms (see ``data/label_rules.yaml``: all-capital words with a digit
    or at most four letters, plus a listed few), so "Pleural_Thickening" -> "pleural thickening",
    "NORMAL" -> "normal", "NORM" -> "NORM", "COVID-19" -> "COVID-19", "DAB-positive" -> "DAB-positive".

    Then the per-recipe ``synonyms`` map (a source's ``label_synonyms``) is applied. A key matches a label
    when both have the same :func:`lookup_key` (case, spaces, underscores, hyphens and punctuation
    ignored), so the key "Infiltrate" matches "infiltrate", "INFILTRATE" and "in_filtrate" alike. The
    target is normalized like every other label ("Infiltration" -> "infiltration"), so a synonym never
    creates a second spelling of a label the data already has. Targets are not looked up again (no chains)."""
    out = _normalize_words(text)
    if synonyms:
        hit = synonym_table(synonyms).get(lookup_key(out))
        if hit is not None:
            return hit
    return out


def _normalize_words(text: str) -> str:
    words = _clean(text).split(" ")
    return " ".join(_case_word(w) for w in words if w)


def synonym_table(synonyms: Mapping[str, str]) -> dict[str, str]:
    """``label_synonyms`` as used by :func:`normalize_label`: lookup_key(key) -> normalized target.

    Raises ValueError naming the keys when a key or target is empty, or when two keys that match the same
    labels (e.g. "Infiltrate" and "infiltrate") map to different targets."""
    return _synonym_table(tuple(sorted((str(k), str(v)) for k, v in synonyms.items())))


@lru_cache(maxsize=256)
def _synonym_table(items: tuple[tuple[str, str], ...]) -> dict[str, str]:
    table: dict[str, str] = {}
    origin: dict[str, str] = {}
    for k, v in items:
        key, target = lookup_key(k), _normalize_words(v)
        if not key:
            raise ValueError(f"key {k!r}: has no letters or digits, so it matches no label")
        if not target:
            raise ValueError(f"key {k!r}: empty target label")
        if key in table and table[key] != target:
            raise ValueError(f"keys {origin[key]!r} and {k!r} match the same labels (case, spaces and punctuation "
                             f"are ignored) but map to different targets ({table[key]!r}, {target!r})")
        table[key] = target
        origin.setdefault(key, k)
    return table


@lru_cache(maxsize=None)
def _glossary() -> dict[str, str]:
    raw = _load("glossary_zh.yaml")["glossary"]
    return {_SPACES.sub(" ", str(k)).strip().lower(): str(v) for k, v in raw.items()}


def _zh_key(label: str) -> str:
    """The comparison form of a label for Chinese lookups: cleaned, lower-case."""
    return _clean(label).lower()


def label_zh(label: str, overrides: Mapping[str, str] | None = None) -> str | None:
    """Chinese term for a (normalized) English label, or None when nothing knows it.

    ``overrides`` (a recipe's ``generation.label_zh``: label -> Chinese name) is consulted first, then
    the glossary. Matching is case-insensitive on the cleaned label; fallbacks, in order: hyphens read
    as spaces ("non-ossifying" ~ "non ossifying"), a plural "s" taken off, and a leading marker word
    (an acronym such as "HER2" or "FHL2") kept as written before the glossary term of the rest
    ("HER2 positive" -> "HER2阳性")."""
    key = _zh_key(label)
    if overrides:
        table = _override_table(tuple(sorted((str(k), str(v)) for k, v in overrides.items())))
        for k in (key, key.replace("-", " ")):
            if k in table:
                return table[k]
    hit = _glossary_lookup(key)
    if hit is not None:
        return hit
    words = _clean(label).split(" ")
    if len(words) >= 2 and _is_marker(words[0]):
        rest = _glossary_lookup(" ".join(words[1:]).lower())
        if rest is not None:
            return words[0] + rest
    return None


def _glossary_lookup(key: str) -> str | None:
    g = _glossary()
    for k in dict.fromkeys((key, key.replace("-", " "))):
        if k in g:
            return g[k]
        if k.endswith("s") and k[:-1] in g:
            return g[k[:-1]]
    return None


def _is_marker(word: str) -> bool:
    """A gene / stain / marker name written in capitals, possibly with digits ("FHL2", "HER2", "DAB", "PD-L1")."""
    letters = [c for c in word if c.isalpha()]
    return bool(letters) and all(c.isascii() and c.isupper() for c in letters) and len(word) >= 2


@lru_cache(maxsize=64)
def _override_table(items: tuple[tuple[str, str], ...]) -> dict[str, str]:
    table: dict[str, str] = {}
    for k, v in items:
        table[_zh_key(k)] = str(v).strip()
        table.setdefault(_zh_key(k).replace("-", " "), str(v).strip())
    return table


def has_chinese_name(label: str, overrides: Mapping[str, str] | None = None) -> bool:
    """True when a label can be written in Chinese: it already contains Chinese characters, or
    :func:`label_zh` (with ``overrides``) knows it."""
    if any("\u4e00" <= ch <= "\u9fff" for ch in str(label)):
        return True
    return label_zh(label, overrides) is not None


def glossary_size() -> int:
    return len(_glossary())


__all__ = [
    "VOCABULARY_KINDS", "vocabulary", "MODALITIES", "GMAI_VL_MODALITIES", "DEPARTMENTS", "CLINICAL_TASKS",
    "BODY_REGIONS", "VIEWS", "normalize_modality", "modality_name", "modality_image_name", "normalize_department",
    "department_name", "normalize_clinical_task", "clinical_task_name", "normalize_body_region", "body_region_name",
    "normalize_view", "view_name", "normalize_label", "synonym_table", "label_zh", "has_chinese_name", "lookup_key",
    "glossary_size",
]
