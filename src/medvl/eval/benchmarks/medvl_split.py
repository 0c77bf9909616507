"""The held-out split of a ``medvl build`` output folder as a benchmark.

Reads ``<out>/samples.jsonl`` (one Sample per line: id, images, turns [{role, text}], kind, lang, split, meta),
keeps the samples of the requested split (default ``test``) whose kind is ``perception_qa`` or
``instruction_qa`` with exactly one user and one assistant turn, and turns each into an item:

- the question is the user text without ``<image>`` tokens; the gold is the assistant text with ``<ref>`` /
  ``</ref>`` tags removed (the target text stays); answers holding a ``<box>`` stay "open" with
  ``meta["has_box"] = True`` (the box text is kept for IoU-style scoring);
- a question that lists lettered options (lines ``A. ...``, ``B. ...``) becomes multiple choice (question = the
  text before the options; text after them goes to ``meta["question_suffix"]``); the gold letter is the option
  the answer names (``"The answer is B. melanoma."``), its leading letter, or the option whose text it equals;
- answers whose first clause is yes/no (``"Yes. The image is labelled X."``; Chinese 是的/不是/...) are "closed"
  with that word as gold and the full text in ``meta["answer_text"]``; other answers are "open".
Images are ``<out>/<image path>``. Samples of other kinds or with several turns are recorded in
``self.skipped`` (so counts add up), as are samples whose images are missing.
A ``medvl bench-build`` TSV is a GMAI-MMBench-style file: read it with ``gmai-mmbench`` and ``file=``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field

from medvl.eval.benchmarks._common import (
    LETTERS, LoaderBase, check_split, clean_str, is_yes_no, listing, missing_fields, read_jsonl, require_dir, safe_join)
from medvl.eval.benchmarks._options import BenchmarkOptions
from medvl.eval.types import BENCHMARKS, BenchmarkFormatError, EvalItem

QA_KINDS = ("perception_qa", "instruction_qa")
FIELDS = ("id", "images", "turns", "kind", "split")
OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[.):：]\s*(.+?)\s*$")
LEADING_LETTER = re.compile(r"^\s*\(?([A-Z])\)?(?:[.):：]|\s|$)")
REF_TAG = re.compile(r"</?ref>")
IMAGE_TOKEN = re.compile(r"<image>\s*")
GROUP_KEYS = ("modality", "department", "clinical_task", "dataset", "body_region", "granularity")


def split_options(text: str) -> tuple[str, dict[str, str], str]:
    """(stem, options, suffix): the first block of at least two consecutive lettered option lines A., B., ...
    in ``text``, the text before it and the text after it (e.g. "Answer with the option's letter")."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = OPTION_LINE.match(line)
        if not m or m.group(1) != "A":
            continue
        opts: dict[str, str] = {}
        j = i
        while j < len(lines):
            mj = OPTION_LINE.match(lines[j])
            if not mj or mj.group(1) != LETTERS[len(opts)]:
                break
            opts[mj.group(1)] = mj.group(2)
            j += 1
        if len(opts) >= 2:
            return "\n".join(lines[:i]).strip(), opts, "\n".join(lines[j:]).strip()
    return text, {}, ""


def answer_letter(answer: str, opts: dict[str, str]) -> str | None:
    """The option an answer names: a unique ``"L. text"`` inside it (template answers such as
    "The answer is B. melanoma."), else a leading letter, else the option whose text it equals."""
    low = answer.lower()
    named = [L for L, t in opts.items() if f"{L}. {t}".lower() in low]
    if len(named) == 1:
        return named[0]
    m = LEADING_LETTER.match(answer)
    if m and m.group(1) in opts:
        return m.group(1)
    bare = answer.strip().rstrip(".").strip().lower()
    return next((L for L, t in opts.items() if t.strip().lower() == bare), None)


def leading_yes_no(answer: str, lang: str) -> str | None:
    """The yes/no word an answer starts with, as written ("Yes" in "Yes. The image is labelled X.", "是的" in
    "是的。..."), when its first clause is exactly a yes/no form; else None."""
    first = re.split(r"[.,;!?。，；！？、]", answer.strip(), maxsplit=1)[0].strip()
    return first if first and is_yes_no(first, lang) else None


class MedvlOptions(BenchmarkOptions):
    file: str | None = Field(None, description="a samples file relative to --data (default: samples.jsonl)")


@BENCHMARKS.register("medvl")
class MedvlSplit(LoaderBase):
    """Held-out QA of a ``medvl build`` output (``samples.jsonl``); option ``file`` = another samples file."""

    Options = MedvlOptions
    splits = ("test", "val", "train")
    default_protocol = "short_answer"
    description = "medvl build held-out split: single-turn perception/instruction QA of samples.jsonl (split=test)"

    def load(self, data_dir: Path, split: str | None = None, **options: Any) -> list[EvalItem]:
        """Items of ``split`` (default test) in file order."""
        self._reset()
        given = self._options(options).file
        split = check_split("medvl", split, self.splits, "test")
        d = require_dir(data_dir, "medvl")
        path = Path(given) if given else d / "samples.jsonl"
        if not path.is_absolute():
            path = d / path
        if not path.is_file():
            hint = (" (this folder holds a bench-build bench.tsv: load it with gmai-mmbench and file=bench.tsv)"
                    if (d / "bench.tsv").is_file() else "")
            raise BenchmarkFormatError(
                f"medvl: missing {path} (a `medvl build` output folder){hint}; present: {listing(d)}")
        items = []
        for k, s in enumerate(read_jsonl(path, self.skipped)):
            sid = clean_str(s.get("id")) or f"{path.name}:{k + 1}"
            miss = missing_fields(s, FIELDS)
            if miss:
                if s.get("split") is None or s.get("split") == split:
                    self._skip(sid, f"{path}: line {k + 1} lacks {', '.join(miss)}; present: {', '.join(s)}",
                               "missing_field")
                continue
            if s["split"] != split:
                continue
            item = self._item(s, sid, d, path, k + 1)
            if item is not None:
                items.append(item)
        return items

    def _item(self, s: dict[str, Any], sid: str, root: Path, path: Path, line: int) -> EvalItem | None:
        if s["kind"] not in QA_KINDS:
            self._skip(sid, f"{path}: line {line} kind {s['kind']!r} is not a QA kind ({', '.join(QA_KINDS)})",
                       "not_qa")
            return None
        turns = s["turns"]
        roles = [t.get("role") for t in turns] if isinstance(turns, list) and all(isinstance(t, dict) for t in turns) else []
        if roles != ["user", "assistant"]:
            self._skip(sid, f"{path}: line {line} is not a single question/answer (roles {roles})", "not_qa")
            return None
        images = []
        for rel in s["images"] or []:
            p = safe_join(root, str(rel))
            if p is None or not p.is_file():
                self._skip(sid, f"{path}: line {line} image {rel!r} not found under {root}", "missing_image")
                return None
            images.append(str(p))
        question = IMAGE_TOKEN.sub("", clean_str(turns[0].get("text"))).strip()
        answer = REF_TAG.sub("", clean_str(turns[1].get("text"))).strip()
        if not question or not answer:
            self._skip(sid, f"{path}: line {line} has an empty question or answer", "missing_field")
            return None
        lang = clean_str(s.get("lang")) or "en"
        meta_in = s.get("meta") if isinstance(s.get("meta"), dict) else {}
        groups = {"kind": s["kind"]}
        groups.update({k: clean_str(meta_in[k]) for k in GROUP_KEYS if meta_in.get(k)})
        meta: dict[str, Any] = {"record_id": s.get("record_id"), "template_id": s.get("template_id"),
                                "generator": s.get("generator")}
        stem, opts, suffix = split_options(question)
        if opts:
            letter = answer_letter(answer, opts)
            if suffix:
                meta["question_suffix"] = suffix
            meta["answer_text"] = answer
            if letter is None:
                self._skip(sid, f"{path}: line {line} answer {answer[:60]!r} matches none of the options {sorted(opts)}",
                           "bad_answer")
                return None
            return EvalItem(id=sid, question=stem, images=images, answer=letter, options=opts, answer_type="mc",
                            lang=lang, groups=groups, meta=meta)
        if "<box>" in answer:
            meta["has_box"] = True
        yes_no = leading_yes_no(answer, lang)
        if yes_no is not None:
            meta["answer_text"] = answer
            return EvalItem(id=sid, question=question, images=images, answer=yes_no, answer_type="closed",
                            lang=lang, groups=groups, meta=meta)
        return EvalItem(id=sid, question=question, images=images, answer=answer, answer_type="open",
                        lang=lang, groups=groups, meta=meta)
