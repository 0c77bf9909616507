"""Annotation-guided generation by a model inside `medvl build`, against a real scripted chat-completions server
on 127.0.0.1: shares per kind and source, GMAI-VL's checks with re-asks and rejects, translation with its tags,
provenance, the budget stopping a build cleanly, and a resumed build paying for nothing twice with outputs
identical to an uninterrupted build."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from build_helpers import ihc_recipe, tree
from chat_server import ChatServer, first_user_text, last_user_text

from medvl.executor import ExecutorError
from medvl.generate.checks import content_problems, region_caption_problems, tag_problems
from medvl.pipeline.build import RunOptions, run_build
from medvl.pipeline.recipe import parse_recipe

LABELS = re.compile(r"^- labels: (.*)$", re.MULTILINE)
REGION = re.compile(r'is labelled "([^"]+)"')


def responder(req: dict, attempt: int) -> dict:
    """A deterministic 'model': right answers, except where the test scripts a fault to be caught."""
    first, last = first_user_text(req), last_user_text(req)
    reask = len(req["messages"]) > 1
    labels = (LABELS.search(first).group(1) if LABELS.search(first) else "no label")
    if attempt == 0 and len(first) % 7 == 0:  # transport noise: retried by the client, never seen by the build
        return {"status": 429, "headers": {"Retry-After": "0"}}
    if "Translate each turn" in first:
        turns = json.loads(first.split("Turns (JSON list): ", 1)[1].split("\n", 1)[0])
        return {"text": json.dumps({"turns": ["中文：" + t for t in turns]}, ensure_ascii=False)}
    if "Describe this region" in first:
        label = REGION.search(first).group(1)
        if not reask:  # the first reply states the label: re-asked
            return {"text": json.dumps({"description": f"This region shows a {label} with a dark rim."})}
        return {"text": json.dumps({"description": "This region shows a dark, round structure with a rim."})}
    if "Write a detailed caption" in first:
        if "Lymphocyte" in labels.title() and not reask:
            return {"text": "The image shows cells."}  # not JSON: re-asked
        return {"text": json.dumps({"caption": f"A stained tissue section; the labelled findings ({labels}) are "
                                               f"visible as brown and blue areas."})}
    if "question-answer pair" in first:
        label = labels.split(", ")[0]
        # always contradicts the annotations: re-asked twice, then rejected with the reason
        return {"text": json.dumps({"question": f"Is there {label} in this image?", "answer": "No, it is absent."})}
    return {"status": 400, "body": f"unexpected prompt: {last[:80]}"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    return ihc_recipe(tmp_path_factory.mktemp("model") / "corpus")


def recipe(corpus: dict, url: str, **llm) -> dict:
    r = json.loads(json.dumps(corpus))
    r["generation"] = {"generator": "llm", "kinds": {"caption": 1, "region_caption": 1, "instruction_qa": 1},
                       "llm": {"model": "scripted", "base_url": url, "backoff": 0.01, "max_backoff": 0.05,
                               "concurrency": 4, "share": {"caption": 0.5, "instruction_qa": 1.0},
                               "source_share": {"ihc_coco": {"region_caption": 1.0}}, "translate_share": 0.3,
                               "prices": {"prompt_per_mtok": 2.5, "completion_per_mtok": 10.0}, **llm}}
    return r


def build(r: dict, out: Path, resume: bool = False):
    return run_build(parse_recipe(r), out, workers=1, run=RunOptions(resume=resume, chunk_records=9))


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_the_model_writes_its_share_and_every_kept_reply_passed_the_checks(corpus, tmp_path):
    with ChatServer(responder) as srv:
        res = build(recipe(corpus, srv.url), tmp_path / "out")
    samples = lines(tmp_path / "out" / "samples.jsonl")
    records = {r["id"]: r for r in lines(tmp_path / "out" / "records.jsonl")}
    model = [s for s in samples if s["generator"] == "llm:scripted"]
    by_kind = {k: [s for s in model if s["kind"] == k and s["lang"] == "en"] for k in ("caption", "region_caption")}
    en_captions = [s for s in samples if s["kind"] == "caption" and s["lang"] == "en"]
    assert 0.2 < len(by_kind["caption"]) / len(en_captions) < 0.8  # share 0.5 of the English captions
    en_regions = [s for s in samples if s["kind"] == "region_caption" and s["lang"] == "en"]
    assert en_regions and all(s["generator"] == "llm:scripted" for s in en_regions
                              if records[s["record_id"]]["dataset"] == "ihc_coco")
    for s in by_kind["region_caption"]:
        rec = records[s["record_id"]]
        answer = s["turns"][1]["text"]
        assert answer.startswith("This region") and not region_caption_problems(answer, rec["regions"][0]["label"])
        assert "<box>" in s["turns"][0]["text"]  # the template's question with its normalized box is kept
        prov = s["meta"]["provenance"]
        assert prov["model"] == "scripted" and prov["prompt_version"] == "annotation-v1"
        assert s["template_id"] == f"annotation-v1/region_caption+{prov['prompt_sha256_12']}"
    for s in by_kind["caption"]:
        rec = records[s["record_id"]]
        assert not content_problems(s["turns"][1]["text"], rec["labels"], res.summary["records_by_modality"] and [],
                                    rec["modality"])
    # instruction QA always contradicted the labels: rejected with the reason, the template sample kept
    rejects = lines(tmp_path / "out" / "rejects.jsonl")
    qa_rejects = [r for r in rejects if r["stage"] == "generate" and "instruction_qa" in r["reason"]]
    en_qa = [s for s in samples if s["kind"] == "instruction_qa" and s["lang"] == "en"]
    assert len(qa_rejects) == len(en_qa) > 0 and all(s["generator"] == "template" for s in en_qa)
    assert all("says no about" in r["reason"] and "| reply:" in r["reason"] for r in qa_rejects)
    # translations: beside the template engine's Chinese, tags kept
    zh_model = [s for s in model if s["lang"] == "zh"]
    assert zh_model and any(s["generator"] == "template" for s in samples if s["lang"] == "zh")
    src = {s["id"]: s for s in samples}
    for s in zh_model:
        orig = src[s["meta"]["provenance"]["translated_from"]]
        assert not tag_problems([t["text"] for t in orig["turns"]], [t["text"] for t in s["turns"]])
        assert s["id"] == orig["id"].replace("#en#", "#zh#")
    mg = res.summary["model_generation"]
    assert mg["model_samples"] == len([s for s in model if s["lang"] == "en"]) and mg["translated"] == len(zh_model)
    assert mg["rejected"] == len([r for r in rejects if r["stage"] in ("generate", "translate")])
    assert mg["prompt_tokens"] == 100 * mg["exchanges"]
    assert mg["cost"] == pytest.approx((100 * 2.5 + 20 * 10.0) * mg["exchanges"] / 1e6, abs=1e-6)
    assert res.model_run["retries"] > 0  # the 429s were retried inside the client


def test_a_budget_stops_the_build_and_the_resumed_build_pays_for_nothing_twice(corpus, tmp_path):
    with ChatServer(responder) as srv:
        ref = build(recipe(corpus, srv.url), tmp_path / "ref")
        paid = sum(1 for _, kind in srv.log if kind == "text")
        srv.log.clear()
        srv.seen.clear()
        with pytest.raises(ExecutorError, match="budget reached: max_requests=40"):
            build(recipe(corpus, srv.url, budget={"max_requests": 40}), tmp_path / "out")
        sent = [k for k, kind in srv.log if kind == "text"]
        assert 40 <= len(sent) <= 40 + 4  # in flight when the budget was reached: at most `concurrency` more
        build(recipe(corpus, srv.url), tmp_path / "out", resume=True)
        answered = [k for k, kind in srv.log if kind == "text"]
    assert len(answered) == len(set(answered)) == paid, "a request was paid for twice"
    assert tree(tmp_path / "out") == tree(tmp_path / "ref")
    assert ref.summary["model_generation"]["exchanges"] == paid


def test_a_dry_run_lists_the_requests_and_sends_nothing(corpus, tmp_path):
    with ChatServer(responder) as srv:
        res = run_build(parse_recipe(recipe(corpus, srv.url)), tmp_path / "out", workers=1,
                        run=RunOptions(dry_run=True, chunk_records=9))
        assert srv.log == []
        listed = lines(tmp_path / "out" / "dry-run" / "requests.jsonl")
        assert res.summary["requests"] == len(listed) > 0
        assert {r["tag"] for r in listed} >= {"caption", "region_caption", "instruction_qa", "translate"}
        assert res.summary["estimated_cost"] > 0 and not (tmp_path / "out" / "samples.jsonl").exists()
        assert all("base64" not in json.dumps(r) for r in listed)
        real = run_build(parse_recipe(recipe(corpus, srv.url)), tmp_path / "out", workers=1,
                         run=RunOptions(resume=True, chunk_records=9))
        assert real.summary["model_generation"]["model_samples"] > 0
    assert not (tmp_path / "out" / "dry-run").exists()


def test_a_build_killed_during_generation_resumes_from_the_cache(corpus, tmp_path):
    """SIGKILL (a real `medvl build` process) right after the second generate chunk is journaled; `--resume`
    asks the model nothing it answered before and writes the uninterrupted build's outputs."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    def cli_build(recipe_path: Path, out: Path, *extra: str, env: dict | None = None):
        cmd = [sys.executable, "-c", "from medvl.cli.main import main; main()", "build", str(recipe_path), "-o",
               str(out), "--workers", "1", "--chunk-records", "9", *extra]
        return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)

    with ChatServer(responder) as srv:
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe(corpus, srv.url)))
        assert cli_build(path, tmp_path / "ref").returncode == 0
        paid = sum(1 for _, kind in srv.log if kind == "text")
        srv.log.clear()
        srv.seen.clear()
        killed = cli_build(path, tmp_path / "out", env={"MEDVL_FAILPOINT": "generate/@2"})
        assert killed.returncode == -signal.SIGKILL
        before = sum(1 for _, kind in srv.log if kind == "text")
        assert 0 < before < paid
        done = cli_build(path, tmp_path / "out", "--resume")
        assert done.returncode == 0, done.stderr[-2000:]
        answered = [k for k, kind in srv.log if kind == "text"]
    assert len(answered) == len(set(answered)) == paid, "a request was paid for twice"
    assert tree(tmp_path / "out") == tree(tmp_path / "ref")
    assert "answered from the cache" in " ".join((done.stdout + done.stderr).split())


def test_a_refused_key_stops_the_build_with_a_clear_error(corpus, tmp_path, monkeypatch):
    """A 401 refuses every request alike: the build stops naming the key's variable (no silent template build)."""
    monkeypatch.setenv("MEDVL_GEN_KEY", "sk-wrong-key-1234")
    with ChatServer(responder, api_key="sk-right-key-5678") as srv:
        with pytest.raises(ExecutorError, match="HTTP 401.*MEDVL_GEN_KEY") as err:
            build(recipe(corpus, srv.url, api_key_env="MEDVL_GEN_KEY"), tmp_path / "out")
    assert "sk-wrong" not in str(err.value)
