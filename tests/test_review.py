"""Issue 9, item 5: `medvl review BUILD --judge openai:NAME@URL` end to end against a real chat-completions
server on 127.0.0.1 (tests/chat_server.py) playing a judge: one dataset passes, one fails; an invalid JSON
reply and an out-of-range score are re-asked; the sample choice is deterministic; the report names the failing
dataset with its recipe source; a re-run asks nothing twice; a sample whose image is gone is listed, not fatal.

The build is a small real one: tiles and COCO boxes of scikit-image's immunohistochemistry slide (pathology)
and vessel masks of its retina photograph (fundus)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from chat_server import ChatServer, first_user_text, last_user_text
from click.testing import CliRunner

from medvl.cli.main import cli
from medvl.review.judge import CRITERIA
from medvl.review.sampling import choose, iter_samples


def small_build(root: Path) -> Path:
    """A small real build (about 36 records, 270 samples, 1 reject) in ``root/build``; seconds to make."""
    from medvl.demo import corpus as demo
    from medvl.pipeline.build import run_build
    from medvl.pipeline.recipe import parse_recipe

    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    demo.write_ihc(corpus, tile=128, stride=128)
    demo.write_retina(corpus, tile=320, stride=320)
    r = demo.demo_recipe()
    r["sources"] = [s for s in r["sources"] if s["name"] in ("ihc_tiles", "ihc_coco", "retina_seg")]
    r["exports"] = []
    run_build(parse_recipe(r, base_dir=root), root / "build", workers=1)  # source paths "corpus/..." under root
    return root / "build"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return small_build(tmp_path_factory.mktemp("review"))


@pytest.fixture
def build(built, tmp_path) -> Path:
    out = tmp_path / "build"
    shutil.copytree(built, out)
    return out


def verdict(score: int, why: str) -> str:
    return json.dumps({c: {"score": score, "comment": f"{why} ({c})"} for c in CRITERIA}
                      | {"overall_comment": why})


def judge(request: dict, attempt: int) -> dict:
    """Fundus samples are bad (4), pathology good (2 for tiles, 1 for boxed COCO samples). Tile samples first
    get prose instead of JSON, COCO samples first get an out-of-range score; both are re-asked."""
    text = first_user_text(request)
    reask = last_user_text(request).startswith("Your previous reply cannot be used")
    if "modality: fundus" in text:
        return {"text": verdict(4, "generic text that ignores the vessels")}
    if "region 'DAB-positive region'" in text:
        return {"text": verdict(1, "accurate") if reask else verdict(7, "off the scale")}
    return {"text": f"```json\n{verdict(2, 'fine')}\n```" if reask else "The sample looks fine to me."}


def run_review(build: Path, judge_spec: str, *extra: str):
    return CliRunner().invoke(cli, ["review", str(build), "--judge", judge_spec, "--samples", "4",
                                    "--concurrency", "4", *extra])


def test_judge_review_end_to_end(build):
    with ChatServer(judge) as srv:
        res = run_review(build, f"judge-model@{srv.url}")
        assert res.exit_code == 2 and "openai:NAME@URL" in res.output  # the scheme is required
        res = run_review(build, f"openai:judge-model@{srv.url}")
        first_log = list(srv.log)
    assert res.exit_code == 1, res.output  # a dataset failed
    report = json.loads((build / "review" / "report.json").read_text())
    ds = report["datasets"]
    assert set(ds) == {"ihc_coco", "ihc_tiles", "retina_seg"}
    assert {k: v["status"] for k, v in ds.items()} == {"ihc_coco": "pass", "ihc_tiles": "pass", "retina_seg": "fail"}
    assert ds["retina_seg"]["mean"] == {**{c: 4.0 for c in CRITERIA}, "overall": 4.0}
    assert ds["ihc_tiles"]["mean"]["overall"] == 2.0 and ds["ihc_coco"]["mean"]["overall"] == 1.0
    assert all(d["judged"] == d["chosen"] == 4 for d in ds.values())
    chosen = choose(iter_samples(build / "samples.jsonl"), 4, seed=0)  # the judged samples are the seeded choice
    assert {k: [s.id for s in v] for k, v in chosen.items()} == \
        {k: [s["id"] for s in report["samples"] if s["dataset"] == k] for k in ds}
    assert report["failing"] == ["retina_seg"] and report["passed"] is False
    regen = report["regenerate"]
    assert [r["dataset"] for r in regen] == ["retina_seg"]
    src = regen[0]["recipe_source"]
    assert src["name"] == "retina_seg" and src["format"] == "seg2d" and src["path"] == "corpus/retina_seg"
    assert regen[0]["generators"] == ["template"] and regen[0]["worst_templates"]
    # invalid JSON (prose) and an out-of-range score were re-asked and then accepted
    by_id = {s["id"]: s for s in report["samples"]}
    tiles = [s for s in by_id.values() if s["dataset"] == "ihc_tiles"]
    assert all("not valid JSON" in s["reasked"][0] for s in tiles)
    coco = [s for s in by_id.values() if s["dataset"] == "ihc_coco"]
    assert all("less than or equal to 5" in s["reasked"][0] for s in coco)
    assert report["usage"]["reasks"] == 8 and report["usage"]["requests"] == 12
    # the worst samples carry the judge's comments; the markdown names the failing source and its path
    worst = by_id[ds["retina_seg"]["worst"][0]]
    assert worst["comments"]["medical_accuracy"].startswith("generic text that ignores the vessels")
    md = (build / "review" / "report.md").read_text()
    failing = md.split("## Failing datasets")[1].split("##")[0]
    assert "**retina_seg**" in failing and src["path"] in failing and "seg2d" in failing
    assert "ihc_tiles" not in failing
    assert "| retina_seg | 4/4 of 143 | 4.00 | 4.00 | 4.00 | 4.00 | 4.00 | FAIL |" in md
    # every exchange reached the server once: 12 first asks and 8 re-asks (the scheme-less run sent nothing)
    assert len(first_log) == 20 and all(kind == "text" for _, kind in first_log)


def test_images_and_annotations_reach_the_judge(build):
    seen = []

    def capture(request, attempt):
        seen.append(request)
        return {"text": verdict(2, "ok")}

    with ChatServer(capture) as srv:
        res = CliRunner().invoke(cli, ["review", str(build), "--judge", f"openai:m@{srv.url}", "--samples", "2",
                                       "--dataset", "ihc_coco"])
    assert res.exit_code == 0, res.output
    assert len(seen) == 2
    report = json.loads((build / "review" / "report.json").read_text())
    assert list(report["datasets"]) == ["ihc_coco"] and report["passed"]
    for req, s in zip(sorted(seen, key=first_user_text), sorted(report["samples"], key=lambda s: s["id"])):
        system, user = req["messages"]
        assert system["role"] == "system"
        images = [p for p in user["content"] if p["type"] == "image_url"]
        assert len(images) == len(s["images"]) == 1
        assert images[0]["image_url"]["url"].startswith("data:image/png;base64,")
    texts = [first_user_text(r) for r in seen]
    assert all("- modality: pathology" in t and "region 'DAB-positive region' at [" in t for t in texts)
    assert req["temperature"] == 0.0


def test_sample_choice_is_deterministic(built):
    samples = list(iter_samples(built / "samples.jsonl"))
    a = choose(samples, 5, seed=0)
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    b = choose(shuffled, 5, seed=0)
    assert {k: [s.id for s in v] for k, v in a.items()} == {k: [s.id for s in v] for k, v in b.items()}
    c = choose(samples, 5, seed=1)
    assert {k: [s.id for s in v] for k, v in a.items()} != {k: [s.id for s in v] for k, v in c.items()}
    assert all(len(v) == 5 for v in a.values())
    # a smaller n gives a prefix of a larger n's choice; a dataset smaller than n is taken whole
    small = choose(samples, 3, seed=0)
    assert all([s.id for s in small[k]] == [s.id for s in a[k]][:3] for k in a)
    assert len(choose(samples, 1000, seed=0)["ihc_coco"]) == 35
    with pytest.raises(ValueError, match=">= 1"):
        choose(samples, 0)


def test_rerun_asks_nothing_twice_and_reports_the_same(build):
    with ChatServer(judge) as srv:
        args = ["review", str(build), "--judge", f"openai:judge-model@{srv.url}", "--samples", "3", "--seed", "3"]
        r1 = CliRunner().invoke(cli, args)
        n1 = len(srv.log)
        rep1 = json.loads((build / "review" / "report.json").read_text())
        r2 = CliRunner().invoke(cli, args)
        rep2 = json.loads((build / "review" / "report.json").read_text())
    assert r1.exit_code == r2.exit_code == 1
    assert n1 == 15 and len(srv.log) == n1, "the re-run sent requests"
    assert rep2["usage"]["requests"] == 0 and rep2["usage"]["cached"] == 15
    strip = lambda r: {k: v for k, v in r.items() if k != "usage"}  # noqa: E731
    assert json.dumps(strip(rep1), sort_keys=True) == json.dumps(strip(rep2), sort_keys=True)
    assert any((build / "review" / "cache").rglob("*.json"))


def test_one_unreadable_image_is_listed_and_the_rest_judged(build):
    samples = list(iter_samples(build / "samples.jsonl"))
    chosen = choose(samples, 3, seed=0)["ihc_tiles"]
    (build / chosen[0].images[0]).unlink()
    with ChatServer(lambda req, a: {"text": verdict(3, "average")}) as srv:
        res = CliRunner().invoke(cli, ["review", str(build), "--judge", f"openai:m@{srv.url}", "--samples", "3",
                                       "--pass-mean", "3"])
    assert res.exit_code == 0, res.output  # 3.0 <= 3.0 passes
    report = json.loads((build / "review" / "report.json").read_text())
    bad = [s for s in report["samples"] if "error" in s]
    assert [s["id"] for s in bad] == [chosen[0].id]
    assert "image file not found" in bad[0]["error"] and chosen[0].images[0] in bad[0]["error"]
    assert report["datasets"]["ihc_tiles"]["judged"] == 2 and report["datasets"]["ihc_tiles"]["errors"] == 1
    assert "could not score" in (build / "review" / "report.md").read_text()
    assert "1 sample(s) could not be scored" in res.output


def test_a_dataset_the_judge_never_scores_fails(build):
    with ChatServer(lambda req, a: {"text": "no idea"}) as srv:
        res = CliRunner().invoke(cli, ["review", str(build), "--judge", f"openai:m@{srv.url}", "--samples", "1",
                                       "--dataset", "ihc_coco"])
    assert res.exit_code == 1
    report = json.loads((build / "review" / "report.json").read_text())
    assert report["datasets"]["ihc_coco"]["status"] == "unjudged" and report["failing"] == ["ihc_coco"]
    assert "not valid JSON" in report["samples"][0]["error"]


def test_usage_errors(build, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["review", str(build)])
    assert res.exit_code == 2 and "--judge" in res.output and "--serve" in res.output
    res = runner.invoke(cli, ["review", str(build), "--judge", "openai:m@http://127.0.0.1:9/v1", "--dataset", "nope"])
    assert res.exit_code == 2 and "nope" in res.output and "ihc_tiles" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(cli, ["review", str(tmp_path / "empty"), "--judge", "openai:m@http://127.0.0.1:9/v1"])
    assert res.exit_code == 2 and "samples.jsonl is missing" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\n", encoding="utf-8")
    res = runner.invoke(cli, ["review", str(build), "--judge", "openai:m@http://127.0.0.1:9/v1", "--prompt", str(bad)])
    assert res.exit_code == 2 and "bad.yaml" in res.output and "user" in res.output
    bad.write_text("version: x\nuser: 'Score {conversation} against {labels}'\n", encoding="utf-8")
    res = runner.invoke(cli, ["review", str(build), "--judge", "openai:m@http://127.0.0.1:9/v1", "--prompt", str(bad)])
    assert res.exit_code == 2 and "unknown placeholder {labels}" in res.output
    assert "Exit status: 0 when every dataset passed; 1 when any dataset failed" in " ".join(
        runner.invoke(cli, ["review", "--help"]).output.split())


def test_dry_run_sends_nothing_and_counts_the_requests(build):
    with ChatServer(judge) as srv:
        res = CliRunner().invoke(cli, ["review", str(build), "--judge", f"openai:m@{srv.url}", "--samples", "2",
                                       "--dry-run"])
        assert res.exit_code == 0, res.output
        assert srv.log == []
    text = " ".join(res.output.split())
    assert "6 samples chosen from 3 dataset(s); 6 request(s) would be sent (0 answered from the cache)" in text
    assert not (build / "review" / "report.json").exists()


def test_serve_command_starts_the_page(build):
    """`medvl review BUILD --serve --port 0` as a user runs it: a process that prints its URL and serves."""
    proc = subprocess.Popen([sys.executable, "-m", "medvl.cli.main", "review", str(build), "--serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        with urllib.request.urlopen(url.group(0) + "api/facets", timeout=30) as r:
            facets = json.loads(r.read())
        assert facets["dataset"] == {"ihc_coco": 35, "ihc_tiles": 96, "retina_seg": 143}
        with urllib.request.urlopen(url.group(0), timeout=30) as r:
            assert b"medvl review" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert (build / "review" / "index.sqlite").is_file()
