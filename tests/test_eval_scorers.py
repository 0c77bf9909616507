"""Protocols (exact prompt strings, closed-as-mc posing) and the scorer interface (registry, hidden gold,
the no-guess rule, fallbacks for unsupported answer types)."""

from __future__ import annotations

import dataclasses

import pytest

from medvl.eval.protocols import PROTOCOLS, get_protocol, get_scorer, pose_closed_as_mc, score_response
from medvl.eval.types import SCORERS, EvalItem, ScoreResult

OPTS = {"A": "pneumonia", "B": "ovarian cyst", "C": "pleural effusion"}
ALL_SCORERS = ["huatuo", "llava-med", "lmms-slake", "medevalkit", "medvl", "mmmu", "omnimedvqa", "vlmevalkit"]


def mc_item(**kw) -> EvalItem:
    base = dict(id="q1", question="What is shown?", images=[], answer="B", options=dict(OPTS), answer_type="mc")
    base.update(kw)
    return EvalItem(**base)


def test_protocol_names_and_fields() -> None:
    assert sorted(PROTOCOLS) == ["closed_as_mc", "mc_letter", "mc_vlmevalkit", "open_llava_med", "short_answer"]
    for p in PROTOCOLS.values():
        assert p.default_scorer in SCORERS and p.max_new_tokens > 0
    assert get_protocol("short_answer").max_new_tokens == 32
    with pytest.raises(KeyError, match="allowed: closed_as_mc, mc_letter"):
        get_protocol("nope")


def test_prompt_vlmevalkit_exact() -> None:
    p = get_protocol("mc_vlmevalkit")
    assert p.prompt(mc_item()) == (
        "Question: What is shown?\nOptions:\nA. pneumonia\nB. ovarian cyst\nC. pleural effusion\n"
        "Please select the correct answer from the options above. \n")
    hinted = p.prompt(mc_item(meta={"hint": "Axial CT of the abdomen."}))
    assert hinted.startswith("Hint: Axial CT of the abdomen.\nQuestion: What is shown?\n")
    assert p.prompt(mc_item(meta={"hint": "nan"})).startswith("Question:")


def test_prompt_mc_letter_exact_and_medxpertqa() -> None:
    p = get_protocol("mc_letter")
    assert p.prompt(mc_item()) == ("What is shown?\nA. pneumonia\nB. ovarian cyst\nC. pleural effusion\n"
                                   "Answer with the option's letter from the given choices directly.")
    q = "Which diagnosis? Answer Choices: (A) pneumonia (B) ovarian cyst (C) pleural effusion"
    text = p.prompt(mc_item(question=q, meta={"options_in_question": True}))
    assert text == q + "\nAnswer with the option's letter from the given choices directly."
    assert text.count("ovarian cyst") == 1


def test_prompt_short_answer_en_zh_and_open() -> None:
    p = get_protocol("short_answer")
    en = EvalItem("o", "Which organ?", [], "liver", {}, "open")
    zh = EvalItem("z", "这是什么器官？", [], "肝脏", {}, "open", lang="zh")
    assert p.prompt(en) == "Which organ?\nAnswer the question using a single word or phrase."
    assert p.prompt(zh) == "这是什么器官？\n请用一个词或短语回答问题。"
    assert get_protocol("open_llava_med").prompt(en) == "Which organ?"
    # an MMMU open question under the mc protocols gets the short-answer prompt
    assert get_protocol("mc_letter").prompt(en) == p.prompt(en)


@pytest.mark.parametrize(("gold", "lang", "letter", "options"), [
    ("yes", "en", "A", {"A": "yes", "B": "no"}),
    ("No", "en", "B", {"A": "yes", "B": "no"}),
    ("是的", "zh", "A", {"A": "是", "B": "否"}),
    ("没有", "zh", "B", {"A": "是", "B": "否"}),
    ("不包含", "zh", "B", {"A": "是", "B": "否"}),
])
def test_closed_as_mc_gold_letter(gold: str, lang: str, letter: str, options: dict[str, str]) -> None:
    item = EvalItem("c", "Is there a fracture?", [], gold, {}, "closed", lang=lang)
    posed = get_protocol("closed_as_mc").pose(item)
    assert (posed.answer, posed.options, posed.answer_type) == (letter, options, "mc")
    assert posed.meta["closed_gold"] == gold and item.answer_type == "closed"  # input untouched
    prompt = get_protocol("closed_as_mc").prompt(item)
    assert prompt.endswith("Answer with the option's letter from the given choices directly.")
    assert f"A. {options['A']}\nB. {options['B']}\n" in prompt


def test_closed_as_mc_leaves_other_items() -> None:
    plane = EvalItem("c", "Which plane?", [], "Coronal Plane", {}, "closed")
    assert pose_closed_as_mc(plane) is plane
    assert get_protocol("closed_as_mc").prompt(plane).endswith("single word or phrase.")
    hidden = dataclasses.replace(plane, answer=None)
    assert pose_closed_as_mc(hidden).answer is None and pose_closed_as_mc(hidden).answer_type == "mc"


def test_score_response_scores_the_posed_item() -> None:
    item = EvalItem("c", "Is there a fracture?", [], "no", {}, "closed")
    assert score_response(item, "B", "closed_as_mc").correct is True
    assert score_response(item, "A", "closed_as_mc").correct is False
    assert score_response(item, "No.", "short_answer").correct is True


@pytest.mark.parametrize(("gold", "lang", "reply", "correct", "parsed"), [
    ("不是", "zh", "不是", True, "B"),  # 不是 was read as option A (是) by substring
    ("是的", "zh", "不是", False, "B"),
    ("不是", "zh", "没有", True, "B"),
    ("不是", "zh", "无", True, "B"),
    ("不是", "zh", "不", True, "B"),
    ("是的", "zh", "有", True, "A"),
    ("no", "en", "Not seen", True, "B"),
    ("no", "en", "Yes, there is no effusion.", False, "A"),
    ("no", "en", "B", True, "B"),
    ("yes", "en", "The answer is A", True, "A"),
    ("yes", "en", "ovarian cyst", False, None),  # neither yes/no nor a letter
])
def test_medvl_closed_as_mc_reads_yes_no_first(gold: str, lang: str, reply: str, correct: bool,
                                               parsed: str | None) -> None:
    item = EvalItem("c", "Is there a fracture?", [], gold, {}, "closed", lang=lang)
    res = score_response(item, reply, "closed_as_mc", scorer="medvl")
    assert (res.correct, res.parsed) == (correct, parsed), res.detail


def test_registry_and_interface() -> None:
    assert SCORERS.names() == ALL_SCORERS
    with pytest.raises(KeyError, match="allowed"):
        get_scorer("random")
    for name in ALL_SCORERS:
        scorer = get_scorer(name)
        assert get_scorer(name) is scorer
        assert isinstance(scorer.description, str) and scorer.description
        for item in (mc_item(), EvalItem("c", "Is it?", [], "yes", {}, "closed"),
                     EvalItem("o", "What?", [], "liver", {}, "open")):
            res = scorer.score(item, "B")
            assert isinstance(res, ScoreResult) and isinstance(res.detail, dict)
            assert res.to_dict()["detail"] == res.detail


@pytest.mark.parametrize("name", ALL_SCORERS)
def test_hidden_gold_has_no_correctness(name: str) -> None:
    res = get_scorer(name).score(mc_item(answer=None), "B")
    assert res.correct is None and res.score == 0.0


@pytest.mark.parametrize("name", ALL_SCORERS)
@pytest.mark.parametrize("reply", ["", "hmm, hard to say", "Maybe one of them."])
def test_never_guess(name: str, reply: str) -> None:
    """Replies that name no option: over many gold letters a guessing scorer would sometimes be right."""
    outcomes = set()
    for gold in OPTS:
        res = get_scorer(name).score(mc_item(answer=gold), reply)
        if res.unparsed:
            assert res.correct is False and res.parsed is None
        outcomes.add((res.parsed, res.correct))
    # deterministic: the same reply always parses to the same thing, right for at most one gold letter
    assert len({p for p, _ in outcomes}) == 1
    assert sum(1 for _, c in outcomes if c) <= 1


def test_would_guess_flag_where_toolkit_guesses() -> None:
    res = get_scorer("mmmu").score(mc_item(), "hmm")
    assert res.unparsed and res.correct is False and res.detail["would_guess"] is True
    res = get_scorer("medvl").score(mc_item(), "hmm")
    assert res.unparsed and not res.detail.get("would_guess")


def test_fallback_for_unsupported_types() -> None:
    res = get_scorer("omnimedvqa").score(EvalItem("o", "Which organ?", [], "liver", {}, "open"), "The liver")
    assert res.correct is True and res.detail["fallback"] == "medvl"
    res = get_scorer("lmms-slake").score(mc_item(), "B")
    assert res.correct is True and res.detail["fallback"] == "medvl"


def test_open_scores_are_recall() -> None:
    item = EvalItem("o", "Where?", [], "left upper lobe", {}, "open")
    res = get_scorer("medvl").score(item, "upper lobe")
    assert res.correct is False and abs(res.score - 2 / 3) < 1e-9 and res.detail["f1"] == pytest.approx(0.8)
    res = get_scorer("llava-med").score(item, "lesion in the left upper lobe")
    assert res.correct is True and res.score == 1.0 and res.detail["precision"] == 0.6


def test_scoring_is_deterministic() -> None:
    replies = ["B", "A or B", "The answer is C", "pleural effusion", "I think the answer is C", "nodule"]
    first = [[get_scorer(n).score(mc_item(), r).to_dict() for r in replies] for n in ALL_SCORERS]
    again = [[get_scorer(n).score(mc_item(), r).to_dict() for r in replies] for n in ALL_SCORERS]
    assert first == again


def test_omnimedvqa_similarity_matches_plain_difflib() -> None:
    """The quick-ratio shortcut must pick exactly what a plain argmax of ``SequenceMatcher(None, option,
    reply).ratio()`` picks (OmniMedVQA's argument order), first on ties -- and, for HuatuoGPT-Vision, last
    on ties of lower-cased texts; replies of 200+ characters exercise difflib's autojunk."""
    import random
    from difflib import SequenceMatcher

    from medvl.eval.scorers.omnimedvqa import most_similar

    rng = random.Random(5)
    words = ["lung", "liver", "cyst", "mass", "normal", "effusion", "the", "left", "right", "is", "Left", "MASS"]
    for i in range(300):
        options = {chr(65 + j): " ".join(rng.choices(words, k=rng.randint(1, 3))) for j in range(rng.randint(2, 5))}
        reply = " ".join(rng.choices(words, k=rng.randint(0, 8) if i % 3 else rng.randint(40, 60)))
        ratios = [SequenceMatcher(None, t, reply).ratio() for t in options.values()]
        best = max(ratios)
        expected = None if best == 0 else list(options)[ratios.index(best)]
        assert most_similar(reply, options)[0] == expected
        low = [SequenceMatcher(None, t.lower(), reply.lower()).ratio() for t in options.values()]
        best = max(low)
        expected = None if best == 0 else list(options)[len(low) - 1 - low[::-1].index(best)]
        assert most_similar(reply, options, ties="last", lower=True)[0] == expected
    with pytest.raises(ValueError, match="ties"):
        most_similar("x", {"A": "x"}, ties="random")


def test_omnimedvqa_argument_order_matters_for_long_replies() -> None:
    """A long reply (>= 200 characters) is the second sequence in the official order, so autojunk applies
    to it; the reversed order would give another answer."""
    from difflib import SequenceMatcher

    from medvl.eval.scorers.omnimedvqa import most_similar
    from test_eval_parse import LONG_CXR_REPLY, OPTS_CXR

    assert len(LONG_CXR_REPLY) >= 200
    reversed_pick = max(OPTS_CXR, key=lambda k: SequenceMatcher(None, LONG_CXR_REPLY, OPTS_CXR[k]).ratio())
    assert reversed_pick == "A" and most_similar(LONG_CXR_REPLY, OPTS_CXR)[0] == "B"


@pytest.mark.parametrize(("gold", "reply", "rule"), [
    ("Coronal Plane", "Not the coronal plane", "negated"),
    ("Coronal Plane", "coronal plane or axial plane", "ambiguous"),
    ("left lung", "either the left lung or the right lung", "ambiguous"),
    ("left lung", "The left lung.", "exact"),
    ("left lung", "lesion in the left lung", "contained"),
])
@pytest.mark.parametrize("answer_type", ["closed", "open"])
def test_medvl_negated_and_ambiguous_golds(gold: str, reply: str, rule: str, answer_type: str) -> None:
    res = get_scorer("medvl").score(EvalItem("o", "Which?", [], gold, {}, answer_type), reply)
    assert res.detail["rule"] == rule
    assert res.correct is (rule in ("exact", "contained")) and res.score == (1.0 if res.correct else 0.0)
    assert not res.unparsed


def test_scorer_spread_counts_fallbacks(tmp_path) -> None:
    """omnimedvqa scores only multiple choice: on VQA-RAD every answered item falls back to medvl, so its
    accuracy is n/a and it is left out of the spread; huatuo falls back on the open items only."""
    import json

    from click.testing import CliRunner

    from eval_fixtures import VQA_RAD_TEST, write_vqa_rad
    from medvl.cli.main import cli
    from medvl.eval.runner import rescore_run, run_eval

    data = write_vqa_rad(tmp_path / "data")
    answers = {"1": "Yes.", "2": "x-ray", "3": "no", "4": "the liver", "5": "No.", "6": "coronal", "8": "2"}
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": k, "response": v}) + "\n" for k, v in answers.items()))
    out = tmp_path / "run"
    run_eval("vqa-rad", data, f"predictions:{preds}", out, scorer="medvl")
    spread = rescore_run(out, ["huatuo", "lmms-slake", "medvl", "omnimedvqa"])["scorer_spread"]
    table = spread["scorers"]
    answered_open = sum(1 for r in VQA_RAD_TEST if r[6] == "OPEN" and str(r[0]) in answers)
    assert table["omnimedvqa"]["fallback"] == len(answers) and table["omnimedvqa"]["all_fallback"]
    assert table["omnimedvqa"]["accuracy"] is None and table["omnimedvqa"]["ci95"] is None
    assert table["huatuo"]["fallback"] == answered_open == 4 and not table["huatuo"]["all_fallback"]
    assert table["medvl"]["fallback"] == 0 and table["lmms-slake"]["fallback"] == 0
    accs = [table[n]["accuracy"] for n in ("huatuo", "lmms-slake", "medvl")]
    assert spread["spread"] == pytest.approx(max(accs) - min(accs))
    assert spread["excluded_all_fallback"] == ["omnimedvqa"]
    res = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["eval", "--rescore", str(out), "--all-scorers"],
                                                   catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "fallback" in res.output and "n/a (all fallback)" in res.output
