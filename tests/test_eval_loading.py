"""Issue 6, items 15 and 16: what a benchmark loader skips is counted with its reasons in results.json, the
CLI summary, skipped.jsonl and the report; benchmark options are typed by each loader's declared schema
(lists, bools, choices), listed by ``medvl eval --list``; every user error is one line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner
from pydantic import Field

import eval_fixtures as fx
from medvl.cli.main import cli
from medvl.eval.benchmarks._options import BenchmarkOptions, CommaList, describe_options, parse_options
from medvl.eval.runner import read_samples, run_eval
from medvl.eval.types import BENCHMARKS, BenchmarkOptionError


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": "250"})  # rich: no line wrapping


def _ok(args: list[str]):
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    return res


def _preds(path: Path, rows: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": k, "response": v}) + "\n" for k, v in rows.items()), encoding="utf-8")
    return path


def _broken_slake(tmp_path: Path) -> Path:
    """The SLAKE fixture with one record lacking its answer (qid 12) and one naming a missing image (qid 14)."""
    d = fx.write_slake(tmp_path / "data")
    recs = json.loads((d / "test.json").read_text(encoding="utf-8"))
    del recs[1]["answer"]
    recs[3]["img_name"] = "xmlab99/source.jpg"
    (d / "test.json").write_text(json.dumps(recs), encoding="utf-8")
    return d


# ------------------------------------------------------------------------------ item 15: nothing skipped silently

def test_skipped_rows_reach_results_skipped_file_cli_and_report(tmp_path):
    d = _broken_slake(tmp_path)
    preds = _preds(tmp_path / "p.jsonl", {str(r[10]): r[3] for r in fx.SLAKE_TEST})
    out = tmp_path / "run"
    res = _ok(["eval", "slake", "--data", d, "--model", f"predictions:{preds}", "-o", out])
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    sk = results["loader_skipped"]
    assert results["n"] == 4 and sk["n"] == 2
    assert sk["by_code"] == {"missing_field": 1, "missing_image": 1}
    assert [(e["id"], e["code"]) for e in sk["examples"]] == [("12", "missing_field"), ("14", "missing_image")]
    assert sk["not_selected"] == {"q_lang 'zh' (option lang=en)": 4}  # the Chinese half, left out on purpose
    rows = [json.loads(line) for line in (out / "skipped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows == sk["examples"]
    assert "xmlab99/source.jpg" in rows[1]["reason"] and str(d) not in rows[1]["reason"]  # relative to --data
    # counts add up: published English rows = scored + skipped
    assert results["n"] + sk["n"] == sum(r[4] == "en" for r in fx.SLAKE_TEST)
    assert "2 benchmark row(s) skipped while loading (not scored): missing_field 1, missing_image 1" in res.output
    assert "4 row(s) not selected" in res.output
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Rows skipped while loading: 2" in page and "xmlab99/source.jpg" in page
    # re-scoring the run reports the same skipped rows
    _ok(["eval", "--rescore", out, "--scorer", "lmms-slake"])
    again = json.loads((out / "rescored" / "lmms-slake" / "results.json").read_text(encoding="utf-8"))
    assert again["loader_skipped"]["by_code"] == sk["by_code"]
    assert (out / "rescored" / "lmms-slake" / "skipped.jsonl").read_text() == (out / "skipped.jsonl").read_text()


def test_clean_run_reports_zero_skipped(tmp_path):
    d = fx.write_vqa_rad(tmp_path / "data")
    preds = _preds(tmp_path / "p.jsonl", {str(r[0]): r[5] for r in fx.VQA_RAD_TEST})
    res = run_eval("vqa-rad", d, f"predictions:{preds}", tmp_path / "run")
    assert res["loader_skipped"]["n"] == 0 and res["loader_skipped"]["by_code"] == {}
    assert (tmp_path / "run" / "skipped.jsonl").read_text() == ""


def test_tsv_row_with_more_cells_than_columns_is_recorded(tmp_path):
    d = fx.write_gmai_mmbench(tmp_path)
    p = d / "GMAI-MMBench_VAL.tsv"
    lines = p.read_text(encoding="utf-8").split("\n")
    lines[6] = lines[6] + "\tstray cell"  # row index 5: one cell more than the header has columns
    p.write_text("\n".join(lines), encoding="utf-8")
    bench = BENCHMARKS.get("gmai-mmbench")()
    items = bench.load(d)
    assert [it.id for it in items] == ["0", "1", "2", "3", "4"]
    assert [(s[0], s.code) for s in bench.skipped] == [("GMAI-MMBench_VAL.tsv:7", "bad_line")]
    assert "line 7 has 15 cells but the header has 14 columns" in bench.skipped[0][1]


def test_mmmu_question_naming_an_absent_image_is_skipped(tmp_path):
    d = fx.write_mmmu_med(tmp_path)
    import pyarrow.parquet as pq

    path = next((d / "Basic_Medical_Science").glob("validation-*.parquet"))
    table = pq.read_table(path).to_pylist()
    table[1]["image_2"] = None  # its question compares <image 1> and <image 2>
    pq.write_table(__import__("pyarrow").Table.from_pylist(table), path)
    bench = BENCHMARKS.get("mmmu-med")()
    ids = [it.id for it in bench.load(d)]
    assert "validation_Basic_Medical_Science_2" not in ids
    skip = next(s for s in bench.skipped if s[0] == "validation_Basic_Medical_Science_2")
    assert skip.code == "missing_image" and "<image 2>" in skip[1]


# ------------------------------------------------------------------------------ item 16: typed options

def test_comma_separated_subjects_reach_mmmu_as_a_list(tmp_path):
    d = fx.write_mmmu_med(tmp_path / "data")
    preds = _preds(tmp_path / "p.jsonl", {"validation_Clinical_Medicine_1": "A"})
    out = tmp_path / "run"
    _ok(["eval", "mmmu-med", "--data", d, "--model", f"predictions:{preds}", "-o", out,
         "--option", "subjects=Clinical_Medicine,Basic_Medical_Science"])
    ids = [s["id"] for s in read_samples(out / "samples.jsonl")]
    # loaded in the benchmark's subject order, only the two subjects asked for
    assert ids == ["validation_Basic_Medical_Science_1", "validation_Basic_Medical_Science_2",
                   "validation_Clinical_Medicine_1"]
    cfg = json.loads((out / "run_config.json").read_text())
    assert cfg["bench_options"] == {"subjects": ["Clinical_Medicine", "Basic_Medical_Science"]}
    # the same options given from Python are the same run (resume accepts it)
    res = run_eval("mmmu-med", d, f"predictions:{preds}", out,
                   bench_options={"subjects": ["Clinical_Medicine", "Basic_Medical_Science"]})
    assert res["n"] == 3


def test_bool_option_is_parsed_from_text(tmp_path):
    d = fx.write_pmc_vqa(tmp_path / "data")
    bench = BENCHMARKS.get("pmc-vqa")()
    assert len(bench.load(d, clean="false")) == len(fx.PMC_VQA_ROWS)  # test.csv
    assert len(bench.load(d, clean="true")) == len(fx.PMC_VQA_CLEAN)  # test_clean.csv
    with pytest.raises(BenchmarkOptionError, match=r"pmc-vqa: option clean='perhaps': Input should be a valid boolean"):
        bench.load(d, clean="perhaps")


class _Demo(BenchmarkOptions):
    n_shots: int = Field(0, description="examples shown before each question")
    strict: bool = True
    parts: CommaList(Literal["a", "b", "c"]) = Field(default_factory=lambda: ["a"])  # type: ignore[valid-type]


def test_option_schema_types_lists_ints_bools_and_errors():
    got = parse_options("demo", _Demo, {"n_shots": "3", "strict": "no", "parts": "c, a,c"})
    assert (got.n_shots, got.strict, got.parts) == (3, False, ["c", "a"])
    assert parse_options("demo", _Demo, {}).parts == ["a"]
    for given, pattern in [({"n_shots": "three"}, r"^demo: option n_shots='three': Input should be a valid integer"),
                           ({"parts": "a,d"}, r"^demo: option parts item 2='d': Input should be 'a', 'b' or 'c'$"),
                           ({"shots": "1"}, r"^demo: unknown option\(s\) shots; allowed: n_shots, parts, strict$")]:
        with pytest.raises(BenchmarkOptionError, match=pattern) as e:
            parse_options("demo", _Demo, given)
        assert "\n" not in str(e.value)
    assert describe_options(_Demo) == [
        "n_shots: integer; default 0. examples shown before each question",
        "strict: true/false; default true",
        "parts: comma-separated list of a, b, c; default a"]


def test_list_documents_every_benchmarks_options():
    out = CliRunner().invoke(cli, ["eval", "--list"], env={"COLUMNS": "250"}).output
    for line in ("--option subjects: comma-separated list of Basic_Medical_Science, Clinical_Medicine,",
                 "--option clean: true/false; default true.", "--option lang: one of en, zh, all; default en.",
                 "--option access: one of open, restricted, all; default open.",
                 "--option file (also tsv): text.", "--option layout: one of mevf, original, parquet."):
        assert line in out, line
    for name in BENCHMARKS.names():
        assert f"  {name}: " in out


@pytest.mark.parametrize(("bench", "extra", "message"), [
    ("slake", ["--option", "lang=fr"], "slake: option lang='fr': Input should be 'en', 'zh' or 'all'"),
    ("slake", ["--option", "langs=zh"], "slake: unknown option(s) langs; allowed: lang"),
    ("slake", ["--split", "dev"], "slake: unknown split 'dev'; allowed: test, validation, train"),
    ("mmmu-med", ["--option", "subjects=Pharmacy,Dentistry"], "mmmu-med: option subjects item 2='Dentistry'"),
    ("pmc-vqa", ["--option", "clean=perhaps"], "pmc-vqa: option clean='perhaps'"),
    ("vqa-rad", ["--option", "layout=csv"], "vqa-rad: option layout='csv'"),
    ("vqa-rad", ["--protocol", "nope"], "unknown protocol 'nope'"),
    ("vqa-rad", ["--scorer", "nope"], "unknown scorer 'nope'"),
    ("vqa-rad", ["--model", "openai:m@http://127.0.0.1:9/v1", "--model-option", "concurrency=many"],
     "openai adapter: bad model option value"),
])
def test_user_errors_are_one_line(tmp_path, bench, extra, message):
    writers = {"slake": fx.write_slake, "mmmu-med": fx.write_mmmu_med, "pmc-vqa": fx.write_pmc_vqa,
               "vqa-rad": fx.write_vqa_rad}
    d = writers[bench](tmp_path / "data")
    preds = _preds(tmp_path / "p.jsonl", {"1": "yes"})
    args = ["eval", bench, "--data", d, "--model", f"predictions:{preds}", "-o", tmp_path / "o"]
    if "--model" in extra:
        args = args[:4] + args[6:]
    res = _invoke(args + extra)
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], res.output
    assert "Traceback" not in res.output
