"""The evaluation runner on fixture benchmarks: predictions scoring with missing answers, resume after an
interrupted run, rescoring under other scorers, hidden-answer submissions, paired comparison, per-item
model errors, and the LLM judge against a real local HTTP server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_fixtures import GMAI_ROWS, SLAKE_TEST, VQA_RAD_TEST, write_gmai_mmbench, write_slake, write_vqa_rad
from medvl.eval.adapters._base import ModelAdapter, load_adapter
from medvl.eval.runner import EvalRunError, compare, read_samples, rescore_run, run_eval
from medvl.eval.types import Request
from test_eval_adapters import ChatServer


class Counting(ModelAdapter):
    """Wraps a real adapter and records which request ids it was asked (and can fail on some ids)."""

    def __init__(self, inner: ModelAdapter, fail_ids: tuple[str, ...] = ()):
        self.inner, self.fail_ids = inner, fail_ids
        self.name, self.batch_size = inner.name, inner.batch_size
        self.asked: list[str] = []
        self.registry_name = inner.registry_name

    def generate(self, requests: list[Request]) -> list[str | None]:
        self.asked.extend(r.id for r in requests)
        bad = [r.id for r in requests if r.id in self.fail_ids]
        if bad:
            raise RuntimeError(f"cannot answer {bad}")
        return self.inner.generate(requests)

    def describe(self):
        return self.inner.describe()


def _preds(path: Path, rows: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": k, "response": v}) + "\n" for k, v in rows.items()), encoding="utf-8")
    return path


# VQA-RAD fixture ids 1..8: gold yes, x-ray, no, liver, no, axial, ct, 2
RAD_PREDS = {"1": "Yes.", "2": "It is an X-ray <script>alert(1)</script>", "3": "yes", "4": "the liver",
             "5": "No, the heart is not enlarged.", "6": "<b>coronal</b>", "8": "2"}  # "7" is missing


@pytest.fixture()
def rad(tmp_path) -> Path:
    return write_vqa_rad(tmp_path / "data")


def test_predictions_scoring_results_and_report(rad, tmp_path):
    preds = _preds(tmp_path / "p.jsonl", RAD_PREDS | {"999": "extra"})
    out = tmp_path / "run"
    res = run_eval("vqa-rad", rad, f"predictions:{preds}", out, scorer="medvl", batch_size=3)
    samples = read_samples(out / "samples.jsonl")
    assert [s["id"] for s in samples] == [str(r[0]) for r in VQA_RAD_TEST]
    assert res["n"] == len(VQA_RAD_TEST) == 8
    assert res["missing_ids"] == ["7"]
    miss = samples[6]
    assert miss["response"] is None and miss["correct"] is False and miss["unparsed"] and miss["missing"]
    assert res["n_unknown_prediction_ids"] == 1 and res["unknown_prediction_ids"] == ["999"]
    n_correct = sum(bool(s["correct"]) for s in samples)
    assert 0 < n_correct < 8
    assert res["accuracy"] == pytest.approx(n_correct / 8)
    lo, hi = res["ci95"]
    assert lo <= res["accuracy"] <= hi and lo < hi
    assert {s["id"]: s["correct"] for s in samples}["3"] is False  # "yes" vs gold "no"
    assert res["groups"], "per-group summary expected (question_type, answer_type...)"
    saved = json.loads((out / "results.json").read_text())
    assert saved["accuracy"] == res["accuracy"] and saved["medvl_version"]
    html = (out / "report.html").read_text()
    assert "<script>" not in html and "<b>coronal" not in html and "&lt;b&gt;coronal&lt;/b&gt;" in html
    assert "data:image/png;base64," in html
    # same inputs => byte-identical outputs
    first = (out / "samples.jsonl").read_bytes(), (out / "results.json").read_bytes(), html
    run_eval("vqa-rad", rad, f"predictions:{preds}", tmp_path / "run2", scorer="medvl", batch_size=5)
    assert (tmp_path / "run2" / "samples.jsonl").read_bytes() == first[0]
    second = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert {k: v for k, v in second.items() if k != "paths"} == {k: v for k, v in saved.items() if k != "paths"}


def test_resume_asks_only_unfinished_samples(rad, tmp_path):
    preds = _preds(tmp_path / "p.jsonl", RAD_PREDS)
    out = tmp_path / "run"
    full = Counting(load_adapter(f"predictions:{preds}"))
    run_eval("vqa-rad", rad, f"predictions:{preds}", out, scorer="medvl", batch_size=2, adapter=full)
    assert full.asked == [str(r[0]) for r in VQA_RAD_TEST]
    complete = (out / "samples.jsonl").read_bytes()
    lines = complete.split(b"\n")
    # interrupted: three finished lines and half of the fourth
    (out / "samples.jsonl").write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][: len(lines[3]) // 2])
    again = Counting(load_adapter(f"predictions:{preds}"))
    run_eval("vqa-rad", rad, f"predictions:{preds}", out, scorer="medvl", batch_size=2, adapter=again)
    assert again.asked == [str(r[0]) for r in VQA_RAD_TEST[3:]]
    assert (out / "samples.jsonl").read_bytes() == complete
    # finished run: nothing is asked again
    idle = Counting(load_adapter(f"predictions:{preds}"))
    run_eval("vqa-rad", rad, f"predictions:{preds}", out, scorer="medvl", adapter=idle)
    assert idle.asked == []
    # a different configuration in the same folder is refused; --no-resume starts over
    with pytest.raises(EvalRunError, match="different scorer"):
        run_eval("vqa-rad", rad, f"predictions:{preds}", out, scorer="lmms-slake")
    fresh = Counting(load_adapter(f"predictions:{preds}"))
    run_eval("vqa-rad", rad, f"predictions:{preds}", out, scorer="lmms-slake", resume=False, adapter=fresh)
    assert len(fresh.asked) == 8


def test_rescore_and_scorer_spread(rad, tmp_path):
    preds = _preds(tmp_path / "p.jsonl", RAD_PREDS)
    out = tmp_path / "run"
    res = run_eval("vqa-rad", rad, f"predictions:{preds}", out, scorer="medvl")
    one = rescore_run(out, ["lmms-slake"])
    assert Path(one["paths"]["results"]).parent == out / "rescored" / "lmms-slake"
    rs = read_samples(out / "rescored" / "lmms-slake" / "samples.jsonl")
    assert {s["scorer"] for s in rs} == {"lmms-slake"} and len(rs) == 8
    # lmms-eval exact match: "Yes." -> yes is right, "the liver" != "liver" is wrong
    by_id = {s["id"]: s for s in rs}
    assert by_id["1"]["correct"] is True and by_id["4"]["correct"] is False
    assert one["accuracy"] < res["accuracy"]
    allr = rescore_run(out, ["medvl", "lmms-slake", "llava-med"])
    table = allr["scorer_spread"]["scorers"]
    assert sorted(table) == ["llava-med", "lmms-slake", "medvl"]
    assert table["medvl"]["accuracy"] == res["accuracy"]
    accs = [v["accuracy"] for v in table.values()]
    assert allr["scorer_spread"]["spread"] == pytest.approx(max(accs) - min(accs))
    assert "scorer_spread" in json.loads((out / "results.json").read_text())
    assert "different scorers" in (out / "report.html").read_text()


def test_hidden_answers_write_submission(tmp_path):
    data = write_gmai_mmbench(tmp_path / "data", split="TEST")
    preds = _preds(tmp_path / "p.jsonl", {str(r[0]): f"The answer is {r[4]}." for r in GMAI_ROWS})
    res = run_eval("gmai-mmbench", data, f"predictions:{preds}", tmp_path / "run", split="test")
    assert res["accuracy"] is None and res["n_scored"] == 0
    sub = Path(res["submission"])
    assert sub.is_file() and sub.parent == tmp_path / "run"


def test_compare_two_runs(rad, tmp_path):
    run_eval("vqa-rad", rad, f"predictions:{_preds(tmp_path / 'a.jsonl', RAD_PREDS)}", tmp_path / "a",
                 scorer="medvl")
    good = {str(r[0]): r[5] for r in VQA_RAD_TEST}
    b = run_eval("vqa-rad", rad, f"predictions:{_preds(tmp_path / 'b.jsonl', good)}", tmp_path / "b",
                 scorer="medvl")
    assert b["accuracy"] == 1.0
    cmp = compare(tmp_path / "a", tmp_path / "b")
    assert cmp["n_shared"] == 8 and Path(cmp["path"]).is_file()
    assert json.loads(Path(cmp["path"]).read_text())["n_shared"] == 8


def test_compare_refuses_runs_scored_differently(rad, tmp_path):
    preds = _preds(tmp_path / "p.jsonl", RAD_PREDS)
    run_eval("vqa-rad", rad, f"predictions:{preds}", tmp_path / "a", scorer="medvl")
    rescore_run(tmp_path / "a", ["lmms-slake"])  # the same predictions under another scorer
    other = tmp_path / "a" / "rescored" / "lmms-slake"
    with pytest.raises(EvalRunError, match=r"not comparable: scorer differs \(A: 'medvl', B: 'lmms-slake'\)"):
        compare(tmp_path / "a", other)
    assert not list((tmp_path / "a").glob("compare_*.json"))
    forced = compare(tmp_path / "a", other, force=True)
    saved = json.loads(Path(forced["path"]).read_text())
    assert saved["differences"] == {"scorer": {"a": "medvl", "b": "lmms-slake"}}
    assert saved["forced"] is True and saved["comparable"] is False and saved["n_shared"] == 8


def test_compare_refuses_other_benchmark_with_overlapping_ids(rad, tmp_path):
    run_eval("vqa-rad", rad, f"predictions:{_preds(tmp_path / 'a.jsonl', RAD_PREDS)}", tmp_path / "a",
             scorer="medvl")
    gmai = write_gmai_mmbench(tmp_path / "gdata", split="VAL")
    answers = {str(r[0]): f"The answer is {r[4]}." for r in GMAI_ROWS}
    run_eval("gmai-mmbench", gmai, f"predictions:{_preds(tmp_path / 'g.jsonl', answers)}", tmp_path / "g",
             split="val", scorer="medvl")
    assert {str(r[0]) for r in GMAI_ROWS} & set(RAD_PREDS), "the fixture ids must overlap for this test"
    with pytest.raises(EvalRunError) as err:
        compare(tmp_path / "a", tmp_path / "g")
    msg = str(err.value)
    for field in ("benchmark differs (A: 'vqa-rad', B: 'gmai-mmbench')", "split differs", "protocol differs",
                  "--force"):
        assert field in msg
    forced = compare(tmp_path / "a", tmp_path / "g", out_path=tmp_path / "cmp.json", force=True)
    assert set(forced["differences"]) >= {"benchmark", "split", "protocol"}
    assert json.loads((tmp_path / "cmp.json").read_text())["differences"]["benchmark"] == {
        "a": "vqa-rad", "b": "gmai-mmbench"}


def test_compare_counts_ids_in_one_run_only(rad, tmp_path):
    preds = _preds(tmp_path / "p.jsonl", RAD_PREDS)
    run_eval("vqa-rad", rad, f"predictions:{preds}", tmp_path / "a", scorer="medvl", limit=5)
    good = {str(r[0]): r[5] for r in VQA_RAD_TEST}
    run_eval("vqa-rad", rad, f"predictions:{_preds(tmp_path / 'b.jsonl', good)}", tmp_path / "b", scorer="medvl")
    cmp = compare(tmp_path / "a", tmp_path / "b")  # a different --limit is still comparable
    assert cmp["comparable"] is True and "differences" not in cmp
    assert cmp["n_shared"] == 5 and cmp["n_missing_in_b"] == 0 and cmp["n_missing_in_a"] == 3
    assert cmp["ids_missing_in_a"] == ["6", "7", "8"]
    # a folder without run_config.json / results.json cannot be checked
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "samples.jsonl").write_bytes((tmp_path / "b" / "samples.jsonl").read_bytes())
    with pytest.raises(EvalRunError, match="cannot be checked for comparability"):
        compare(tmp_path / "a", bare)
    assert compare(tmp_path / "a", bare, force=True)["differences"] == {"config": {"a": "present", "b": "missing"}}


def test_report_with_chinese_groups_has_no_missing_glyphs(tmp_path):
    import warnings

    from medvl.eval import report

    data = write_slake(tmp_path / "data")
    answers = {str(r[10]): r[3] for r in SLAKE_TEST}
    answers[str(SLAKE_TEST[-1][10])] = "右下"  # one wrong Chinese answer
    preds = _preds(tmp_path / "p.jsonl", answers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_eval("slake", data, f"predictions:{preds}", tmp_path / "run", scorer="medvl",
                       bench_options={"lang": "all"})
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    assert res["n"] == len(SLAKE_TEST) and "zh" in res["groups"]["lang"]
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    for text in ("腹部", "胸腔_肺", "脑", "右下"):  # the tables show the Chinese text itself
        assert text in page
    assert page.count("data:image/png;base64,") == len(res["groups"])
    fonts = report.plot_fonts()
    assert report.drawable("Chest_lung", fonts)
    if report.cjk_font() is None:  # no CJK font installed: the plot numbers the bar, the table names it
        assert not report.drawable("腹部", fonts) and report.plot_label(3, "腹部", 2, fonts) == "#3 (n=2)"
    else:
        assert report.plot_label(3, "腹部", 2, fonts) == "腹部 (n=2)"
    assert report.plot_label(1, "Brain", 4, fonts) == "Brain (n=4)"


def test_one_failing_item_does_not_kill_the_run(rad, tmp_path):
    preds = _preds(tmp_path / "p.jsonl", RAD_PREDS)
    flaky = Counting(load_adapter(f"predictions:{preds}"), fail_ids=("4",))
    res = run_eval("vqa-rad", rad, "predictions:x", tmp_path / "run", scorer="medvl", batch_size=3, adapter=flaky)
    assert res["error_ids"] == ["4"] and res["n"] == 8
    row = {s["id"]: s for s in read_samples(tmp_path / "run" / "samples.jsonl")}["4"]
    assert "cannot answer" in row["error"] and row["correct"] is False
    # the errored item is asked again on resume
    fixed = Counting(load_adapter(f"predictions:{preds}"))
    res2 = run_eval("vqa-rad", rad, "predictions:x", tmp_path / "run", scorer="medvl", adapter=fixed)
    assert fixed.asked == ["4"] and res2["error_ids"] == []
    # a model failing on everything aborts after a few items, keeping finished samples
    dead = Counting(load_adapter(f"predictions:{preds}"), fail_ids=tuple(str(i) for i in range(1, 9)))
    with pytest.raises(EvalRunError, match="in a row"):
        run_eval("vqa-rad", rad, "predictions:x", tmp_path / "dead", scorer="medvl", batch_size=2, adapter=dead)


def test_judge_resolves_unparsed_choices_and_caches(tmp_path):
    data = write_gmai_mmbench(tmp_path / "data", split="VAL")
    ids = [str(r[0]) for r in GMAI_ROWS]
    vague = {i: "Hmm, hard to say from this image." for i in ids}
    preds = _preds(tmp_path / "p.jsonl", vague | {ids[0]: "The answer is A."})
    # judge: picks the gold letter for row 1, refuses (Z) otherwise; first call fails with 500 (retried)
    gold = {r[2]: r[4] for r in GMAI_ROWS}

    def reply(body):
        prompt = body["messages"][0]["content"]
        q = next(q for q in gold if q in prompt)
        return gold[q] if q == GMAI_ROWS[1][2] else "Z"

    with ChatServer(fail_first=[500], reply=reply) as srv:
        spec = f"openai:judge-m@{srv.url}"
        out = tmp_path / "run"
        res = run_eval("gmai-mmbench", data, f"predictions:{preds}", out, scorer="medvl", judge=spec,
                      judge_options={"backoff": 0.01})
        s = {r["id"]: r for r in read_samples(out / "samples.jsonl")}
        assert s[ids[1]]["parsed"] == GMAI_ROWS[1][4] and s[ids[1]]["correct"] is True
        assert s[ids[1]]["detail"]["parsed_by"] == "judge"
        assert all(s[i]["unparsed"] and s[i]["parsed"] is None for i in ids[2:])  # judge said Z: no guess
        assert "judge" not in s[ids[0]]["detail"]  # parsed by rules: judge not asked
        assert res["judge"]["asked"] == len(ids) - 1
        calls = srv.calls
        cache = (out / "judge_cache.jsonl").read_text().splitlines()
        assert len(cache) == len(ids) - 1 and all(len(json.loads(c)["key"]) == 64 for c in cache)
        run_eval("gmai-mmbench", data, f"predictions:{preds}", tmp_path / "run", scorer="medvl", judge=spec,
                 resume=False, judge_options={"backoff": 0.01})
        assert srv.calls == calls  # every verdict came from the cache
    # a judge that cannot answer leaves items unparsed
    res3 = run_eval("gmai-mmbench", data, f"predictions:{preds}", tmp_path / "run3", scorer="medvl",
                    judge="openai:j@http://127.0.0.1:9/v1", judge_options={"max_retries": 1, "backoff": 0.01})
    assert res3["parse_failures"] == len(ids) - 1 and res3["judge"]["failed"] == len(ids) - 1


def test_judge_grades_open_answers_when_asked(rad, tmp_path):
    preds = _preds(tmp_path / "p.jsonl", RAD_PREDS | {"4": "hepatic organ"})

    def reply(body):
        return "Yes." if "Reference answer: liver" in body["messages"][0]["content"] else "no"

    with ChatServer(reply=reply) as srv:
        res = run_eval("vqa-rad", rad, f"predictions:{preds}", tmp_path / "run", scorer="medvl",
                       judge=f"openai:j@{srv.url}", judge_open=True)
    s = {r["id"]: r for r in read_samples(tmp_path / "run" / "samples.jsonl")}
    open_ids = [str(r[0]) for r in VQA_RAD_TEST if r[6] == "OPEN" and str(r[0]) in RAD_PREDS]
    assert res["judge"]["asked"] == len(open_ids) == 4
    assert s["4"]["correct"] is True and s["4"]["detail"]["parsed_by"] == "judge"
    assert s["2"]["correct"] is False  # the judge said no, overriding the rule match
    assert all("judge" not in s[i]["detail"] for i in ("1", "3", "5"))  # closed items: rules only
