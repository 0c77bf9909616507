"""An optional LLM judge behind an OpenAI-compatible endpoint (``--judge openai:NAME@URL``).

It is asked only about replies the rules could not parse (and, when enabled, open-ended items). Its verdicts
are cached in a JSONL keyed by sha256 of (judge model, prompt), so reruns never re-ask. A judge that fails
or answers off-format leaves the item unparsed: no random option is ever substituted."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

from medvl.core.yamlio import load_data_yaml
from medvl.eval.adapters._base import AdapterError
from medvl.llm import ChatRequest, LLMClient, LLMConfig, LLMError, parse_target, user_message
from medvl.eval.types import EvalItem, ScoreResult

log = logging.getLogger("medvl.eval.judge")
PROMPTS: dict[str, str] = load_data_yaml((Path(__file__).parent / "data" / "judge.yaml").read_text(encoding="utf-8"))
_LETTER = re.compile(r"^\W*(?:answer\s*(?:is)?\s*:?\s*)?\(?([A-Z])\)?\W*$", re.IGNORECASE)
_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def cache_key(model: str, prompt: str) -> str:
    return hashlib.sha256(f"{model}\n{prompt}".encode("utf-8")).hexdigest()


class LLMJudge:
    """Resolves unparsed replies (and optionally grades open answers) with a judge model."""

    def __init__(self, client: Any, model: str, cache_path: Path | None = None, judge_open: bool = False):
        self.client = client
        self.model = model
        self.cache_path = Path(cache_path) if cache_path else None
        self.judge_open = judge_open
        self._lock = threading.Lock()
        self.cache: dict[str, str] = {}
        self.counts = {"asked": 0, "cached": 0, "resolved": 0, "unresolved": 0, "failed": 0}
        if self.cache_path and self.cache_path.is_file():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.cache[row["key"]] = row["reply"]
                except (ValueError, KeyError, TypeError):
                    continue  # a truncated line from an interrupted run: that verdict is asked again

    @classmethod
    def from_spec(cls, spec: str, cache_path: Path | None = None, judge_open: bool = False, **options: Any) -> "LLMJudge":
        """``openai:NAME@URL`` -> a judge using the openai adapter's client."""
        scheme, _, target = spec.partition(":")
        if scheme != "openai" or not target:
            raise AdapterError(f"judge spec {spec!r} must be openai:NAME@URL (an OpenAI-compatible endpoint)")
        try:
            name, url = parse_target(target)
        except ValueError as e:
            raise AdapterError(f"judge {e}") from e
        api_key = options.pop("api_key", None)
        config = LLMConfig(model=name, base_url=url, temperature=0.0, max_reasks=0, **options)
        return cls(LLMClient(config, api_key=api_key), name, cache_path, judge_open)

    def wants(self, item: EvalItem, res: ScoreResult) -> bool:
        """Whether the judge should look at this scored item."""
        if res.unparsed and item.options:
            return True
        return self.judge_open and item.answer_type == "open" and item.answer is not None

    def ask(self, prompt: str) -> str | None:
        """The judge's reply (cached), or None when it failed to answer."""
        key = cache_key(self.model, prompt)
        with self._lock:
            if key in self.cache:
                self.counts["cached"] += 1
                return self.cache[key]
        try:
            reply = self.client.chat(ChatRequest(messages=[user_message(prompt)], max_tokens=8)).text
        except LLMError as e:
            log.warning("judge %s failed: %s", self.model, e)
            with self._lock:
                self.counts["failed"] += 1
            return None
        with self._lock:
            self.counts["asked"] += 1
            self.cache[key] = reply
            if self.cache_path:
                with self.cache_path.open("a", encoding="utf-8") as fh:
                    row = {"key": key, "model": self.model, "prompt": prompt, "reply": reply}
                    fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        log.info("judge %s: %r", self.model, reply)
        return reply

    def resolve(self, item: EvalItem, response: str, res: ScoreResult) -> ScoreResult:
        """A new ScoreResult from the judge's verdict, or ``res`` (with the judge's reply noted) unchanged."""
        if item.options:
            options = "\n".join(f"{k}. {v}" for k, v in item.options.items())
            prompt = PROMPTS["choice"].format(question=item.question, options=options, response=response)
        else:
            prompt = PROMPTS["open"].format(question=item.question, gold=item.gold_text, response=response)
        reply = self.ask(prompt)
        note = {"judge": {"model": self.model, "reply": reply}}
        if reply is None:
            return dataclasses.replace(res, detail={**res.detail, **note})
        if item.options:
            m = _LETTER.match(reply.strip())
            letter = m.group(1).upper() if m else None
            if letter not in item.options:
                self._count("unresolved")
                return dataclasses.replace(res, detail={**res.detail, **note})
            correct = None if item.answer is None else letter == item.answer
            self._count("resolved")
            return ScoreResult(parsed=letter, correct=correct, score=float(bool(correct)), unparsed=False,
                               detail={**res.detail, **note, "parsed_by": "judge"})
        m = _YES_NO.match(reply.strip())
        if not m:
            self._count("unresolved")
            return dataclasses.replace(res, detail={**res.detail, **note})
        ok = m.group(1).lower() == "yes"
        self._count("resolved")
        return ScoreResult(parsed=response.strip(), correct=ok, score=float(ok), unparsed=False,
                           detail={**res.detail, **note, "rule_score": res.score, "parsed_by": "judge"})

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def stats(self) -> dict[str, Any]:
        return {"model": self.model, **self.counts}
