"""One real medvl demo build per test session for the training-data tests (the demo corpus laid out by
``medvl.demo.corpus`` and built with the llava, parquet, mixture and messages exports), plus medvl's tiny
byte-level BPE tokenizer (lossless decoding, so labels can be checked against the answer texts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_CACHE: dict[str, Any] = {}
N_IMAGE_TOKENS = 196


def demo_build(tmp_path_factory) -> Path:
    """The build folder of the demo, built once per session."""
    if "build" not in _CACHE:
        from medvl.demo import corpus as demo
        from medvl.pipeline.build import run_build
        from medvl.pipeline.recipe import parse_recipe

        root = tmp_path_factory.mktemp("train-demo")
        recipe = demo.layout(root / "corpus")
        for s in recipe["sources"]:
            s["path"] = str(root / s["path"])
        recipe["exports"] = ["llava", "parquet", "mixture", "messages"]
        run_build(parse_recipe(recipe), root / "build")
        _CACHE["build"] = root / "build"
    return _CACHE["build"]


def tokenizer():
    """medvl's tiny tokenizer with the ChatML and ``<image>`` special tokens (built once)."""
    if "tok" not in _CACHE:
        from medvl.model.tiny import build_tokenizer

        _CACHE["tok"] = build_tokenizer()
    return _CACHE["tok"]


def chat_template() -> str:
    from medvl.model import chat_template as tpl

    return tpl()


def demo_samples(tmp_path_factory, max_length: int = 2048):
    """The demo's train split read from LLaVA JSON and tokenized: (conversations, samples, rejects, stats)."""
    key = f"samples{max_length}"
    if key not in _CACHE:
        from medvl.train.data import load_training_data
        from medvl.train.tokenize import tokenize_all

        convs, rejects = load_training_data(demo_build(tmp_path_factory) / "llava" / "train.json", seed=0)
        assert not rejects, rejects[:3]
        tok = tokenizer()
        samples, trejects, stats = tokenize_all(convs, tok, chat_template=chat_template(),
                                                image_token_id=tok.convert_tokens_to_ids("<image>"),
                                                n_image_tokens=N_IMAGE_TOKENS, max_length=max_length)
        _CACHE[key] = (convs, samples, trejects, stats)
    return _CACHE[key]
