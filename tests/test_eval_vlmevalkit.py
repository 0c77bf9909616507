"""Issue 6, item 18: the ``vlmevalkit`` scorer reproduces VLMEvalKit's ``can_infer`` at the pinned commit.

Each expected value below was worked out by hand from the rule as BENCHMARKS.md spells it out (steps 1-5),
not from our implementation; the comment gives the step that decides. Options OPTS: A pneumonia (9
characters), B ovarian cyst (12), C pleural effusion (16), D normal (6): 43 characters, so the text rule
(step 4) only looks at replies of at most 86 characters."""

from __future__ import annotations

import pytest

from medvl.eval.protocols import get_scorer
from medvl.eval.scorers.vlmevalkit import can_infer
from medvl.eval.types import EvalItem

OPTS = {"A": "pneumonia", "B": "ovarian cyst", "C": "pleural effusion", "D": "normal"}
OPTS5 = {"A": "CT", "B": "MRI", "C": "X-ray", "D": "PET", "E": "ultrasound"}
LONG = "Looking at the radiograph, the blunted costophrenic angle is consistent with pleural effusion"  # 93

# (options, reply, expected can_infer result: a letter, "Z", or None for "no answer")
CAN_INFER_TABLE = [
    # step 2: exactly one choice letter as a whole token, first occurrence among the last 4 tokens
    (OPTS, "B", "B"),
    (OPTS, "**B**", "B"),  # '*' is a separator
    (OPTS, "(C)", "C"),
    (OPTS, "B. ovarian cyst", "B"),
    (OPTS, "A. ovarian cyst", "A"),  # no check of the text against the letter
    (OPTS, "I pick C", "C"),
    (OPTS, "The answer is (C)", "C"),  # tokens: The answer is C
    (OPTS, "The correct answer is **B**.", "B"),  # tokens: The correct answer is B
    (OPTS, "The answer is clearly D", "D"),
    (OPTS, "B and Z", "B"),  # one choice letter; Z only counts when no letter is present
    (OPTS5, "The correct answer is E", "E"),  # E is a choice here: step 2 reads it
    # step 2: a bare Z (no choice letter, a Z token)
    (OPTS, "Z", "Z"),
    (OPTS, "Z.", "Z"),
    (OPTS, "Answer: Z", "Z"),
    (OPTS, "z", None),  # case-sensitive: "z" is no Z; steps 3 and 4 find nothing
    (OPTS, "ZZ", None),  # "ZZ" is not the token "Z"
    # step 1: refusal phrases (case-sensitive) -> Z, even with a letter in the reply
    (OPTS, "Cannot determine the answer. A", "Z"),
    (OPTS, "Sorry, I can't help with images of people yet.", "Z"),
    (OPTS, "cannot determine the answer", None),  # lower case is no refusal phrase
    (OPTS, "Failed to obtain answer via API", None),
    # step 2 fails -> step 3: the "answer is X" regex (case-insensitive, A-D, no word boundary)
    (OPTS, "The answer is b", "B"),
    (OPTS, "the answer is **d**", "D"),
    (OPTS, "The answer is based on the image", "B"),  # "answer is b(ased)": the toolkit's quirk
    (OPTS, "the answer is clearly normal", "C"),  # "answer is c(learly)"
    (OPTS5, "the answer is e", None),  # lower-case e: no token, not in [ABCD], no option text
    (OPTS, "answer is E", None),  # E is no choice, [ABCD] does not match it
    (OPTS, "The answer is: normal", "D"),  # ':' after "is" breaks step 3; step 4 finds "normal"
    # step 2 finds two letters, or one outside the last 4 tokens; step 3 decides or nothing does
    (OPTS, "The answer is C because A and B are wrong", "C"),  # A, B, C present; step 3 reads C
    (OPTS, "A chest film shows C", None),  # A and C; no "answer is"; no option text
    (OPTS, "B is the answer, not C", None),
    (OPTS, "C is the correct answer for this chest film", None),  # C is token 1 of 9
    (OPTS, "Option A is wrong; it is B", None),
    (OPTS, "A. pneumonia B. ovarian cyst", None),  # two letters; two option texts
    # step 4: the text rule
    (OPTS, "pleural effusion", "C"),
    (OPTS, "abnormal", "D"),  # "normal" is a substring of "abnormal"
    (OPTS, "Pleural effusion or pneumonia", None),  # two option texts
    (OPTS, LONG, None),  # 93 characters > 2 x 43
    (OPTS, "", None),
]


@pytest.mark.parametrize(("options", "reply", "expected"), CAN_INFER_TABLE)
def test_can_infer_table(options: dict[str, str], reply: str, expected: str | None) -> None:
    letter, rule = can_infer(reply, dict(options))
    assert letter == expected, rule


def test_api_failure_reply_still_gets_the_text_rule() -> None:
    """At the pin, "Failed to obtain answer via API" makes ``can_infer_option`` return nothing and ``can_infer``
    then applies the text rule (BENCHMARKS.md step 1 says "no answer"; the two differ only when an option
    text occurs in such a reply)."""
    assert can_infer("Failed to obtain answer via API: normal", dict(OPTS)) == ("D", "option_text")
    assert can_infer("Failed to obtain answer via API. A", dict(OPTS)) == (None, "api_failure")


@pytest.mark.parametrize(("reply", "parsed", "correct", "unparsed"), [
    ("Z", "Z", False, False),  # a definite (wrong) answer, not a parse failure
    ("Cannot determine the answer. C", "Z", False, False),
    ("The answer is b", "B", True, False),
    ("The answer is based on the image", "B", True, False),
    ("A chest film shows C", None, False, True),  # no answer: wrong, never a random option
])
def test_scorer_results(reply: str, parsed: str | None, correct: bool, unparsed: bool) -> None:
    item = EvalItem("m", "Which finding?", [], "B", dict(OPTS), "mc")
    res = get_scorer("vlmevalkit").score(item, reply)
    assert (res.parsed, res.correct, res.unparsed) == (parsed, correct, unparsed), res.detail
    assert res.detail.get("would_guess") in (None, False)


def test_options_are_not_modified() -> None:
    opts = {"A": "Pneumonia", "B": "Ovarian Cyst"}
    can_infer("ovarian cyst", opts)
    assert opts == {"A": "Pneumonia", "B": "Ovarian Cyst"}
