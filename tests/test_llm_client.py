"""The shared OpenAI-compatible client against a real scripted server on 127.0.0.1: retries on every transport
failure, Retry-After, schema re-asks, the disk cache, the budget, dry runs and the key kept secret."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

import pytest
from pydantic import BaseModel

from chat_server import ChatServer, first_user_text, last_user_text
from medvl.llm import (Budget, BudgetExceeded, ChatRequest, LLMClient, LLMConfig, LLMError, Prices, read_ledger,
                       user_message)


@pytest.fixture(scope="module")
def retina_png(tmp_path_factory) -> Path:
    """The fundus photograph shipped with scikit-image, as a PNG."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("img") / "retina.png"
    Image.fromarray(data.retina()).resize((400, 400)).save(path)
    return path


class QA(BaseModel):
    question: str
    answer: str


def cfg(url: str, **kw) -> LLMConfig:
    base = dict(model="scripted", base_url=url, backoff=0.01, max_backoff=0.05, timeout=5.0, concurrency=4)
    base.update(kw)
    return LLMConfig(**base)


def asks(n: int, schema=None) -> list[ChatRequest]:
    return [ChatRequest(messages=[user_message(f"question {i}")], schema=schema) for i in range(n)]


def qa_json(req: dict) -> str:
    return json.dumps({"question": first_user_text(req), "answer": "yes"})


@pytest.mark.parametrize("failure", [{"drop": True}, {"reset": True}, {"truncate": True, "text": "{}"},
                                     {"status": 500}, {"status": 503, "headers": {"Retry-After": "0"}},
                                     {"status": 200, "body": "<html>proxy error</html>"}])
def test_every_transport_failure_is_retried_and_each_question_is_answered_once(failure):
    """The first attempt of every question fails one way; each question still ends with exactly one complete
    answer, and no question is sent again once it has one."""
    def responder(req, attempt):
        return failure if attempt == 0 else {"text": qa_json(req)}

    with ChatServer(responder) as srv:
        client = LLMClient(cfg(srv.url))
        out = client.run(asks(12, QA))
        assert all(not isinstance(r, LLMError) for r in out), out
        assert [r.parsed.question for r in out] == [f"question {i}" for i in range(12)]
        assert set(srv.completed().values()) == {1} and len(srv.completed()) == 12
        assert client.summary()["retries"] == 12 and client.summary()["requests"] == 12


def test_invalid_json_then_valid_is_reasked_with_the_problem():
    def responder(req, attempt):
        if len(req["messages"]) == 1:
            return {"text": "Sure! Here is the pair: question? answer."}
        assert "not valid JSON" in last_user_text(req)
        return {"text": "```json\n" + json.dumps({"question": "q", "answer": "a"}) + "\n```"}

    with ChatServer(responder) as srv:
        reply = LLMClient(cfg(srv.url)).chat(asks(1, QA)[0])
    assert reply.parsed == QA(question="q", answer="a")
    assert reply.exchanges == 2 and "not valid JSON" in reply.rejected[0]


def test_replies_failing_checks_end_as_invalid_after_the_bounded_reasks():
    def check(qa: QA) -> list[str]:
        return ["the answer states the label"] if "tumour" in qa.answer else []

    with ChatServer(lambda req, a: {"text": json.dumps({"question": "q", "answer": "a tumour"})}) as srv:
        client = LLMClient(cfg(srv.url, max_reasks=2))
        [err] = client.run([ChatRequest(messages=[user_message("x")], schema=QA, check=check)])
        assert isinstance(err, LLMError) and err.kind == "invalid"
        assert "states the label" in str(err) and "tumour" in err.last_text
        assert client.summary()["requests"] == 1 and client.summary()["reasks"] == 2


def test_retry_after_is_honoured_and_pauses_the_other_requests():
    stamps: list[float] = []

    def responder(req, attempt):
        stamps.append(time.monotonic())
        if len(stamps) <= 2:
            return {"status": 429, "headers": {"Retry-After": "0.6"}, "body": "slow down"}
        return {"text": "ok"}

    with ChatServer(responder) as srv:
        out = LLMClient(cfg(srv.url, concurrency=1)).run(asks(3))
    assert [r.text for r in out] == ["ok"] * 3
    # after each 429 the next request came no sooner than Retry-After (a lower bound, never flaky under load)
    assert stamps[1] - stamps[0] >= 0.6 and stamps[2] - stamps[1] >= 0.6


def test_a_retry_after_beyond_the_limit_fails_the_request_clearly():
    with ChatServer(lambda req, a: {"status": 429, "headers": {"Retry-After": "3600"}}) as srv:
        [err] = LLMClient(cfg(srv.url, max_retry_after=10)).run(asks(1))
    assert isinstance(err, LLMError) and "3600" in str(err) and "max_retry_after" in str(err)


def test_slow_replies_past_the_timeout_are_retried():
    with ChatServer(lambda req, a: {"text": "late", "delay": 1.5} if a == 0 else {"text": "on time"}) as srv:
        out = LLMClient(cfg(srv.url, timeout=0.5)).run(asks(2))
    assert [r.text for r in out] == ["on time", "on time"]


def test_retries_are_bounded_and_the_error_says_what_happened():
    with ChatServer(lambda req, a: {"status": 502, "body": "bad gateway"}) as srv:
        client = LLMClient(cfg(srv.url, max_retries=3))
        [err] = client.run(asks(1))
        assert isinstance(err, LLMError) and err.kind == "transport"
        assert "after 4 attempts" in str(err) and "HTTP 502" in str(err)
        assert len(srv.log) == 4


def test_a_refusal_is_not_retried():
    with ChatServer(lambda req, a: {"status": 400, "body": "model not found"}) as srv:
        [err] = LLMClient(cfg(srv.url)).run(asks(1))
        assert isinstance(err, LLMError) and err.kind == "http" and "model not found" in str(err)
        assert len(srv.log) == 1


def test_the_cache_pays_for_nothing_twice(tmp_path: Path):
    with ChatServer(lambda req, a: {"text": qa_json(req)}) as srv:
        first = LLMClient(cfg(srv.url), cache_dir=tmp_path / "cache").run(asks(5, QA))
        again = LLMClient(cfg(srv.url), cache_dir=tmp_path / "cache")
        second = again.run(asks(5, QA))
        assert len(srv.log) == 5
    assert [r.text for r in first] == [r.text for r in second]
    assert all(r.cached for r in second) and again.summary()["cached"] == 5 and again.summary()["requests"] == 0


def test_images_are_sent_as_data_urls_and_keyed_by_hash(tmp_path: Path, retina_png: Path):
    seen = []

    def responder(req, attempt):
        seen.append(req["messages"][0]["content"][0]["image_url"]["url"][:22])
        return {"text": "a fundus photograph"}

    with ChatServer(responder) as srv:
        LLMClient(cfg(srv.url), cache_dir=tmp_path / "c").run(
            [ChatRequest(messages=[user_message("describe", images=[retina_png])])])
    assert seen == ["data:image/png;base64,"]
    entry = next((tmp_path / "c").glob("*/*.json")).read_text()
    assert "base64" not in entry and "a fundus photograph" in entry


def test_the_budget_stops_cleanly_and_a_resumed_run_pays_only_for_the_rest(tmp_path: Path):
    with ChatServer(lambda req, a: {"text": "ok", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}) as srv:
        limited = LLMClient(cfg(srv.url, concurrency=1, budget=Budget(max_requests=3),
                                prices=Prices(prompt_per_mtok=2.5, completion_per_mtok=10.0)),
                            cache_dir=tmp_path / "cache", ledger_dir=tmp_path / "ledger1")
        out = limited.run(asks(5))
        assert [type(r).__name__ for r in out] == ["Reply"] * 3 + ["BudgetExceeded"] * 2
        assert "max_requests=3" in str(out[3]) and "resume" in str(out[3])
        s = limited.summary()
        assert (s["requests"], s["prompt_tokens"], s["budget_stops"]) == (3, 3000, 2)
        assert s["cost"] == pytest.approx(3 * (1000 * 2.5 + 100 * 10.0) / 1e6)
        resumed = LLMClient(cfg(srv.url), cache_dir=tmp_path / "cache")
        assert all(not isinstance(r, LLMError) for r in resumed.run(asks(5)))
        assert len(srv.log) == 5 and resumed.summary()["cached"] == 3


def test_a_token_budget_counts_every_process_of_the_run(tmp_path: Path):
    with ChatServer(lambda req, a: {"text": "ok", "usage": {"prompt_tokens": 60, "completion_tokens": 40}}) as srv:
        a = LLMClient(cfg(srv.url, concurrency=1, budget=Budget(max_tokens=300)), ledger_dir=tmp_path / "l")
        assert all(not isinstance(r, LLMError) for r in a.run(asks(2)))  # 200 tokens
        b = LLMClient(cfg(srv.url, concurrency=1, budget=Budget(max_tokens=300)), ledger_dir=tmp_path / "l")
        out = b.run([ChatRequest(messages=[user_message(f"other {i}")]) for i in range(3)])
    assert [isinstance(r, BudgetExceeded) for r in out] == [False, True, True]  # 200 + 100 = the budget
    assert read_ledger(tmp_path / "l").prompt_tokens == 180


def test_a_dry_run_sends_nothing_and_estimates_the_cost(tmp_path: Path, retina_png: Path):
    with ChatServer(lambda req, a: {"text": "never"}) as srv:
        client = LLMClient(cfg(srv.url, prices=Prices(prompt_per_mtok=2.5, completion_per_mtok=10.0),
                               max_tokens=200), dry_run=True)
        out = client.run([ChatRequest(messages=[user_message("describe " * 40, images=[retina_png])], tag="caption")])
        assert srv.log == []
    assert isinstance(out[0], LLMError) and out[0].kind == "dry_run"
    [req] = client.dry_requests
    assert req["tag"] == "caption" and req["max_tokens"] == 200 and "sha256" in req["messages"][0]["content"][0]
    s = client.summary()
    assert s["dry_run_requests"] == 1 and s["estimated_prompt_tokens"] > 85 + 60
    assert s["estimated_cost"] == pytest.approx((s["estimated_prompt_tokens"] * 2.5 + 200 * 10.0) / 1e6, abs=1e-6)


def test_the_key_is_sent_but_never_logged_cached_or_shown(tmp_path: Path, monkeypatch, caplog):
    secret = "sk-test-5ECRET-0123456789"
    monkeypatch.setenv("MEDVL_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)

    def responder(req, attempt):
        if first_user_text(req) == "echo":  # a server that echoes the credentials in its error
            return {"status": 400, "body": f"invalid request; Authorization: Bearer {secret}"}
        return {"text": "fine"}

    with ChatServer(responder, api_key=secret) as srv:
        client = LLMClient(cfg(srv.url, api_key_env="MEDVL_TEST_KEY"), cache_dir=tmp_path / "cache",
                           ledger_dir=tmp_path / "ledger")
        out = client.run([ChatRequest(messages=[user_message(t)]) for t in ("hello", "echo")])
        assert srv.auth_headers[0] == f"Bearer {secret}"
        wrong = LLMClient(cfg(srv.url, api_key_env="MEDVL_TEST_KEY"), api_key="sk-wrong-key-000")
        [refused] = wrong.run(asks(1))
    assert out[0].text == "fine" and isinstance(out[1], LLMError)
    assert "***" in str(out[1]) and secret not in str(out[1])
    assert "401" in str(refused) and "MEDVL_TEST_KEY" in str(refused) and "sk-wrong" not in str(refused)
    assert refused.kind == "fatal" and out[1].kind == "http"  # a bad key stops a run; one refused request does not
    texts = [str(client.summary()), repr(client), caplog.text, str(client.config.model_dump())]
    texts += [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(secret in t for t in texts)


def test_concurrent_clients_share_one_cache_folder(tmp_path: Path):
    from concurrent.futures import ThreadPoolExecutor

    with ChatServer(lambda req, a: {"text": "shared " + first_user_text(req), "delay": 0.01}) as srv:
        def run(_):
            return [r.text for r in LLMClient(cfg(srv.url), cache_dir=tmp_path / "cache").run(asks(20))]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(run, range(4)))
    assert all(r == results[0] for r in results)
    assert len(list((tmp_path / "cache").glob("*/*.json"))) == 20
    assert not list((tmp_path / "cache").glob("*/*.tmp"))


def test_concurrency_is_limited():
    active, peak = Counter(), Counter()
    import threading
    lock = threading.Lock()

    def responder(req, attempt):
        with lock:
            active["n"] += 1
            peak["n"] = max(peak["n"], active["n"])
        time.sleep(0.05)
        with lock:
            active["n"] -= 1
        return {"text": "ok"}

    with ChatServer(responder) as srv:
        LLMClient(cfg(srv.url, concurrency=3)).run(asks(12))
    assert peak["n"] == 3
