"""Option lists inside a model's reply: a model often repeats the prompt's lettered options before (or
instead of) answering. Those lines restate options; they are not choices, so the extractor removes them
(``drop_echoed_options``) and does not read a leading "A." as the answer when other option lines follow
(``other_option_line``)."""

from __future__ import annotations

import re

from medvl.eval.scorers._text import normalize_answer

_OPEN = r"[\(\[（【]"
_CLOSE = r"[\)\]）】]"
# a line of an option list: "A. text", "(A) text", "A) text", "A: text", "- A. text" (markdown already removed)
_OPTION_LINE = re.compile(rf"^\s*(?:[-•]\s*)?{_OPEN}?([A-Z])(?:{_CLOSE}|[.:：、])\s*(\S.*?)\s*$")


def _is_echo_line(line: str, options: dict[str, str]) -> str | None:
    """The letter of a line that restates an option ("B. Effusion", "(B) Effusion." or "B. Effusion - less
    likely": the option's text, then nothing or a punctuation mark), else None."""
    m = _OPTION_LINE.match(line)
    if not m or m.group(1) not in options:
        return None
    want, rest = normalize_answer(options[m.group(1)]), m.group(2)
    if not want:
        return None
    if normalize_answer(rest) == want:
        return m.group(1)
    cuts = (p.start() for p in re.finditer(r"[^\w\s]", rest) if p.start() > 0)
    return m.group(1) if any(normalize_answer(rest[:k]) == want for k in cuts) else None


def drop_echoed_options(text: str, options: dict[str, str]) -> tuple[str, bool]:
    """``text`` without the option lists it repeats: runs of two or more lines that each restate an option,
    in increasing letter order (blank lines between are allowed). Returns (rest, whether a list was found).
    A repeated option list is the prompt echoed, not a choice ("A. Pneumonia\nB. Effusion\nAnswer: B")."""
    lines = text.split("\n")
    keep = [True] * len(lines)
    found, i = False, 0
    while i < len(lines):
        letter = _is_echo_line(lines[i], options)
        if letter is None:
            i += 1
            continue
        run, last, j = [i], letter, i + 1
        while j < len(lines):
            if not lines[j].strip():
                j += 1
                continue
            nxt = _is_echo_line(lines[j], options)
            if nxt is None or nxt <= last:
                break
            run.append(j)
            last, j = nxt, j + 1
        if len(run) >= 2:
            found = True
            for k in run:
                keep[k] = False
        i = run[-1] + 1
    return "\n".join(line for line, k in zip(lines, keep) if k), found


def other_option_line(text: str, letter: str, options: dict[str, str]) -> bool:
    """True when a later line also starts with an option letter other than ``letter`` ("A. Pneumonia\nB.
    Effusion is the answer"): the leading letter then opens a list, it does not answer."""
    for line in text.split("\n")[1:]:
        m = _OPTION_LINE.match(line)
        if m and m.group(1) in options and m.group(1) != letter:
            return True
    return False
