"""Issue 8, item 6: the generate stage takes generators that are asynchronous and batched, keep their own
on-disk cache, and go on where they stopped.

The generator here stands in for a model endpoint (the real OpenAI-compatible client is the next issue's):
each chunk's records are answered by coroutines under a concurrency limit that finish out of order, every
answer is cached in the folder the stage hands over (`open_cache`), and each real request is logged. A build
whose "endpoint" fails after some requests stops with an error; the same build resumed asks nothing twice
and its outputs equal an uninterrupted build's byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import ClassVar

import pytest
from build_helpers import ihc_recipe, tree

from medvl.executor import ExecutorError
from medvl.generate.base import GENERATORS, Generator
from medvl.pipeline.build import RunOptions, run_build
from medvl.pipeline.recipe import parse_recipe



class EndpointDown(RuntimeError):
    pass


@GENERATORS.register("test_async_cached")
class AsyncCachedGenerator(Generator):
    """One caption per record from an asynchronous, cached 'endpoint'."""

    log: ClassVar[Path | None] = None  # one line per real request (record id)
    fail_after: ClassVar[int | None] = None  # requests answered before the endpoint goes down
    answered: ClassVar[int] = 0
    concurrency: ClassVar[int] = 4
    peak: ClassVar[int] = 0

    def open_cache(self, folder: str | None) -> None:
        self.cache = Path(folder) if folder else None
        if self.cache is not None:
            self.cache.mkdir(parents=True, exist_ok=True)

    def generate(self, record):
        return self.generate_batch([record])[0]

    def generate_batch(self, records):
        return asyncio.run(self._batch(records))

    async def _batch(self, records):
        sem = asyncio.Semaphore(self.concurrency)
        running = [0]

        async def one(i, r):
            key = hashlib.sha256(f"{self.seed}|{r.id}".encode()).hexdigest()
            cached = self.cache / f"{key}.json" if self.cache is not None else None
            if cached is not None and cached.is_file():
                text = json.loads(cached.read_text(encoding="utf-8"))["text"]
            else:
                async with sem:
                    running[0] += 1
                    type(self).peak = max(type(self).peak, running[0])
                    await asyncio.sleep(0.002 * ((i * 7) % 5))  # replies arrive out of order
                    running[0] -= 1
                    if self.fail_after is not None and type(self).answered >= self.fail_after:
                        raise EndpointDown("the endpoint went away")
                    type(self).answered += 1
                    with open(self.log, "a", encoding="utf-8") as f:
                        f.write(r.id + "\n")
                    text = f"A {r.modality} image from {r.dataset} with {len(r.labels)} label(s)."
                if cached is not None:
                    tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
                    tmp.write_text(json.dumps({"text": text}), encoding="utf-8")
                    tmp.replace(cached)  # a killed writer never leaves a half entry under the final name
            lang = self.choose_lang(r.id, "caption", 0)
            return [self.make_sample(r, "caption", lang, 0, ["Describe the image.", text], ["endpoint-v1"])]

        return await asyncio.gather(*(one(i, r) for i, r in enumerate(records)))


@pytest.fixture(scope="module")
def recipe_dict(tmp_path_factory) -> dict:
    r = ihc_recipe(tmp_path_factory.mktemp("async") / "corpus")
    r["generation"] = {"generator": "test_async_cached", "kinds": {"caption": 1}}
    return r


def _build(recipe_dict: dict, out: Path, log: Path, fail_after: int | None = None, resume: bool = False):
    AsyncCachedGenerator.log, AsyncCachedGenerator.fail_after = log, fail_after
    AsyncCachedGenerator.answered = 0
    return run_build(parse_recipe(recipe_dict), out, workers=1, run=RunOptions(resume=resume, chunk_records=7))


def test_async_generator_resumes_without_asking_twice(recipe_dict, tmp_path):
    ref = _build(recipe_dict, tmp_path / "ref", tmp_path / "ref.log")
    n = ref.summary["records"]
    assert n >= 20 and ref.summary["samples"] == n
    assert len((tmp_path / "ref.log").read_text().split()) == n  # one request per record
    assert AsyncCachedGenerator.peak > 1  # requests of a chunk were in flight together

    log = tmp_path / "run.log"
    with pytest.raises(ExecutorError, match="run_generate_task: EndpointDown: the endpoint went away"):
        _build(recipe_dict, tmp_path / "out", log, fail_after=n // 2)
    asked_first = log.read_text().split()
    assert len(asked_first) == n // 2
    assert (tmp_path / "out" / ".medvl-work" / "generate" / "cache").is_dir()

    _build(recipe_dict, tmp_path / "out", log, resume=True)
    asked = log.read_text().split()
    assert sorted(asked) == sorted(set(asked)), "a request was sent twice"
    assert len(asked) == n
    assert tree(tmp_path / "out") == tree(tmp_path / "ref")
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert {s["generator"] for s in samples} == {"test_async_cached"}
