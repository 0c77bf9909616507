"""The OpenAI-compatible chat-completions client every model call of medvl goes through (the build's
generators, the eval ``openai:`` adapter, the judges of ``medvl eval`` and ``medvl review``).

- async (aiohttp) with a concurrency limit; :meth:`LLMClient.run` is the synchronous entry point;
- bounded retries with exponential backoff and full jitter on 408/409/429/5xx, timeouts, refused or dropped
  connections, resets, bodies cut off mid-reply and invalid JSON in a 200; ``Retry-After`` (seconds or an
  HTTP date) is honoured, and a 429 pauses every request of the client for that long, not just the one;
- replies validated against a pydantic schema and/or a ``check`` function, with a bounded number of re-asks
  (the problems are told to the model);
- an on-disk cache (:class:`medvl.llm.cache.DiskCache`) consulted before anything is sent, so a re-run or a
  resumed run pays for nothing twice;
- usage and cost in a :class:`medvl.llm.ledger.Ledger`, a per-run budget, and a dry-run mode that records the
  requests it would send with a token estimate instead of sending them;
- the API key is read from the environment, sent only in the Authorization header and redacted from every
  error message; it is never part of a cache key, a cache entry, a log line or ``repr``."""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import json
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from medvl.llm.cache import DiskCache
from medvl.llm.config import LLMConfig
from medvl.llm.ledger import Ledger, Usage, budget_reason
from medvl.llm.messages import cache_key, estimate_prompt_tokens, keyed_messages, text_message

log = logging.getLogger("medvl.llm")
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
REASK = ("Your previous reply cannot be used: {problems}. Reply again, following every rule of the first "
         "message{json}.")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
T = TypeVar("T")
# the HTTP session and concurrency slots of the running ``LLMClient.run_async`` (one per event loop, so one
# client may be used from several threads at once)
_OPEN: contextvars.ContextVar[tuple[Any, asyncio.Semaphore, dict[str, asyncio.Future]] | None] = \
    contextvars.ContextVar("medvl_llm", default=None)


class LLMError(RuntimeError):
    """A request that got no usable reply. ``kind``: "http" (a refusal of this request, such as 400), "fatal" (a
    refusal of every request: 401/403 key, 404 model or endpoint), "transport" (retries used up), "invalid" (the reply failed its schema or checks after the re-asks), "budget", "dry_run".
    ``problems`` and ``last_text`` say what was wrong with the last reply of an "invalid" request."""

    def __init__(self, message: str, kind: str = "http", problems: list[str] | None = None, last_text: str = "",
                 usage: dict[str, int] | None = None):
        super().__init__(message)
        self.kind = kind
        self.problems = problems or []
        self.last_text = last_text
        self.usage = usage or {}  # tokens of the exchanges that produced the rejected replies


class BudgetExceeded(LLMError):
    def __init__(self, message: str):
        super().__init__(message, kind="budget")


@dataclass
class ChatRequest:
    """One logical request: messages plus what a usable reply is. ``schema``: a pydantic model the reply's JSON
    must validate against (``Reply.parsed`` is the instance); ``check``: a function of the parsed reply (or the
    text when there is no schema) returning problems, each re-asked like a schema error."""

    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    schema: type[BaseModel] | None = None
    check: Callable[[Any], list[str]] | None = None
    max_reasks: int | None = None
    tag: str = ""  # what the request is for (shown by dry runs)


@dataclass
class Reply:
    text: str
    parsed: Any = None
    cached: bool = False  # every exchange of this request came from the cache
    rejected: list[str] = field(default_factory=list)  # problems of earlier replies that were re-asked
    exchanges: int = 1
    usage: dict[str, int] = field(default_factory=dict)  # tokens of every exchange (from the cache: as first paid)


def extract_json(text: str) -> Any:
    """The JSON value in a reply: the whole text, a fenced ```json block, or the outermost {...}."""
    t = text.strip()
    m = _FENCE.match(t)
    if m:
        t = m.group(1)
    try:
        return json.loads(t)
    except ValueError:
        pass
    i, j = t.find("{"), t.rfind("}")
    if i >= 0 and j > i:
        return json.loads(t[i:j + 1])
    raise ValueError("no JSON object in the reply")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


class LLMClient:
    """One model on one OpenAI-compatible server. ``cache_dir``: the reply cache (None: no cache);
    ``ledger_dir``: where the processes of one run share their usage for the budget and the summary."""

    def __init__(self, config: LLMConfig, cache_dir: str | Path | None = None, ledger_dir: str | Path | None = None,
                 dry_run: bool = False, api_key: str | None = None):
        self.config = config
        self.cache = DiskCache(cache_dir) if cache_dir else None
        self.ledger = Ledger(ledger_dir)
        self.dry_run = dry_run
        self.dry_requests: list[dict[str, Any]] = []
        self.__key = api_key if api_key is not None else os.environ.get(config.api_key_env) or None
        self._pause_until = 0.0
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"LLMClient(model={self.config.model!r}, endpoint={self.config.endpoint!r})"

    # public API --------------------------------------------------------------------------------
    def run(self, requests: list[ChatRequest]) -> list[Reply | LLMError]:
        """Answer every request (concurrently); per request a Reply or the LLMError that ended it."""
        return self.run_async(self.gather, requests)

    def chat(self, request: ChatRequest) -> Reply:
        """One request, synchronously; raises LLMError."""
        out = self.run([request])[0]
        if isinstance(out, LLMError):
            raise out
        return out

    def run_async(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``asyncio.run(fn(*args))`` with this client's HTTP session open for ``fn``'s calls to :meth:`achat`."""
        async def main() -> T:
            async with self.session():
                return await fn(*args)
        return asyncio.run(main())

    async def gather(self, requests: list[ChatRequest]) -> list[Reply | LLMError]:
        async def one(r: ChatRequest) -> Reply | LLMError:
            try:
                return await self.achat(r)
            except LLMError as e:
                return e
        return list(await asyncio.gather(*(one(r) for r in requests)))

    def session(self) -> "_Session":
        return _Session(self)

    async def achat(self, req: ChatRequest) -> Reply:
        """Ask, validate, re-ask on problems; raises LLMError when no usable reply came."""
        max_reasks = self.config.max_reasks if req.max_reasks is None else req.max_reasks
        messages = list(req.messages)
        rejected: list[str] = []
        all_cached = True
        text = ""
        spent = {"prompt_tokens": 0, "completion_tokens": 0}
        for ask in range(max_reasks + 1):
            text, cached, usage = await self._complete(messages, req, reask=ask > 0)
            all_cached &= cached
            for k in spent:
                spent[k] += int(usage.get(k, 0))
            parsed, problems = self._validate(text, req)
            if not problems:
                return Reply(text=text, parsed=parsed, cached=all_cached, rejected=rejected, exchanges=ask + 1,
                             usage=spent)
            rejected.append("; ".join(problems))
            hint = " (only the JSON object)" if req.schema is not None else ""
            messages = messages + [text_message("assistant", text),
                                   text_message("user", REASK.format(problems="; ".join(problems), json=hint))]
        raise LLMError(f"{self.config.model}: the reply failed its checks after {max_reasks} re-ask(s): "
                       f"{rejected[-1]}", kind="invalid", problems=rejected[-1].split("; "), last_text=text,
                       usage=spent)

    def usage(self) -> Usage:
        """This run's usage (all processes sharing the ledger folder)."""
        return self.ledger.total()

    def summary(self) -> dict[str, Any]:
        """Requests, cache hits, retries, tokens and cost of the run so far (never the key)."""
        u = self.usage()
        out = {"model": self.config.model, "endpoint": self.config.endpoint, **u.__dict__,
               "cost": round(u.cost(self.config.prices), 6)}
        if self.dry_run:
            out["estimated_cost"] = round(u.estimated_cost(self.config.prices), 6)
        return out

    def close(self) -> None:
        self.ledger.flush()

    # internals ---------------------------------------------------------------------------------
    def _params(self, req: ChatRequest) -> dict[str, Any]:
        cfg = self.config
        return {**cfg.extra_body,
                "max_tokens": int(req.max_tokens or cfg.max_tokens),
                "temperature": float(cfg.temperature if req.temperature is None else req.temperature)}

    def _validate(self, text: str, req: ChatRequest) -> tuple[Any, list[str]]:
        parsed: Any = text
        if req.schema is not None:
            try:
                parsed = req.schema.model_validate(extract_json(text))
            except ValueError as e:  # JSON errors and pydantic ValidationError
                if isinstance(e, ValidationError):
                    errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'reply'}: {x['msg']}" for x in e.errors())
                    return None, [f"the JSON does not match the schema ({errs})"]
                return None, [f"the reply is not valid JSON ({e})"]
        if req.check is not None:
            problems = list(req.check(parsed))
            if problems:
                return None, problems
        return parsed, []

    async def _complete(self, messages: list[dict[str, Any]], req: ChatRequest, reask: bool
                        ) -> tuple[str, bool, dict[str, int]]:
        """One exchange: from the cache, or sent (budget permitting) and cached. -> (text, from_cache, usage)."""
        params = self._params(req)
        key = cache_key(self.config.model, messages, params)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and "text" in hit:
                self.ledger.bump(cached=1)
                return str(hit["text"]), True, dict(hit.get("usage") or {})
        if self.dry_run:
            self._record_dry_run(messages, params, req)
            raise LLMError(f"dry run: {req.tag or 'request'} not sent", kind="dry_run")
        opened = _OPEN.get()
        inflight = opened[2] if opened is not None else {}
        if key in inflight:  # the same request is on its way already: share its reply, pay once
            text, usage = await asyncio.shield(inflight[key])
            self.ledger.bump(cached=1)
            return text, True, usage
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        inflight[key] = fut
        try:
            text, usage = await self._send(messages, req, params, reask, key)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # marked as retrieved: the sharers get it, nobody else needs to
            raise
        finally:
            inflight.pop(key, None)
        fut.set_result((text, usage))
        return text, False, usage

    async def _send(self, messages: list[dict[str, Any]], req: ChatRequest, params: dict[str, Any], reask: bool,
                    key: str) -> tuple[str, dict[str, int]]:
        def before_send() -> None:  # called holding a concurrency slot, so the check sees every earlier reply
            reason = budget_reason(self.ledger.total(), self.config.budget, self.config.prices)
            if reason:
                self.ledger.bump(budget_stops=1)
                raise BudgetExceeded(f"budget reached: {reason}; nothing more is sent. Every reply so far is "
                                     f"cached: raise the budget and resume the run to go on")
            self.ledger.bump(**{"reasks" if reask else "requests": 1})

        text, usage = await self._post({"model": self.config.model, "messages": messages, **params}, before_send)
        self.ledger.bump(prompt_tokens=usage.get("prompt_tokens", 0),
                         completion_tokens=usage.get("completion_tokens", 0))
        if self.cache is not None:
            self.cache.put(key, {"model": self.config.model, "text": text, "usage": usage})
        self.ledger.flush(force=False)
        return text, usage

    def _record_dry_run(self, messages: list[dict[str, Any]], params: dict[str, Any], req: ChatRequest) -> None:
        est = estimate_prompt_tokens(messages)
        self.ledger.bump(dry_run_requests=1, estimated_prompt_tokens=est,
                         estimated_completion_tokens=int(params["max_tokens"]))
        self.dry_requests.append({"tag": req.tag, "model": self.config.model, "endpoint": self.config.endpoint,
                                  "messages": keyed_messages(messages), **params, "estimated_prompt_tokens": est})

    def _redact(self, s: str) -> str:
        return s.replace(self.__key, "***") if self.__key and len(self.__key) >= 4 else s

    def _backoff(self, attempt: int) -> float:
        cap = min(self.config.max_backoff, self.config.backoff * 2 ** (attempt - 1))
        return self._rng.uniform(0, cap)

    async def _post(self, payload: dict[str, Any], before_send: Callable[[], None]) -> tuple[str, dict[str, int]]:
        import aiohttp

        cfg = self.config
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        last, delay = "", 0.0
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                self.ledger.bump(retries=1)
                await asyncio.sleep(delay)
            opened = _OPEN.get()
            if opened is None:
                raise RuntimeError("LLMClient.achat runs inside LLMClient.run / run_async (or `async with client.session()`)")
            session, sem, _ = opened
            async with sem:
                while (wait := self._pause_until - time.monotonic()) > 0:  # a 429's Retry-After pauses everyone
                    await asyncio.sleep(wait)
                if attempt == 0:
                    before_send()
                try:
                    async with session.post(cfg.endpoint, data=body, headers=headers, timeout=timeout) as resp:
                        status, raw = resp.status, await resp.read()
                        retry_after = _retry_after(resp.headers.get("Retry-After"))
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                    last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                    delay = self._backoff(attempt + 1)
                    continue
            if status == 200:
                try:
                    return self._parse(raw)
                except ValueError as e:
                    last, delay = str(e), self._backoff(attempt + 1)
                    continue
            detail = self._redact(raw[:300].decode("utf-8", "replace"))
            if status not in RETRY_STATUS:
                self.ledger.bump(failures=1)
                hint = f" (is ${cfg.api_key_env} set and valid?)" if status in (401, 403) else ""
                # a refused key or an unknown model / endpoint fails every request alike: "fatal" stops a run
                raise LLMError(f"{cfg.endpoint} answered HTTP {status} for model {cfg.model!r}{hint}: {detail}",
                               kind="fatal" if status in (401, 403, 404) else "http")
            last = f"HTTP {status}: {detail}"
            if retry_after is not None:
                if retry_after > cfg.max_retry_after:
                    self.ledger.bump(failures=1)
                    raise LLMError(f"{cfg.endpoint} asked to retry after {retry_after:.0f} s (> max_retry_after "
                                   f"{cfg.max_retry_after:.0f} s): {last}", kind="transport")
                delay = retry_after * (1.0 + 0.1 * self._rng.random())
                if status == 429:
                    self._pause_until = max(self._pause_until, time.monotonic() + retry_after)
            else:
                delay = self._backoff(attempt + 1)
        self.ledger.bump(failures=1)
        raise LLMError(self._redact(f"{cfg.endpoint} gave no usable reply for model {cfg.model!r} after "
                                    f"{cfg.max_retries + 1} attempts; last error: {last}"), kind="transport")

    @staticmethod
    def _parse(raw: bytes) -> tuple[str, dict[str, int]]:
        try:
            obj = json.loads(raw)
            content = obj["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ValueError(f"a 200 reply without choices[0].message.content: {raw[:200]!r}") from e
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        usage = obj.get("usage") or {}
        usage = {k: int(usage.get(k) or 0) for k in ("prompt_tokens", "completion_tokens")}
        return ("" if content is None else str(content)), usage


class _Session:
    """Opens the aiohttp session and the concurrency semaphore in the running event loop."""

    def __init__(self, client: LLMClient):
        self.client = client
        self.token: contextvars.Token | None = None

    async def __aenter__(self) -> LLMClient:
        import aiohttp

        c = self.client
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c.config.concurrency))
        self.token = _OPEN.set((session, asyncio.Semaphore(c.config.concurrency), {}))
        return c

    async def __aexit__(self, *exc: Any) -> None:
        opened = _OPEN.get()
        try:
            if opened is not None:
                await opened[0].close()
        finally:
            if self.token is not None:
                _OPEN.reset(self.token)
            self.client.ledger.flush()
