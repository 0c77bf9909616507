"""medvl's own answer extraction: deterministic, conservative, never guesses.

- ``extract_choice(response, options, lang)`` -> ``(letter | None, rule)`` for multiple choice;
- ``extract_yes_no(response, lang)`` -> ``("yes" | "no" | None, rule)`` for closed questions;
- ``match_open(response, gold)`` -> exact / whole-word containment / token precision, recall, F1, where
  equivalent forms count (numbers written differently, singular/plural of one word, modality synonyms:
  ``eval/equivalence.py``); echoed option lists are handled in ``eval/option_lists.py``.

``rule`` names the rule that fired (or why nothing did); the scorers put it in ``ScoreResult.detail``.
Word lists live in ``eval/data/answer_vocab.yaml``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from medvl.eval.equivalence import (
    as_number,
    canonical_answer,
    canonical_numbers,
    modality_mentions,
    modality_of,
    same_modality,
    same_words,
    word_spans,
)
from medvl.eval.option_lists import drop_echoed_options, other_option_line
from medvl.eval.scorers._text import (
    NUMBER_WORDS,
    VOCAB,
    contains_words,
    has_cjk,
    is_refusal,
    normalize,
    normalize_answer,
    strip_markdown,
    token_scores,
    word_regex,
)

# ------------------------------------------------------------------------------------------- regexes
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_OPEN = r"[\(\[（【]"
_CLOSE = r"[\)\]）】]"
_BARE = re.compile(
    rf"(?:(?:the\s+)?(?:option|choice|answer)\s*|选项\s*)?{_OPEN}?\s*([A-Za-z])\s*{_CLOSE}?\s*(?:选项)?\s*[.:：。,，!]?",
    re.IGNORECASE,
)
_LEAD = re.compile(rf"{_OPEN}?([A-Z])(?:{_CLOSE}|[.:：。、]|\s+-)\s*(\S.*)?", re.DOTALL)
_TAIL_LETTER = re.compile(  # a capital letter, or any-case letter in brackets or closing the answer
    # ("Answer: b", "the answer is (c)"); "the answer is a mass" is no letter
    rf"\s*[:：]?\s*(?i:the\s+)?(?i:option|choice|选项)?\s*(?:{_OPEN}([A-Za-z]){_CLOSE}|([A-Z])(?![A-Za-z0-9'’\-])"
    rf"|([a-z])(?=\s*(?:$|[.,;!?。，；！？\n])))"
)
_TAIL_SECOND = re.compile(rf"\s*(?:or|and|/|或|和|、)\s*{_OPEN}?[A-Z](?![A-Za-z0-9])")
_LETTER = re.compile(rf"(?<![A-Za-z0-9'’\-/.]){_OPEN}?([A-Z]){_CLOSE}?(?![A-Za-z0-9'’\-/])(?!\.[A-Za-z])")
# after "A"/"I" + a word: these words mean the letter is an option mention, not an article/pronoun
_LETTER_VERBS = frozenset("or and nor is was would seems appears should could might are vs".split())
_NEXT_WORD = re.compile(r"\s+([A-Za-z]{2,})")
_MARKERS = word_regex(VOCAB["answer_markers"]["en"])
_MARKERS_ZH = re.compile("|".join(re.escape(m) for m in sorted(VOCAB["answer_markers"]["zh"], key=len, reverse=True)))
_REJECT = tuple(VOCAB["rejecting_after_letter"])
_ZH_MARKER_NEG = tuple(VOCAB["answer_markers"]["zh_negated_by"])
# a negation right before a letter, at most two words in between ("not A", "I would not choose B", "不是A")
_REJECT_BEFORE = re.compile(
    r"(?:(?<![A-Za-z])(?:" + "|".join(w for w in VOCAB["rejecting_before_letter"] if re.match(r"[a-z]", w))
    + r")|n't|" + "|".join(w for w in VOCAB["rejecting_before_letter"] if not re.match(r"[a-z]", w))
    + r")\b\s*(?:[A-Za-z]+\s+){0,2}?(?:(?:the\s+)?(?:option|choice|answer)\s*)?(?:选项)?\s*[\(\[（【]?\s*$",
    re.IGNORECASE,
)
_SCOPE_BREAK = re.compile("|".join(VOCAB["negation_scope_breakers"]), re.IGNORECASE)
_ZH_NEG_CHARS = tuple(VOCAB["zh_negating_chars"])
_NEG_AFTER = tuple(f"{w} " for w in VOCAB["negating_after_text"])
_NUMBER = re.compile(r"(?<![\d.,])\d+(?:[.,]\d+)?(?![\d])")
_RANGE_BEFORE = re.compile(r"\d\s*(?:-|–|—|~|～|to|至|到)\s*$", re.IGNORECASE)
_RANGE_AFTER = re.compile(r"^\s*(?:-|–|—|~|～|to|至|到)\s*\d", re.IGNORECASE)
_NEGATING = tuple(VOCAB["negating_before_text"])
_NEG_BEFORE = re.compile(  # a negation right before an (normalized) open answer; one preposition may follow
    r"(?:^|\s)(?:" + "|".join(re.escape(w) for w in _NEGATING if not has_cjk(w))
    + r")(?:\s+(?:in|on|at|of|from|to|within|inside|into))?\s*$"
)
_NEG_BEFORE_ZH = re.compile(r"(?:" + "|".join(re.escape(w) for w in _NEGATING if has_cjk(w)) + r")\s*$")
_ALT = VOCAB["alternatives"]
_YN = VOCAB["yes_no"]
_EN_YES = frozenset(_YN["en_yes"])
_EN_NO = frozenset(_YN["en_no"])
_EN_YES_RE = word_regex(_YN["en_yes"])
_EN_NO_RE = word_regex(_YN["en_no"])
_EN_NEG_RE = re.compile(r"n't\b|" + word_regex(_YN["en_negation"]).pattern, re.IGNORECASE)
_EN_HEDGE = frozenset(_YN["en_hedge_verbs"])
_EN_NON_ANSWERS = frozenset(_YN["en_non_answers"])
_EN_HEDGE_CLAUSE = re.compile("|".join(f"(?:{h})" for h in _YN["en_hedges"]))
_EN_HEDGED_YN = re.compile(_YN["en_hedged_yes_no"])
_CLAUSES = re.compile(r"[,;:.!?\n]+")
_NEG_FIRST = [w for w in _YN["en_negation"] if w not in ("neither", "nor")]  # "neither X nor Y" is one negation
# a negation followed by a yes/no word or another negation, at most one word between and no punctuation:
# "not no", "isn't absent" (double negation), "not yes", "not correct" (negated yes-word)
_EN_NEG_YN = re.compile(
    r"(?:n't\b|" + word_regex(_NEG_FIRST).pattern + r")(?:\s+[A-Za-z]+)?\s+("
    + word_regex(_NEG_FIRST + _YN["en_yes"] + _YN["en_no"]).pattern + ")", re.IGNORECASE)
_ZH_NEG_RE = re.compile("|".join(_YN["zh_negation"]))
_ZH_DOUBLE_NEG = re.compile(f"(?:{_ZH_NEG_RE.pattern})(?:{_ZH_NEG_RE.pattern})")
_ZH_NO = tuple(sorted(_YN["zh_no"], key=len, reverse=True))
_ZH_YES = tuple(sorted(_YN["zh_yes"], key=len, reverse=True))
_EN_YES_LEADING = frozenset(_YN["en_yes_leading"])
_EN_IDIOMS = re.compile(r"\b(?:" + "|".join(_YN["en_affirming_idioms"]) + r")\b[\s,:;.!]*", re.IGNORECASE)
_EN_ASSERTING = re.compile(_YN["en_asserting_start"])
_EN_FINDINGS = frozenset(_YN["en_finding_nouns"])
_EN_EXISTENCE = frozenset(_YN["en_existence_words"])
_BOTH_YES_NO = re.compile(r"\s*(?:yes\W*(?:and|or|/)\W*no|no\W*(?:and|or|/)\W*yes|是或否|是还是否)\b", re.IGNORECASE)


def narrow(response: str) -> tuple[str, str]:
    """The part of a reply that holds the answer: the last ``\\boxed{..}`` or ``<answer>..</answer>``
    content if any, else the whole reply; markdown marks removed. Returns (text, "boxed"/"tag"/"")."""
    boxed = _BOXED.findall(response)
    if boxed:
        return strip_markdown(boxed[-1]).strip(), "boxed"
    tags = _ANSWER_TAG.findall(response)
    if tags:
        return strip_markdown(tags[-1]).strip(), "tag"
    return strip_markdown(response).strip(), ""


def _exact_option(text: str, options: dict[str, str]) -> str | None:
    norm = normalize_answer(text)
    if not norm:
        return None
    hits = [k for k, v in options.items() if normalize_answer(v) == norm]
    return hits[0] if len(hits) == 1 else None


def _negated_at(norm: str, start: int) -> bool:
    """True when the text before ``start`` (normalized) ends with a negation ("not", "rather than", "不是")."""
    before = norm[max(0, start - 30):start]
    return bool(_NEG_BEFORE.search(before.rstrip()) or _NEG_BEFORE_ZH.search(before))


def _contained_options(text: str, options: dict[str, str]) -> tuple[list[str], list[str]]:
    """Options whose text occurs in ``text`` as whole words: (affirmed, negated), most specific only."""
    norm = normalize_answer(text)
    found: dict[str, str] = {}
    for k, v in options.items():
        nv = normalize_answer(v)
        if nv and (contains_words(norm, nv) or (has_cjk(nv) and _zh_canonical(nv) in _zh_canonical(norm))):
            found[k] = nv
    # an option whose text is part of another found option's text ("cyst" vs "ovarian cyst") is dropped
    specific = [k for k, nv in found.items()
                if not any(o != k and len(no) > len(nv) and contains_words(no, nv) for o, no in found.items())]
    affirmed, negated = [], []
    zh_spans = _zh_option_spans(norm, {k: found[k] for k in specific if has_cjk(found[k])})
    for k in specific:
        nv = found[k]
        if has_cjk(nv):
            starts = zh_spans.get(k, [])
            if not starts:  # every occurrence lies inside a longer option's occurrence
                continue
            text_zh = _zh_canonical(norm)
            is_neg = all(_negated_at(text_zh, s) or text_zh[:s].endswith(_ZH_NEG_CHARS) for s in starts)
        else:
            pad, needle = f" {norm} ", f" {nv} "
            starts = [m.start() for m in re.finditer(re.escape(needle), pad)]
            is_neg = bool(starts) and all(_negated_at(pad, s) for s in starts)
        (negated if is_neg else affirmed).append(k)
    return affirmed, negated


def _zh_canonical(text: str) -> str:
    """Chinese text with 没有 written 无 (没有积液 = 无积液) for option matching."""
    return text.replace("没有", "无")


def _zh_option_spans(norm: str, options: dict[str, str]) -> dict[str, list[int]]:
    """Start offsets (in ``_zh_canonical(norm)``) of each Chinese option text's occurrences, dropping an
    occurrence that overlaps an occurrence of a longer option text (无积液 beats 有积液 / 积液)."""
    text = _zh_canonical(norm)
    spans = {k: [(m.start(), m.start() + len(_zh_canonical(v)))
                 for m in re.finditer(re.escape(_zh_canonical(v)), text)] for k, v in options.items()}
    out: dict[str, list[int]] = {}
    for k, own in spans.items():
        keep = [a for a, b in own
                if not any(len(options[o]) > len(options[k]) and a2 < b and a < b2
                           for o, other in spans.items() if o != k for a2, b2 in other)]
        if keep:
            out[k] = keep
    return out


def _letter_mentions(text: str, options: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """Standalone capital letters in ``text``: (option letters affirmed, letters rejected, non-option letters).
    Option texts are blanked first; "A"/"I" followed by a word are read as article / pronoun."""
    blanked = text
    for v in sorted(options.values(), key=len, reverse=True):
        if len(v.strip()) > 1:
            blanked = re.sub(re.escape(v.strip()), " optiontext ", blanked, flags=re.IGNORECASE)
    affirmed: list[str] = []
    rejected: list[str] = []
    invalid: list[str] = []
    for m in _LETTER.finditer(blanked):
        letter = m.group(1)
        after = blanked[m.end():]
        if letter in ("A", "I") and m.group(0) == letter:
            nxt = _NEXT_WORD.match(after)
            if nxt and nxt.group(1).lower() not in _LETTER_VERBS:
                continue
        if letter not in options:
            invalid.append(letter)
        elif (any(after.lstrip().lower().startswith(r) for r in _REJECT)
              or _REJECT_BEFORE.search(_in_scope(blanked[max(0, m.start() - 40):m.start()]))):
            rejected.append(letter)
        elif letter not in affirmed:
            affirmed.append(letter)
    return [x for x in affirmed if x not in rejected], rejected, invalid


def _in_scope(before: str) -> str:
    """The part of ``before`` a negation in it can still reach: after the last "but" / "instead" /
    "rather" / 而是 / 但 ("not A but C": the negation does not reach C)."""
    ends = [m.end() for m in _SCOPE_BREAK.finditer(before)]
    return before[ends[-1]:] if ends else before


def _article_option(tail_rest: str, options: dict[str, str]) -> str | None:
    """The option whose text the words after an "A " start with ("Answer: A pleural effusion." -> the
    option "Pleural effusion": "A" is the article), when exactly one does; else None."""
    if not re.match(r"\s+[a-z]", tail_rest):
        return None
    rest = f" {normalize_answer(tail_rest)} "
    hits = [k for k, v in options.items()
            if normalize_answer(v) and rest.startswith(f" {normalize_answer(v)} ")]
    return hits[0] if len(hits) == 1 else None


def _from_marker_tail(tail: str, options: dict[str, str]) -> tuple[str | None, str] | None:
    first = re.split(r"(?<=[.!?。！？])\s|\n", tail.strip(), maxsplit=1)[0]
    hit = _exact_option(first, options)  # "The answer is A and B" with an option "A and B"
    if hit:
        return hit, "answer_marker_option_text"
    m = _TAIL_LETTER.match(tail)
    if m:
        letter = (m.group(1) or m.group(2) or m.group(3)).upper()
        if m.group(2) == "A":
            article = _article_option(tail[m.end():], options)
            if article:
                return article, "answer_marker_option_text"
        if _TAIL_SECOND.match(tail[m.end():]):
            return None, "ambiguous_letters"
        if letter in options:
            return letter, "answer_marker_letter"
        return None, "letter_not_option"
    affirmed, _ = _contained_options(first, options)
    if len(affirmed) == 1:
        return affirmed[0], "answer_marker_option_text"
    return None


def _marker_positions(text: str) -> list[int]:
    """End offsets of the answer markers in ``text``, last first; a Chinese marker right after a negation
    (不选 "don't choose", 没选) is no marker."""
    ends = [m.end() for m in _MARKERS.finditer(text)]
    ends += [m.end() for m in _MARKERS_ZH.finditer(text) if not text[:m.start()].endswith(_ZH_MARKER_NEG)]
    return sorted(ends, reverse=True)


def extract_choice(response: str, options: dict[str, str], lang: str = "en") -> tuple[str | None, str]:
    """The option letter a reply chooses, or None, plus the name of the rule that decided.

    A repeated option list ("A. Pneumonia\nB. Effusion", the prompt echoed) is removed first; a reply that is
    nothing else is unparsed (rule ``echoed_options``). Then, in order: bare letter ("B", "(B)", "**B**",
    "Option B", "选项B"); the reply equals one option's text
    (case/punctuation-insensitive); a leading "B." / "(B)" / "B)" / "B:" (not "A chest ..."); the last
    answer marker ("the answer is C", "Answer: C", "答案：C", "选C") followed by a letter or an option
    text ("A or B" there is ambiguous); a refusal -> None; exactly one standalone option letter (articles,
    letters said to be wrong, and letters inside option texts ignored; several -> None); exactly one
    option text contained as whole words (negated mentions like "not pneumonia" ignored). A letter that
    is not among the options is never accepted. ``lang`` is accepted for symmetry; both languages'
    forms are always recognised."""
    del lang
    if not response or not response.strip():
        return None, "empty"
    text, where = narrow(response)
    prefix = f"{where}:" if where else ""
    text, echoed = drop_echoed_options(text, options)
    text = text.strip()
    if not text:
        return None, prefix + ("echoed_options" if echoed else "empty")
    bare = _BARE.fullmatch(text)
    if bare:
        letter = bare.group(1).upper()
        if letter in options:
            return letter, prefix + "bare_letter"
        if _exact_option(text, options) is None:
            return None, prefix + "letter_not_option"
    lead = _LEAD.match(text)
    if lead and lead.group(1) in options and not other_option_line(text, lead.group(1), options):
        letter, rest = lead.group(1), (lead.group(2) or "")
        other = _exact_option(re.split(r"[\n]", rest, maxsplit=1)[0], options) if rest else None
        if other and other != letter:
            return None, prefix + "letter_text_conflict"
        return letter, prefix + "leading_letter"
    hit = _exact_option(text, options)
    if hit:
        return hit, prefix + "option_text_exact"
    for end in _marker_positions(text):
        got = _from_marker_tail(text[end:], options)
        if got is not None:
            return got[0], prefix + got[1]
    if is_refusal(text):
        return None, prefix + "refusal"
    affirmed, rejected, invalid = _letter_mentions(text, options)
    if len(affirmed) == 1:
        return affirmed[0], prefix + "single_letter"
    if len(affirmed) > 1:
        return None, prefix + "ambiguous_letters"
    texts, negated = _contained_options(text, options)
    if len(texts) == 1:
        return texts[0], prefix + "option_text_contained"
    if len(texts) > 1:
        return None, prefix + "ambiguous_option_text"
    if rejected or negated:
        return None, prefix + "only_rejected_options"
    if invalid:
        return None, prefix + "letter_not_option"
    return None, prefix + "no_match"


def _zh_shi_alone(text: str) -> bool:
    """True when the 是 at the start of ``text`` stands alone or before punctuation / 的 (是。 是的 是，有)."""
    return re.match(r"是\s*(?:$|的|[^\w\s])", text) is not None


def _leading_yes_no(text: str) -> str | None:
    low = text.strip().lower()
    if has_cjk(low[:4]):
        compact = re.sub(r"\s+", "", normalize(low))
        for form in _ZH_NO:  # a one-character form must negate a finding: 无法 / 不确定 are no "no"
            if compact.startswith(form) and (len(form) > 1 or _ZH_NEG_RE.match(compact)):
                return "no"
        for form in _ZH_YES:
            if compact.startswith(form) and not compact.startswith("是否"):
                if form == "是" and not _zh_shi_alone(low.lstrip(" *")):
                    continue  # 是CT answers with CT, not with yes
                return "yes"
        return None
    first = normalize(low).split(" ", 1)[0] if normalize(low) else ""
    if first in _EN_YES or (first in _EN_YES_LEADING and not _negates_finding(low)):
        return "yes"
    if first in _EN_NO:
        return "no"
    return None


def _negates_finding(text: str) -> bool:
    """True when an English negation word negates a finding ("does not show", "no evidence of", "absent"),
    not an ability to answer: a negation followed within four words by a hedge verb ("I can't tell",
    "does not allow me to determine") does not count."""
    for m in _EN_NEG_RE.finditer(text):
        following = re.findall(r"[a-z]+", text[m.end():m.end() + 60].lower())[:4]
        if not any(w in _EN_HEDGE for w in following):
            return True
    return False


def _negates_finding_property(flat: str) -> bool:
    """True for a (normalized) reply whose definite subject is a finding ("the mass", "the small nodule")
    and whose next words do not speak of its existence ("does not enhance", not "is not seen"): the
    subject's existence is presupposed, so a negation there is no "no"."""
    words = flat.split()
    if len(words) < 3 or words[0] not in ("the", "this", "that"):
        return False
    for i in (1, 2):  # "the mass" or "the <adjective> mass"
        if i < len(words) - 1 and words[i] in _EN_FINDINGS:
            return not any(w in _EN_EXISTENCE for w in words[i + 1:i + 5])
    return False


def extract_yes_no(response: str, lang: str = "en") -> tuple[str | None, str]:
    """"yes" / "no" for a closed question's reply, or None, plus the rule that decided.

    Order: "yes and no" -> None; the first word after the last answer marker ("The answer is no"); a
    refusal or hedge ("I don't know", "not sure", "cannot determine", 我不知道, 无法确定, 不确定) -> None;
    a reply that is only "None" / "unknown" / "maybe" -> None; the first word of the (boxed/tagged) reply
    ("No, it is not" -> no; Chinese 不是/没有/否/无... -> no before 是/有/包含/... -> yes); a clause that
    hedges ("It's unclear, possibly yes", "Maybe not"; ``en_hedges``) -> None; a double
    negation ("not no", "不是没有") -> None; whole-word yes-words vs no-words anywhere (both -> None;
    "nodule" is not "no"); a negation of a finding ("does not show", "absent", "没有", "未见") -> no, but
    not a negated ability ("can't tell", 无法) and not 是否 ("whether"). A plain affirmative statement
    without "yes" stays unparsed."""
    del lang
    if not response or not response.strip():
        return None, "empty"
    text, where = narrow(response)
    prefix = f"{where}:" if where else ""
    if _BOTH_YES_NO.match(text):
        return None, prefix + "ambiguous_yes_no"
    for end in _marker_positions(text)[:1]:
        lead = _leading_yes_no(text[end:].lstrip(" :：*"))
        if lead:
            return lead, prefix + "answer_marker"
    idiom = _EN_IDIOMS.search(text)
    if idiom:  # "Without a doubt, there is a mass": an affirmation unless the rest says no
        rest = (text[:idiom.start()] + " " + text[idiom.end():]).strip()
        said = extract_yes_no(rest)[0] if rest else None
        return ("no" if said == "no" else "yes"), prefix + "affirming_idiom"
    if is_refusal(text):
        return None, prefix + "refusal"
    if normalize(text) in _EN_NON_ANSWERS:
        return None, prefix + "non_answer"
    if _ZH_DOUBLE_NEG.search(re.sub(r"\s+", "", text)):  # 不是没有: before 不是 decides
        return None, prefix + "double_negation"
    lead = _leading_yes_no(text)
    if lead:
        return lead, prefix + "leading"
    clauses = [normalize(c) for c in _CLAUSES.split(text) if c.strip()]
    if any(_EN_HEDGE_CLAUSE.match(c) or _EN_HEDGED_YN.search(c) for c in clauses):
        return None, prefix + "hedge"
    neg_yn = _EN_NEG_YN.search(text)
    if neg_yn:
        second = neg_yn.group(1).lower()
        return None, prefix + ("negated_yes_word" if second in _EN_YES else "double_negation")
    has_yes, has_no = bool(_EN_YES_RE.search(text)), bool(_EN_NO_RE.search(text))
    if has_yes and has_no:
        return None, prefix + "ambiguous_yes_no"
    if has_yes or has_no:
        return ("yes" if has_yes else "no"), prefix + "yes_no_word"
    flat = normalize(text)
    if _EN_ASSERTING.match(flat):  # "There is a fracture that is not displaced": no "no"
        return None, prefix + "asserted_finding"
    if _negates_finding_property(flat):
        return None, prefix + "finding_property"
    if _negates_finding(text):
        return "no", prefix + "negation"
    if has_cjk(text):
        if _ZH_NEG_RE.search(text.replace("是否", "")):
            return "no", prefix + "zh_negation"
        if re.search(r"是\s*(?:$|的|[^\w\s])", text.replace("是否", "")) or "有" in text:
            return "yes", prefix + "zh_affirmative"
    return None, prefix + "no_yes_no"


def _gold_occurrences(pred: str, gold: str, raw: str) -> list[tuple[str, str, str]]:
    """(text before, text after, the words found) around every occurrence of ``gold`` in ``pred`` (both
    canonical): its words (one of them possibly in the other grammatical number, see
    ``equivalence.word_spans``) and, when the gold names an imaging modality, every mention of that modality
    (``equivalence.modality_mentions``; ``raw`` is the reply as written)."""
    spans = set(word_spans(pred, gold))
    key = modality_of(gold)
    if key is not None:
        spans.update(modality_mentions(pred, raw, key))
    return [(f" {pred[:a]}", f"{pred[b:].lstrip()} ", pred[a:b]) for a, b in sorted(spans)]


def _numbers(text: str) -> list[float]:
    """The single numbers a reply states (number words as digits, "1,000" as 1000, "1/2" as 0.5), leaving
    out both ends of a range ("2-3", "1 to 2", "2～3"); a decimal is one number ("2.5" is not 2)."""
    flat = canonical_numbers(unicodedata.normalize("NFKC", text).lower())
    flat = re.sub(r"\b[a-z]+\b", lambda w: NUMBER_WORDS.get(w.group(0), w.group(0)), flat)
    out = []
    for m in _NUMBER.finditer(flat):
        if _RANGE_BEFORE.search(flat[:m.start()]) or _RANGE_AFTER.match(flat[m.end():]):
            continue
        out.append(float(m.group(0).replace(",", ".")))
    return out


def _is_alternative(before: str, after: str) -> bool:
    """True when a gold occurrence is one of several alternatives ("X or Y", "either X", "Y or X", "X或Y")."""
    words_after, words_before = after.split(), before.split()
    if words_after and words_after[0] in _ALT["en_after"]:
        return True
    if words_before and words_before[-1] in _ALT["en_before"]:
        return True
    a, b = after.lstrip(), before.rstrip()
    return any(a.startswith(w) or b.endswith(w) for w in _ALT["zh"])


def match_open(response: str, gold: str) -> dict[str, Any]:
    """Compare a free-text reply with the gold answer after ``equivalence.canonical_answer`` (lower case,
    punctuation, articles, number words, numbers written one way: "1,000" = "1000", "6.40" = "6.4",
    "1/2" = "0.5"): exact match, gold contained as whole words, token precision/recall/F1. Equal also
    counts a gold that differs in the grammatical number of one word ("kidneys" for "kidney") or names the
    same imaging modality ("MR" for "MRI", "computed tomography" for "CT"; see ``eval/equivalence.py``).

    ``negated``: every occurrence of the gold is negated ("not the left lung", "rather than X", "不是X");
    ``ambiguous``: an occurrence is joined to other alternatives ("left lung or right lung", "either X
    or Y", "X或Y", "X还是Y"). Scorers count containment only when neither holds. ``equivalent``: the words
    that matched when they are not the gold's own (precision/recall/F1 are then measured against them)."""
    text, _ = narrow(response or "")
    pred, ref = canonical_answer(text), canonical_answer(gold)
    exact = bool(pred) and pred == ref
    same = exact or (bool(pred) and bool(ref) and (same_words(pred.split(), ref.split()) or same_modality(pred, ref)))
    occ = _gold_occurrences(pred, ref, text) if ref and not same else []
    negated = bool(occ) and all(_negated_at(b, len(b)) or a.startswith(_NEG_AFTER) for b, a, _ in occ)
    ambiguous = any(_is_alternative(b, a) for b, a, _ in occ)
    contained = same or bool(occ)
    number = as_number(ref)
    if contained and not same and number is not None:  # "2-3", "2.5 cm", "2 to 3" are not "2"
        contained = number in _numbers(text)
    matched = pred if same else next((w for *_, w in occ if w != ref), ref)
    scores = token_scores(pred, matched if contained else ref)
    out = {"parsed": pred or None, "exact": same, "contained": contained,
           "negated": negated, "ambiguous": ambiguous, **scores}
    if contained and matched != ref:
        out["equivalent"] = matched
    return out
