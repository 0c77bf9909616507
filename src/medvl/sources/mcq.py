"""``mcq_jsonl``: medical multiple-choice exams as text-only QA samples (GMAI-VL's Text-Single), in the published
layouts of
- MedQA (USMLE; ``data_clean/questions/US/{train,dev,test}.jsonl``): ``question``, ``options`` {"A": ...},
  ``answer_idx`` (a letter), ``answer`` (the option's text), ``meta_info``;
- MedMCQA (``{train,dev,test}.json``, one JSON object per line): ``id``, ``question``, ``opa``..``opd``, ``cop``
  (the correct option: 1-4 in the released files, 0-3 in the Hugging Face copy: detected per file from the values,
  or ``options.cop_base``), ``exp`` (explanation), ``subject_name``, ``topic_name``, ``choice_type``; the test
  file has no answers (its rows are rejected as unanswered);
- CMExam (``{train,val,test}.csv``): ``Question``, ``Options`` ("A 选项\\nB 选项..."), ``Answer`` (one or more
  letters), ``Explanation``, plus category columns kept in ``meta``.
A row becomes one exchange: the question with lettered options, and the answer (letter and text) with the
explanation when the source has one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from medvl.core.records import Reject
from medvl.sources.base import SOURCES, SourceOptions, Unit
from medvl.sources.text_base import TextItem, TextSource, detect_lang, normalize_split, split_from_name

LETTERS = "ABCDEFGHIJ"
_CMEXAM_OPTION = re.compile(r"^\s*([A-J])[\s.、:：)]+(.*\S)\s*$")


class MCQOptions(SourceOptions):
    file: str | None = None  # one data file (relative to the source path); default: every .jsonl/.json/.csv
    layout: Literal["auto", "medqa", "medmcqa", "cmexam"] = "auto"
    cop_base: Literal["auto", 0, 1] = "auto"  # MedMCQA: 1 = cop 1-4 (released files), 0 = cop 0-3 (the Hub)
    explanation: bool = True  # add the source's explanation to the answer
    split_field: str | None = None  # a column holding the official split; default: the file name


def _layout(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    if "opa" in row and "cop" in row:
        return "medmcqa"
    if "Question" in row and "Options" in row:
        return "cmexam"
    if "question" in row and isinstance(row.get("options"), (dict, list)):
        return "medqa"
    return None


def format_question(question: str, options: dict[str, str]) -> str:
    return question.strip() + "\n" + "\n".join(f"{k}. {v}" for k, v in options.items())


def format_answer(letters: list[str], options: dict[str, str], explanation: str | None, lang: str) -> str:
    picked = "; ".join(f"{k}. {options[k]}" for k in letters)
    if lang == "zh":
        text = f"答案是 {picked}"
        return text + (f"\n解析：{explanation.strip()}" if explanation else "")
    text = f"The answer is {picked}."
    return text + (f"\nExplanation: {explanation.strip()}" if explanation else "")


@SOURCES.register("mcq_jsonl")
class MCQSource(TextSource):
    Options = MCQOptions

    def load_text(self, unit: Unit) -> Iterator[TextItem | Reject]:
        rows = list(self.rows(unit))
        file_split = split_from_name(Path(unit.payload["path"]))
        layout = self.opts.layout
        if layout == "auto":
            first = next((r for r in rows if not isinstance(r, Reject)), None)
            layout = _layout(first[1]) if first else None
            if layout is None and first is not None:
                yield self.reject(unit.key, f"{unit.key}: cannot tell the layout from the first row (keys "
                                  f"{sorted(first[1])[:8] if isinstance(first[1], dict) else type(first[1]).__name__});"
                                  f" set options.layout to medqa, medmcqa or cmexam", "validate")
                return
        base = self._cop_base(rows, unit) if layout == "medmcqa" else None
        if isinstance(base, Reject):
            yield base
            return
        for n, r in enumerate(rows, 1):
            if isinstance(r, Reject):
                yield r
                continue
            where, row = r
            if not isinstance(row, dict):
                yield self.reject(f"{unit.key}#{n}", f"{where}: expected an object, got {type(row).__name__}",
                                  "validate")
                continue
            try:
                q, options, letters, expl, key, meta = getattr(self, f"_{layout}")(row, base)
            except ValueError as e:
                yield self.reject(f"{unit.key}#{n}", f"{where}: {e}", "validate")
                continue
            split = normalize_split(row.get(self.opts.split_field)) if self.opts.split_field else file_split
            lang = detect_lang(q + " " + " ".join(options.values()))
            turns = [("user", format_question(q, options)),
                     ("assistant", format_answer(letters, options, expl if self.opts.explanation else None, lang))]
            yield TextItem(key=str(key or f"{Path(unit.key).stem}-{n}"), turns=turns, task="qa", split=split,
                           lang=lang, source_file=unit.key,
                           meta={"layout": layout, "answer": "".join(letters), **meta})

    def _cop_base(self, rows: list, unit: Unit) -> int | Reject:
        if self.opts.cop_base != "auto":
            return int(self.opts.cop_base)
        cops = {r[1].get("cop") for r in rows if not isinstance(r, Reject) and isinstance(r[1], dict)}
        cops = {int(c) for c in cops if isinstance(c, (int, float, str)) and str(c).lstrip("-").isdigit()}
        if 4 in cops:
            return 1
        if 0 in cops:
            return 0
        if not cops or cops <= {-1}:
            return 1  # no answers at all (the test file): every row is rejected as unanswered
        return self.reject(unit.key, f"{unit.key}: MedMCQA cop values {sorted(cops)} fit both 1-4 (released files) "
                           "and 0-3 (the Hub copy); set options.cop_base to 1 or 0", "validate")

    @staticmethod
    def _text(row: dict, key: str) -> str:
        v = row.get(key)
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"field {key!r} is missing or empty")
        return v.strip()

    def _medqa(self, row: dict, base: Any) -> tuple:
        q = self._text(row, "question")
        opts = row["options"]
        if isinstance(opts, list):
            opts = {LETTERS[i]: str(v) for i, v in enumerate(opts)}
        opts = {str(k).strip(): str(v).strip() for k, v in opts.items()}
        idx = str(row.get("answer_idx") or "").strip()
        if idx not in opts:
            raise ValueError(f"answer_idx {idx!r} is not one of the options {sorted(opts)}")
        if isinstance(row.get("answer"), str) and row["answer"].strip() and row["answer"].strip() != opts[idx]:
            raise ValueError(f"answer_idx {idx!r} names {opts[idx]!r} but answer says {row['answer'].strip()!r}")
        return q, opts, [idx], None, row.get("id"), {"meta_info": row.get("meta_info")}

    def _medmcqa(self, row: dict, base: int) -> tuple:
        q = self._text(row, "question")
        opts = {L: self._text(row, f"op{L.lower()}") for L in "ABCD"}
        cop = row.get("cop")
        if cop in (None, "", -1, "-1"):
            raise ValueError("no answer (cop is missing: the test split's answers are not released)")
        try:
            i = int(cop) - base
        except (TypeError, ValueError):
            raise ValueError(f"cop {cop!r} is not a number") from None
        if not 0 <= i < 4:
            raise ValueError(f"cop {cop!r} is outside {base}..{base + 3}")
        expl = row.get("exp") if isinstance(row.get("exp"), str) and row.get("exp").strip() else None
        meta = {k: row.get(k) for k in ("subject_name", "topic_name", "choice_type") if row.get(k) is not None}
        return q, opts, ["ABCD"[i]], expl, row.get("id"), meta

    def _cmexam(self, row: dict, base: Any) -> tuple:
        q = self._text(row, "Question")
        opts: dict[str, str] = {}
        for line in self._text(row, "Options").splitlines():
            m = _CMEXAM_OPTION.match(line)
            if m:
                opts[m.group(1)] = m.group(2)
        if len(opts) < 2:
            raise ValueError(f"cannot read the lettered options in {row['Options'][:60]!r}")
        letters = [c for c in self._text(row, "Answer").upper() if c in LETTERS]
        if not letters or any(c not in opts for c in letters):
            raise ValueError(f"Answer {row['Answer']!r} is not among the options {sorted(opts)}")
        expl = row.get("Explanation") if isinstance(row.get("Explanation"), str) and row["Explanation"].strip() else None
        meta = {k: row[k] for k in ("Disease Group", "Clinical Department", "Medical Discipline", "Competency",
                                    "Difficulty level") if row.get(k)}
        return q, opts, letters, expl, row.get("id"), meta
