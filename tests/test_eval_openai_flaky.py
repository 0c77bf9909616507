"""Issue 12: `medvl eval` with an `openai:` model never pays twice for an answer on a flaky network.

A real server on 127.0.0.1 drops the first attempt of every question one of three ways (close without a response,
TCP reset, headers and half the body then close). The client retries each request inside its own bounded loop,
the batch keeps every answer it received, and each question ends with exactly one complete answer and no error.
A run SIGKILLed mid-way and resumed asks no question again once it was answered (replies are cached in the run
folder the moment they arrive)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from chat_server import ChatServer, last_user_text
from click.testing import CliRunner
from eval_fixtures import SLAKE_TEST, write_slake

from medvl.cli.main import cli

FAULTS = ({"drop": True}, {"reset": True}, {"truncate": True, "text": "half"})


def question_of(req: dict) -> str:
    return last_user_text(req).split("\n")[0]


def flaky(req: dict, attempt: int) -> dict:
    """The first attempt of each question fails (the way depends on the question), the second answers."""
    q = question_of(req)
    if attempt == 0:
        return FAULTS[sum(map(ord, q)) % 3]
    return {"text": "Yes"}


@pytest.fixture(scope="module")
def slake(tmp_path_factory) -> Path:
    return write_slake(tmp_path_factory.mktemp("slake"))


def answers_per_question(srv: ChatServer) -> Counter:
    return Counter(json.loads(k)[-1]["content"][-1]["text"] for k, kind in srv.log if kind == "text")


def test_dropped_reset_and_truncated_replies_are_paid_once(slake: Path, tmp_path: Path):
    with ChatServer(flaky) as srv:
        res = CliRunner().invoke(cli, ["eval", "slake", "--data", str(slake), "--option", "lang=all", "--model",
                                       f"openai:flaky-model@{srv.url}", "--model-option", "concurrency=4",
                                       "--model-option", "backoff=0.01", "-o", str(tmp_path / "run")])
        assert res.exit_code == 0, res.output
        kinds = Counter(kind for _, kind in srv.log)
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == len(SLAKE_TEST) and not any(r.get("error") for r in rows)
    per_q = answers_per_question(srv)
    assert len(per_q) == len(SLAKE_TEST) and set(per_q.values()) == {1}, per_q  # one complete answer each
    assert kinds["drop"] + kinds["reset"] + kinds["truncate"] == len(SLAKE_TEST)  # every first attempt failed
    assert min(kinds["drop"], kinds["reset"], kinds["truncate"]) > 0


def test_a_killed_run_resumes_without_asking_an_answered_question_again(slake: Path, tmp_path: Path):
    proc: dict[str, subprocess.Popen] = {}
    answered = Counter()
    lock = threading.Lock()

    def killing(req: dict, attempt: int) -> dict:
        with lock:
            if "victim" in proc and sum(answered.values()) >= len(SLAKE_TEST) // 2:
                proc.pop("victim").send_signal(signal.SIGKILL)  # the run dies while asking the next question
                return {"drop": True}
        out = flaky(req, attempt)
        if "text" in out and not out.get("truncate"):
            with lock:
                answered[question_of(req)] += 1
        return out

    cmd = [sys.executable, "-c", "from medvl.cli.main import main; main()", "eval", "slake", "--data", str(slake),
           "--option", "lang=all", "--model-option", "concurrency=1", "--model-option", "backoff=0.01",
           "--batch-size", "4", "-o", str(tmp_path / "run")]
    with ChatServer(killing) as srv:
        model = ["--model", f"openai:flaky-model@{srv.url}"]
        proc["victim"] = p = subprocess.Popen(cmd + model, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              env=os.environ.copy())
        p.wait(timeout=300)
        assert p.returncode == -signal.SIGKILL
        first = sum(answered.values())
        assert 0 < first < len(SLAKE_TEST)
        done = subprocess.run(cmd + model, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    per_q = answers_per_question(srv)
    assert len(per_q) == len(SLAKE_TEST) and set(per_q.values()) == {1}, per_q
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == len(SLAKE_TEST) and not any(r.get("error") for r in rows)
