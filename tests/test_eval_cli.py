"""``medvl eval`` end to end through click: a tiny random LLaVA on fixture benchmarks, rescoring, comparison,
listing, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from eval_fixtures import GMAI_ROWS, VQA_RAD_TEST, write_gmai_mmbench, write_vqa_rad
from medvl.cli.main import cli
from medvl.eval.runner import read_samples
from tiny_vlm import build_tiny_llava


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_cli"))


def _ok(args: list[str]):
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def test_eval_tiny_vlm_end_to_end(tiny_model, tmp_path):
    data = write_vqa_rad(tmp_path / "data")
    out = tmp_path / "run_b3"
    res = _ok(["eval", "vqa-rad", "--data", str(data), "--model", f"hf:{tiny_model}", "-o", str(out),
               "--batch-size", "3", "--scorer", "medvl"])
    assert "accuracy" in res.output and "report" in res.output
    samples = read_samples(out / "samples.jsonl")
    assert [s["id"] for s in samples] == [str(r[0]) for r in VQA_RAD_TEST]
    assert all(isinstance(s["response"], str) for s in samples)
    assert all(s["prompt"].endswith("Answer the question using a single word or phrase.") for s in samples)
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 8 and results["model_info"]["adapter"] == "hf"
    assert results["protocol"] == "short_answer" and results["scorer"] == "medvl"
    assert (out / "report.html").stat().st_size > 1000
    # the same run at another batch size gives byte-identical per-sample output
    out8 = tmp_path / "run_b8"
    _ok(["eval", "vqa-rad", "--data", str(data), "--model", f"hf:{tiny_model}", "-o", str(out8),
         "--batch-size", "8", "--scorer", "medvl"])
    assert (out8 / "samples.jsonl").read_bytes() == (out / "samples.jsonl").read_bytes()
    # every scorer side by side on the same predictions
    res = _ok(["eval", "--rescore", str(out), "--all-scorers"])
    assert "spread between scorers" in res.output
    assert "lmms-slake" in json.loads((out / "results.json").read_text())["scorer_spread"]["scorers"]
    # paired comparison with a predictions run that is always right
    preds = tmp_path / "gold.jsonl"
    preds.write_text("".join(json.dumps({"id": r[0], "response": r[5]}) + "\n" for r in VQA_RAD_TEST))
    gold_run = tmp_path / "gold_run"
    _ok(["eval", "vqa-rad", "--data", str(data), "--model", f"predictions:{preds}", "-o", str(gold_run),
         "--scorer", "medvl"])
    res = _ok(["eval", "--compare", str(gold_run), str(out)])
    cmp = json.loads(res.output[res.output.index("{"):])
    assert cmp["n_shared"] == 8 and cmp["accuracy_a"] == 1.0


def test_eval_gmai_val_with_limit_and_options(tiny_model, tmp_path):
    data = write_gmai_mmbench(tmp_path / "data", split="VAL")
    out = tmp_path / "run"
    _ok(["eval", "gmai-mmbench", "--data", str(data), "--model", f"hf:{tiny_model}", "-o", str(out),
         "--limit", "4", "--split", "val", "--batch-size", "2", "--model-option", "dtype=float32"])
    samples = read_samples(out / "samples.jsonl")
    assert [s["id"] for s in samples] == [str(r[0]) for r in GMAI_ROWS[:4]]
    assert all("Please select the correct answer from the options above." in s["prompt"] for s in samples)
    results = json.loads((out / "results.json").read_text())
    assert "department" in results["groups"] and results["config"]["limit"] == 4


def test_eval_list_and_errors(tmp_path):
    res = _ok(["eval", "--list"])
    for name in ("vqa-rad", "gmai-mmbench", "mc_vlmevalkit", "lmms-slake", "predictions:..."):
        assert name in res.output
    data = write_vqa_rad(tmp_path / "data")
    runner = CliRunner()
    bad = runner.invoke(cli, ["eval", "vqa-rad", "--data", str(data), "--model", "hf:org/some-model",
                              "-o", str(tmp_path / "o")])
    assert bad.exit_code == 1 and "offline" in bad.output
    bad = runner.invoke(cli, ["eval", "nope-bench", "--data", str(data), "--model", "predictions:x",
                              "-o", str(tmp_path / "o")])
    assert bad.exit_code == 1 and "unknown benchmark 'nope-bench'" in bad.output
    bad = runner.invoke(cli, ["eval", "vqa-rad", "--data", str(data)])
    assert bad.exit_code == 2 and "--model" in bad.output
    bad = runner.invoke(cli, ["eval", "--rescore", str(tmp_path)])
    assert bad.exit_code == 2 and "--all-scorers" in bad.output
    bad = runner.invoke(cli, ["eval", "--rescore", str(tmp_path), "--scorer", "medvl"])
    assert bad.exit_code == 1 and "run_config.json" in bad.output
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "response": "yes"}\n{"id": 1, "response": "no"}\n')
    bad = runner.invoke(cli, ["eval", "vqa-rad", "--data", str(data), "--model", f"predictions:{dup}",
                              "-o", str(tmp_path / "o2")])
    assert bad.exit_code == 1 and "dup.jsonl:2: duplicate id '1'" in bad.output


def test_compare_refuses_different_scorers_unless_forced(tmp_path):
    data = write_vqa_rad(tmp_path / "data")
    preds = tmp_path / "gold.jsonl"
    preds.write_text("".join(json.dumps({"id": r[0], "response": r[5]}) + "\n" for r in VQA_RAD_TEST))
    for name, scorer in (("a", "medvl"), ("b", "lmms-slake")):
        _ok(["eval", "vqa-rad", "--data", str(data), "--model", f"predictions:{preds}", "-o", str(tmp_path / name),
             "--scorer", scorer])
    bad = CliRunner().invoke(cli, ["eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert bad.exit_code == 1 and "scorer differs" in bad.output and "--force" in bad.output
    res = _ok(["eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--force"])
    assert "warning: --force: the runs differ in scorer" in res.output
    cmp = json.loads(res.output[res.output.index("{"):])
    assert cmp["differences"] == {"scorer": {"a": "medvl", "b": "lmms-slake"}} and cmp["n_shared"] == 8
