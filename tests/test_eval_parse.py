"""Tables of tricky model replies and the parse each extractor / scorer must produce.

medvl's extractor must be conservative (never guess); the compat scorers must reproduce each toolkit's
documented behaviour (docs/BENCHMARKS "How the toolkits extract and score answers"), quirks included,
except that a random guess becomes ``unparsed`` with ``detail["would_guess"]``."""

from __future__ import annotations

import pytest

from medvl.eval.parse import extract_choice, extract_yes_no, match_open
from medvl.eval.protocols import get_scorer
from medvl.eval.types import EvalItem

OPTS = {"A": "pneumonia", "B": "ovarian cyst", "C": "pleural effusion", "D": "normal"}
OPTS_ZH = {"A": "肺炎", "B": "胸腔积液", "C": "正常", "D": "骨折"}
OPTS_HEP = {"A": "Hepatitis B", "B": "Hepatitis C", "C": "Cirrhosis"}

# (reply, expected letter or None) for medvl's extract_choice on OPTS
CHOICE_TABLE = [
    ("B", "B"),
    ("(B)", "B"),
    ("B.", "B"),
    ("B)", "B"),
    ("b", "B"),
    ("**B**", "B"),
    ("Option B", "B"),
    ("The answer is B.", "B"),
    ("Answer: B", "B"),
    ("**Answer:** C", "C"),
    ("The correct answer is (B) ovarian cyst.", "B"),
    ("Answer: (c)", "C"),
    ("\\boxed{C}", "C"),
    ("<think>A or B?</think><answer>C</answer>", "C"),
    ("ovarian cyst", "B"),
    ("Ovarian Cyst!", "B"),
    ("Pleural-effusion", "C"),
    ("B. ovarian cyst", "B"),
    ("A. ovarian cyst", None),  # letter and text disagree
    ("The image shows pleural effusion.", "C"),
    ("The answer: pleural effusion", "C"),
    ("the answer is normal", "D"),
    ("A is wrong, the answer is C", "C"),
    ("C is wrong; B.", "B"),
    ("A or B", None),
    ("The answer is A or B.", None),
    ("B and C are possible", None),
    ("I cannot determine the answer from this image.", None),
    ("I'm sorry, I can't tell.", None),
    ("A chest X-ray shows an ovarian cyst", "B"),  # article "A" is not option A
    ("A pleural effusion is seen", "C"),
    ("A", "A"),
    ("A is correct", "A"),
    ("I think the answer is C", "C"),  # "I" is a pronoun, not option I
    ("I believe it is C.", "C"),
    ("C\n\nExplanation: A chest X-ray shows fluid.", "C"),
    ("E", None),  # not among the options
    ("Answer: E", None),
    ("E. coli infection", None),
    ("It is not pneumonia; it is an ovarian cyst", "B"),
    ("Not pneumonia.", None),
    ("the answer is a mass", None),  # lower-case article after a marker is no letter
    ("cyst", None),  # part of an option text only
    ("", None),
    ("   ", None),
    ("X-ray shows effusion", None),
    ("Answer:B", "B"),
    ("### Answer\nB", "B"),
    ("Based on the image, the most likely diagnosis is pleural effusion (C).", "C"),
    ("Final answer: C. The answer is not B", "C"),
    ("Not sure", None),
    # review fixes: a letter right after a negation is rejected, not chosen
    ("Not A.", None),
    ("The answer is not A", None),
    ("I would not choose B.", None),
    ("I wouldn't pick A", None),
    ("Excluding A", None),
    ("Never C.", None),
    ("The answer is B, not A", "B"),
    ("It is not A or B, so C", "C"),
    # a lower-case letter after an explicit answer marker
    ("Answer: b", "B"),
    ("the answer is (c)", "C"),
    ("The answer is d.", "D"),
    # review 4: a negation's scope ends at "but" / "rather" / "instead"; "A" + an option's words is the article
    ("Not A but C", "C"),
    ("It's not A but C.", "C"),
    ("The answer is not A but B", "B"),
    ("B rather than A", "B"),
    ("Answer: A pleural effusion.", "C"),
    ("Answer: A.", "A"),
    ("Answer: A", "A"),
]

CHOICE_TABLE_ZH = [
    ("答案：B", "B"),
    ("答案是B。", "B"),
    ("选B", "B"),
    ("正确答案为：D", "D"),
    ("我选择 C 选项", "C"),
    ("选项B", "B"),
    ("我认为是B。", "B"),
    ("胸腔积液", "B"),
    ("我认为是胸腔积液。", "B"),
    ("不是肺炎，是胸腔积液", "B"),
    ("无法确定", None),
    ("A或B", None),
    ("不是A", None),
    ("不选A", None),
    ("排除A，选B", "B"),
    ("选B而非A", "B"),
    ("不是A而是C", "C"),
    ("未见骨折", None),  # the only option mentioned is negated
]

# review 4: Chinese option texts after 不/没/未/无/非 are negated; the longest overlapping option text wins
CHOICE_TABLE_ZH_NEG = [
    ({"A": "正常", "B": "异常"}, "不正常", None),
    ({"A": "正常", "B": "异常"}, "非正常", None),
    ({"A": "正常", "B": "异常"}, "异常", "B"),
    ({"A": "有积液", "B": "无积液"}, "没有积液", "B"),
    ({"A": "有积液", "B": "无积液"}, "无积液", "B"),
    ({"A": "有积液", "B": "无积液"}, "右侧有积液", "A"),
    ({"A": "积液", "B": "无积液", "C": "骨折"}, "无积液", "B"),
    ({"A": "CT", "B": "MRI", "C": "X-ray", "D": "Not visible", "E": "A and B"}, "The answer is A and B", "E"),
    ({"A": "CT", "B": "MRI", "C": "X-ray", "D": "Not visible", "E": "A and B"}, "The answer is A.", "A"),
]

CHOICE_TABLE_HEP = [  # letters inside option texts are not option letters
    ("Hepatitis B", "A"),
    ("The findings suggest hepatitis C infection.", "B"),
    ("C. Cirrhosis", "C"),
]


@pytest.mark.parametrize(("reply", "expected"), CHOICE_TABLE)
def test_extract_choice_en(reply: str, expected: str | None) -> None:
    letter, rule = extract_choice(reply, OPTS, "en")
    assert letter == expected, rule
    assert isinstance(rule, str) and rule


@pytest.mark.parametrize(("reply", "expected"), CHOICE_TABLE_ZH)
def test_extract_choice_zh(reply: str, expected: str | None) -> None:
    assert extract_choice(reply, OPTS_ZH, "zh")[0] == expected


@pytest.mark.parametrize(("reply", "expected"), CHOICE_TABLE_HEP)
def test_extract_choice_letters_inside_options(reply: str, expected: str | None) -> None:
    assert extract_choice(reply, OPTS_HEP, "en")[0] == expected


@pytest.mark.parametrize(("options", "reply", "expected"), CHOICE_TABLE_ZH_NEG)
def test_extract_choice_negated_zh_and_option_letters(options: dict[str, str], reply: str,
                                                      expected: str | None) -> None:
    assert extract_choice(reply, options)[0] == expected


def test_extract_choice_rules_named() -> None:
    assert extract_choice("A or B", OPTS)[1].endswith("ambiguous_letters")
    assert extract_choice("I cannot determine", OPTS)[1] == "refusal"
    assert extract_choice("E", OPTS)[1] == "letter_not_option"
    assert extract_choice("\\boxed{C}", OPTS)[1].startswith("boxed:")
    for reply in ("Not A.", "The answer is not A", "I would not choose B.", "Excluding A"):
        assert extract_choice(reply, OPTS) == (None, "only_rejected_options"), reply
    assert extract_choice("不是A", OPTS_ZH) == (None, "only_rejected_options")


YES_NO_TABLE = [
    ("yes", "yes"),
    ("Yes, there is", "yes"),
    ("No.", "no"),
    ("no, it is not", "no"),
    ("No evidence of fracture.", "no"),
    ("Yes, no fracture is seen", "yes"),  # the leading word decides
    ("nodule", None),  # "nodule" is not "no"
    ("There is a nodule.", None),
    ("There is a fracture", None),  # an affirmative statement without yes stays unparsed
    ("The image does not show a fracture", "no"),
    ("Probably not", "no"),
    ("The answer is no.", "no"),
    ("Answer: yes", "yes"),
    ("True", "yes"),
    ("Yes and no", None),
    ("I cannot determine", None),
    ("\\boxed{No}", "no"),
    ("是", "yes"),
    ("是的", "yes"),
    ("有", "yes"),
    ("包含", "yes"),
    ("不是", "no"),
    ("没有", "no"),
    ("不包含", "no"),
    ("否", "no"),
    ("未见明显异常", "no"),
    ("", None),
    ("Not sure", None),  # a hedge, not a negation
    ("答案：否", "no"),
    # review fixes: refusals / hedges are not "no"; negation counts only when it negates a finding
    ("I don't know.", None),
    ("I do not know", None),
    ("cannot determine", None),
    ("I can't tell from this image.", None),
    ("The image does not allow me to determine this.", None),
    ("No idea", None),
    ("我不知道", None),
    ("无法确定", None),
    ("不确定", None),
    ("无法看到", None),  # 无法 is "cannot", not 无 "none"
    ("None", None),  # "None" answers no yes/no question
    ("Not no", None),  # double negation
    ("not yes", None),
    ("不是没有", None),
    ("There is no fracture", "no"),
    ("Fracture is absent.", "no"),
    ("Not seen.", "no"),
    ("I don't think so", "no"),
    ("无骨折", "no"),
    ("未发现骨折", "no"),
    # review 4: doubt idioms affirm; a negated property of an asserted finding is no "no"
    ("Without a doubt, there is a mass.", "yes"),
    ("No doubt, there is a fracture.", "yes"),
    ("There is no doubt that it is abnormal.", "yes"),
    ("No doubt, there is no fracture.", "no"),
    ("There is a fracture that is not displaced.", None),
    ("The mass does not enhance.", None),
    ("The mass is not seen.", "no"),
    ("The heart is not enlarged.", "no"),
    ("Nothing abnormal is seen.", "no"),
    ("Nothing", "no"),
    ("Present", "yes"),
    ("Not present", "no"),
    ("没错", "yes"),
    ("这是CT图像", None),  # "is it MRI?" answered with CT: a 是 before another answer is no yes
    ("是CT", None),
    ("是，有积液", "yes"),
    ("是。", "yes"),
]


@pytest.mark.parametrize(("reply", "expected"), YES_NO_TABLE)
def test_extract_yes_no(reply: str, expected: str | None) -> None:
    assert extract_yes_no(reply)[0] == expected


def test_extract_yes_no_rules_named() -> None:
    assert extract_yes_no("I don't know.") == (None, "refusal")
    assert extract_yes_no("我不知道") == (None, "refusal")
    assert extract_yes_no("None") == (None, "non_answer")
    assert extract_yes_no("Not no") == (None, "double_negation")
    assert extract_yes_no("Probably not") == ("no", "negation")


def test_match_open_negated_and_ambiguous() -> None:
    for reply, gold, negated, ambiguous in [
        ("Not the coronal plane", "Coronal Plane", True, False),
        ("coronal plane or axial plane", "Coronal Plane", False, True),
        ("not the left lung", "left lung", True, False),
        ("either the left lung or the right lung", "left lung", False, True),
        ("right lung or left lung", "left lung", False, True),
        ("It is in the left lung, not the right lung", "left lung", False, False),
        ("It is in the left lung, not the right lung", "right lung", True, False),
        ("不是左肺", "左肺", True, False),
        ("左肺还是右肺", "左肺", False, True),
        ("The left lung.", "left lung", False, False),
    ]:
        m = match_open(reply, gold)
        assert m["contained"] and (m["negated"], m["ambiguous"]) == (negated, ambiguous), reply


@pytest.mark.parametrize(("reply", "gold", "contained"), [
    ("2-3", "2", False),  # a range is not one of its ends
    ("1-2 lesions", "2", False),
    ("2 to 3", "2", False),
    ("2.5 cm", "2", False),  # a decimal is another number
    ("2 lesions", "2", True),
    ("Two lesions are seen.", "2", True),
    ("X-ray", "xray", True),  # x-ray spellings are one word
    ("Xray", "x-ray", True),
    ("an x ray", "x-ray", True),
])
def test_match_open_numbers_and_spellings(reply: str, gold: str, contained: bool) -> None:
    assert match_open(reply, gold)["contained"] is contained


def test_match_open_negated_after_gold() -> None:
    for reply in ("The left lung is not involved; the right lung is.", "The left lung isn't involved.",
                  "The left lung was not affected"):
        assert match_open(reply, "left lung")["negated"], reply
    m = match_open("The liver is not enlarged, the lesion is in the liver", "liver")
    assert m["contained"] and not m["negated"]  # one occurrence is not negated


def test_match_open() -> None:
    m = match_open("The left lung.", "Left Lung")
    assert m["exact"] and m["contained"] and m["recall"] == 1.0
    m = match_open("two lesions", "2")  # number words become digits
    assert not m["exact"] and m["contained"] and m["precision"] == 0.5
    m = match_open("lung", "left lung")
    assert not m["contained"] and m["recall"] == 0.5 and abs(m["f1"] - 2 / 3) < 1e-9
    m = match_open("the spleen is enlarged", "liver")
    assert m["recall"] == 0.0 and not m["contained"]
    assert match_open("左肺", "左肺")["exact"]


# ------------------------------------------------------------------------------ compat scorers
def _mc(answer: str = "C", options: dict[str, str] | None = None) -> EvalItem:
    return EvalItem("m1", "Which finding?", [], answer, dict(options or OPTS), "mc")


def _closed(answer: str = "no", lang: str = "en") -> EvalItem:
    return EvalItem("c1", "Is there a fracture?", [], answer, {}, "closed", lang=lang)


def _open(answer: str = "Left Lung") -> EvalItem:
    return EvalItem("o1", "Which organ is abnormal?", [], answer, {}, "open")


OPTS_CXR = {"A": "pleural effusion", "B": "pneumothorax", "C": "lung nodule", "D": "normal"}
OPTS_TIE = {"A": "lung mass", "B": "mass lung"}  # "lung" is equally similar to both
# 221 characters: difflib's autojunk drops the reply's most frequent characters (it is the second sequence
# in OmniMedVQA's order), so "pleural effusion" scores 0.0 and "pneumothorax" wins; the reversed order
# would pick A
LONG_CXR_REPLY = ("On this frontal chest radiograph there is blunting of the right costophrenic angle with a "
                  "meniscus sign and homogeneous opacity in the lower zone, which is most consistent with a "
                  "pleural effusion. No pneumothorax is seen.")


def _posed_zh() -> EvalItem:
    return _closed("否", "zh")


# (scorer, item, reply, expected parsed, expected correct, expected unparsed)
COMPAT_TABLE = [
    # VLMEvalKit: uppercase whole-token letters, among the last 4 tokens; option text; "answer is X"; Z
    ("vlmevalkit", _mc(), "C", "C", True, False),
    ("vlmevalkit", _mc(), "The answer is C", "C", True, False),
    ("vlmevalkit", _mc(), "A chest film shows C", None, False, True),  # article A counts as a letter
    ("vlmevalkit", _mc(), "C is the correct answer for this particular chest radiograph", None, False, True),
    ("vlmevalkit", _mc(), "pleural effusion", "C", True, False),
    ("vlmevalkit", _mc(), "The answer is C because A and B are wrong", "C", True, False),
    ("vlmevalkit", _mc(), "Cannot determine the answer", "Z", False, False),
    ("vlmevalkit", _closed("no"), "No, it is not", "no", True, False),
    ("vlmevalkit", _closed("no"), "nodule", None, False, True),
    # lmms-eval SLAKE exact match
    ("lmms-slake", _closed("Yes"), "Yes.", "yes", True, False),
    ("lmms-slake", _closed("Yes"), "yes, it is", "yes it is", False, False),
    ("lmms-slake", _closed("没有", "zh"), "无", "no", True, False),
    ("lmms-slake", _closed("是的", "zh"), "是", "yes", True, False),
    ("lmms-slake", _open("X-Ray"), "xray", "xray", True, False),
    ("lmms-slake", _open(), "Left lung (LL)", "left lung", True, False),
    ("lmms-slake", _open(), "lung", "lung", False, False),
    # MMMU multiple choice and open
    ("mmmu", _mc(), "(C)", "C", True, False),
    ("mmmu", _mc(), "The answer is C.", "C", True, False),
    ("mmmu", _mc(), "A chest X-ray shows C", "C", True, False),  # last mention wins
    ("mmmu", _mc(), "(C) is better than (A)", "A", False, False),  # ... even when it is not the choice
    ("mmmu", _mc(), "I think pleural effusion is most likely here", "C", True, False),
    ("mmmu", _mc(), "pleural effusion", None, False, True),  # <= 5 words: no text match -> would guess
    ("mmmu", _open("3.5"), "so the answer is 3.499", "3.5", True, False),
    ("mmmu", _open("3.5"), "It is 4", "4.0", False, False),
    ("mmmu", _open("['24', '3.429']"), "answer 3.429", "3.43", True, False),
    # LLaVA-Med: closed = yes/no mention + gold substring (quirk: "nodule" mentions "no")
    ("llava-med", _closed("no"), "nodule seen", "nodule seen", True, False),
    ("llava-med", _closed("no"), "Yes", "yes", False, False),
    ("llava-med", _closed("no"), "maybe", None, False, True),
    ("llava-med", _open(), "the left lung", "left lung", True, False),
    ("llava-med", _closed("no"), "No.", "no", True, False),
    ("llava-med", _closed("yes"), "There is a fracture", None, False, True),  # no yes/no mention
    # closed gold that is not yes/no: containment of the gold, no mention needed, negation not recognised
    ("llava-med", _closed("Coronal Plane"), "The coronal plane", "coronal plane", True, False),
    ("llava-med", _closed("Coronal Plane"), "Not the coronal plane", "not coronal plane", True, False),
    ("llava-med", _closed("Coronal Plane"), "axial plane", "axial plane", False, False),
    # HuatuoGPT-Vision: first letter after is/(/*/是/start (article "A " skipped), case-sensitive
    ("huatuo", _mc(), "I think the answer is C", "I", False, False),
    ("huatuo", _mc(), "The answer is C", "C", True, False),
    ("huatuo", _mc(), "是C", "C", True, False),
    ("huatuo", _mc(), "A chest X-ray shows pleural effusion", "C", True, False),
    ("huatuo", _mc(), "pleural effusion or pneumonia", "A", False, False),  # option text occurring last
    ("huatuo", _closed("no"), "B", "B", True, False),  # posed as A = yes / B = no
    ("huatuo", _closed("no"), "No", "B", True, False),
    # HuatuoGPT-Vision match_choice3: one row per letter prefix (start, "is ", 是, 为, "(", "*", quote, "#",
    # CJK punctuation, newline); either case; "A "/"a " skipped anywhere; 选 is no prefix
    ("huatuo", _mc(), "C", "C", True, False),
    ("huatuo", _mc(), "It is C", "C", True, False),
    ("huatuo", _mc(), "答案为C", "C", True, False),
    ("huatuo", _mc(), "选项(C)", "C", True, False),
    ("huatuo", _mc(), "**C**", "C", True, False),
    ("huatuo", _mc(), "'C'", "C", True, False),
    ("huatuo", _mc(), "#C", "C", True, False),
    ("huatuo", _mc(), "答案：C", "C", True, False),
    ("huatuo", _mc(), "Answer\nC", "C", True, False),
    ("huatuo", _mc(), "the answer is c", "c", False, False),  # lower-case letter kept, never equals "C"
    ("huatuo", _mc(), "The answer is A because of pleural effusion", "C", True, False),  # "A " skipped
    ("huatuo", _mc(), "选C", "B", False, False),  # no letter prefix: most similar option text
    ("huatuo", _mc("B", OPTS_TIE), "lung", "B", True, False),  # similarity ties: the last option
    # medvl's Chinese extension under closed_as_mc (是 / 否): negatives first
    ("huatuo", _posed_zh(), "不是", "B", True, False),
    ("huatuo", _posed_zh(), "没有", "B", True, False),
    ("huatuo", _posed_zh(), "有", "A", False, False),
    # MedEvalKit: boxed / marker extraction, yes/no substrings (quirk: "nodule" is "no")
    ("medevalkit", _closed("no"), "nodule", "no", True, False),
    ("medevalkit", _closed("no"), "Yes, no fracture", None, False, True),
    ("medevalkit", _closed("no"), "final answer: yes", "yes", False, False),
    ("medevalkit", _mc(), "Reasoning... \\boxed{C}", "C", True, False),
    ("medevalkit", _mc(), "The answer is pleural effusion", "C", True, False),
    ("medevalkit", _mc(), "effusion", "C", True, False),  # most similar option
    ("medevalkit", _mc(), "zzz", None, False, True),
    # Chinese yes/no (medvl's extension): negative forms before 是 / 有
    ("medevalkit", _posed_zh(), "不是", "no", True, False),
    ("medevalkit", _posed_zh(), "没有", "no", True, False),
    ("medevalkit", _posed_zh(), "是的", "yes", False, False),
    # OmniMedVQA: most similar option text, all-zero ratios -> wrong
    ("omnimedvqa", _mc(), "pleural effusion", "C", True, False),
    ("omnimedvqa", _mc(), "The image shows an ovarian cyst", "B", False, False),
    ("omnimedvqa", _mc(), "", None, False, True),
    ("omnimedvqa", _mc("A", OPTS_CXR), LONG_CXR_REPLY, "B", False, False),  # ratio(option, reply), autojunk
    ("omnimedvqa", _mc("A", OPTS_TIE), "lung", "A", True, False),  # ties: the first option
    # medvl itself
    ("medvl", _mc(), "A chest X-ray shows C", "C", True, False),
    ("medvl", _closed("no"), "nodule", None, False, True),
    ("medvl", _closed("没有", "zh"), "没有", "no", True, False),
    ("medvl", _closed("Coronal Plane"), "This is the coronal plane.", "this is coronal plane", True, False),
    # review fixes: refusals are not "no"; rejected letters are not chosen; negated / hedged golds are wrong
    ("medvl", _closed("no"), "I don't know.", None, False, True),
    ("medvl", _closed("否", "zh"), "我不知道", None, False, True),
    ("medvl", _closed("no"), "None", None, False, True),
    ("medvl", _mc(), "Not C.", None, False, True),
    ("medvl", _mc(), "Answer: c", "C", True, False),
    ("medvl", _closed("Coronal Plane"), "Not the coronal plane", "not coronal plane", False, False),
    ("medvl", _closed("Coronal Plane"), "coronal plane or axial plane", "coronal plane or axial plane", False,
     False),
    ("medvl", _open(), "not the left lung", "not left lung", False, False),
    ("medvl", _open(), "left lung or right lung", "left lung or right lung", False, False),
    ("medvl", _open("左肺"), "左肺或右肺", "左肺或右肺", False, False),
]


@pytest.mark.parametrize(("scorer", "item", "reply", "parsed", "correct", "unparsed"), COMPAT_TABLE)
def test_compat_scorers(scorer: str, item: EvalItem, reply: str, parsed: str | None, correct: bool,
                        unparsed: bool) -> None:
    res = get_scorer(scorer).score(item, reply)
    assert (res.parsed, res.correct, res.unparsed) == (parsed, correct, unparsed), res.detail
    assert res.score == (1.0 if correct else 0.0)
    assert "rule" in res.detail


def test_table_sizes() -> None:
    assert len(CHOICE_TABLE) + len(CHOICE_TABLE_ZH) >= 40
    assert len(COMPAT_TABLE) >= 40
    assert {row[0] for row in COMPAT_TABLE} == {"medvl", "vlmevalkit", "lmms-slake", "mmmu", "llava-med",
                                                "huatuo", "medevalkit", "omnimedvqa"}
