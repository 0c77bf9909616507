"""Issue 6, item 17: the medvl scorer reads replies that echo the option list, leaves hedges unparsed, and
counts equivalent short answers as matches (numbers written differently, singular/plural of one word,
modality synonyms from the taxonomy) while refusals, negations and lists of alternatives stay wrong.
Expected values are written by hand from the issue's rules."""

from __future__ import annotations

import pytest

from medvl.eval.parse import extract_choice, extract_yes_no, match_open
from medvl.eval.protocols import get_scorer
from medvl.eval.types import EvalItem

OPTS = {"A": "Pneumonia", "B": "Effusion", "C": "Pneumothorax", "D": "Normal"}

# (reply, letter the medvl extractor must read, or None)
ECHO_TABLE = [
    ("A. Pneumonia\nB. Effusion\nAnswer: B", "B"),  # the example: the echoed list is not a choice
    ("A. Pneumonia\nB. Effusion\nC. Pneumothorax\nD. Normal\nAnswer: B", "B"),
    ("A. Pneumonia\nB. Effusion", None),  # an echoed list with no answer
    ("A. Pneumonia\nB. Effusion\nC. Pneumothorax\nD. Normal", None),
    ("(A) Pneumonia\n(B) Effusion\n(C) Pneumothorax\n\nThe answer is (C).", "C"),
    ("Options:\n- A. Pneumonia\n- B. Effusion\nI choose A", "A"),
    ("**A.** Pneumonia\n**B.** Effusion\n\n**Answer:** B", "B"),
    ("A. Pneumonia\nB. Effusion\n\nB", "B"),
    ("A. Pneumonia - unlikely\nB. Effusion - likely", None),  # commentary on each option: no choice
    ("A. Pneumonia\nB. Effusion is the answer", None),  # a list followed by another option line: no guess
    ("A. Pneumonia\nB. Effusion\nThe image shows a pneumothorax.", "C"),
    ("A. Pneumonia\nB. Effusion\nNot A.", None),  # the only letter after the list is rejected
    # a single "L. text" line is still the answer (no list); the other rules are unchanged
    ("B. Effusion", "B"),
    ("B. Effusion\n\nExplanation: fluid layers in the costophrenic angle.", "B"),
    ("A. Effusion", None),  # letter and text disagree
]


@pytest.mark.parametrize(("reply", "expected"), ECHO_TABLE)
def test_echoed_option_lists_are_not_choices(reply: str, expected: str | None) -> None:
    letter, rule = extract_choice(reply, OPTS)
    assert letter == expected, rule


def test_echo_only_reply_is_named_and_unparsed_by_the_scorer() -> None:
    assert extract_choice("A. Pneumonia\nB. Effusion", OPTS) == (None, "echoed_options")
    item = EvalItem("q", "Which finding?", [], "A", dict(OPTS), "mc")
    res = get_scorer("medvl").score(item, "A. Pneumonia\nB. Effusion")
    assert (res.parsed, res.correct, res.unparsed) == (None, False, True)


HEDGE_TABLE = [
    ("It's unclear, possibly yes", None),  # the example
    ("Possibly yes.", None),
    ("Maybe no", None),
    ("Perhaps not.", None),
    ("The answer is possibly yes", None),
    ("It is uncertain whether there is a fracture", None),
    ("Inconclusive; could be yes.", None),
    # commitments stay read: a leading yes/no, "probably", plain statements
    ("Yes, possibly with a small effusion", "yes"),
    ("Probably not", "no"),
    ("No, the margins are unclear", "no"),
    ("Yes", "yes"),
]


@pytest.mark.parametrize(("reply", "expected"), HEDGE_TABLE)
def test_hedges_stay_unparsed(reply: str, expected: str | None) -> None:
    assert extract_yes_no(reply)[0] == expected


def _open(gold: str) -> EvalItem:
    return EvalItem("o", "?", [], gold, {}, "open")


# (reply, gold, correct under the medvl scorer)
OPEN_TABLE = [
    # numbers written differently
    ("1,000", "1000", True),
    ("1000", "1,000", True),
    ("about 1,000 cells", "1000", True),
    ("6.40", "6.4", True),
    ("6.4 cm", "6.40", True),
    ("6.0", "6", True),
    ("1/2", "0.5", True),
    ("0.5", "1/2", True),
    ("3/4 of the lung", "0.75", True),
    ("1/3", "0.33", False),  # no finite decimal: not rounded into a match
    ("120/80", "1.5", False),  # a ratio, not a fraction
    ("1,000-2,000", "1000", False),  # a range is not one of its ends
    ("2.5", "2", False),
    ("6.41", "6.4", False),
    # singular / plural of one word
    ("kidneys", "kidney", True),
    ("kidney", "kidneys", True),
    ("Both kidneys are enlarged.", "kidney", True),
    ("vertebrae", "vertebra", True),
    ("metastases", "metastasis", True),
    ("masses", "mass", True),
    ("renal cysts", "renal cyst", True),
    ("2 nodules", "1 nodule", False),  # the number word is not a plural
    ("kidneys", "liver", False),
    # modality synonyms from the taxonomy
    ("MR", "MRI", True),
    ("MRI", "MR", True),
    ("magnetic resonance imaging", "MRI", True),
    ("computed tomography", "CT", True),
    ("CT", "computed tomography", True),
    ("This is an MR image.", "MRI", True),
    ("It was taken with computed tomography.", "CT", True),
    ("radiograph", "X-ray", True),
    ("US", "ultrasound", True),
    ("磁共振", "核磁共振", True),
    ("MRI", "T2", False),  # a sequence is more specific than the modality
    ("MRI", "FLAIR", False),
    ("X-ray", "mammography", False),
    ("It shows us the liver.", "ultrasound", False),  # "us" the pronoun is no acronym
    ("CT", "MRI", False),
    # refusals, negations and lists of alternatives stay wrong
    ("MR or CT", "MRI", False),
    ("either MR or CT", "MRI", False),
    ("1,000 or 2,000", "1000", False),
    ("kidneys or ureters", "kidney", False),
    ("Not an MR image; it is CT.", "MRI", False),
    ("I cannot determine whether this is an MRI.", "MRI", False),
    ("I'm sorry, I can't tell how many (maybe 1,000).", "1000", False),
]


@pytest.mark.parametrize(("reply", "gold", "correct"), OPEN_TABLE)
def test_open_answers_equivalent_forms(reply: str, gold: str, correct: bool) -> None:
    res = get_scorer("medvl").score(_open(gold), reply)
    assert res.correct is correct, res.detail
    if correct:  # an equivalent answer earns the full score, not the token recall of the gold's spelling
        assert res.score == 1.0, res.detail


def test_closed_non_yes_no_gold_uses_the_same_equivalences() -> None:
    item = EvalItem("c", "Which modality?", [], "MRI", {}, "closed")
    assert get_scorer("medvl").score(item, "MR").correct is True
    assert get_scorer("medvl").score(item, "MR or CT").correct is False


def test_match_open_reports_the_equivalent_words() -> None:
    m = match_open("This is an MR image.", "MRI")
    assert m["contained"] and not m["exact"] and m["equivalent"] == "mr image" and m["recall"] == 1.0
    m = match_open("kidneys", "kidney")
    assert m["exact"] and m["equivalent"] == "kidneys"
    assert "equivalent" not in match_open("the left lung", "left lung")
