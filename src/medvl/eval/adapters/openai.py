"""``openai:NAME@URL`` — any OpenAI-compatible ``/v1/chat/completions`` endpoint (OpenAI, vLLM, SGLang,
LMDeploy, Ollama...). Images travel as base64 data URLs; temperature 0; requests run in a small thread pool;
429 / 5xx / timeouts are retried with bounded exponential backoff. Uses only the standard library."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from medvl.eval.adapters._base import AdapterError, ModelAdapter
from medvl.eval.adapters._images import to_data_url
from medvl.eval.types import ADAPTERS, Request

DEFAULT_URL = "https://api.openai.com/v1"
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


def parse_target(target: str) -> tuple[str, str]:
    """``NAME@URL`` -> (model name, base URL); ``NAME`` alone uses the OpenAI API."""
    if "@" in target:
        name, url = target.rsplit("@", 1)
    else:
        name, url = target, DEFAULT_URL
    if not name or not url.startswith(("http://", "https://")):
        raise AdapterError(f"openai model spec {target!r} must look like NAME@http(s)://host[:port]/v1")
    return name, url.rstrip("/")


def endpoint(url: str) -> str:
    """The chat-completions URL for a base URL (``.../v1`` or the full endpoint)."""
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


class OpenAIChatClient:
    """A minimal thread-safe client for one model on one OpenAI-compatible server."""

    def __init__(
        self,
        model: str,
        url: str,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
    ):
        self.model = model
        self.url = endpoint(url)
        self.api_key = api_key or os.environ.get(api_key_env) or None
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)

    def chat(self, content: list[dict[str, Any]] | str, max_tokens: int = 64) -> str:
        """Send one user message; return the assistant's text. Raises ``AdapterError`` after the retries."""
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": int(max_tokens),
        }
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    payload = resp.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                if e.code in (401, 403):
                    raise AdapterError(
                        f"{self.url} refused the request ({e.code}): set ${self.api_key_env} "
                        f"or pass --option api_key=... ({detail})"
                    ) from e
                if e.code not in RETRY_STATUS:
                    raise AdapterError(f"{self.url} answered HTTP {e.code} for model {self.model!r}: {detail}") from e
                last = f"HTTP {e.code}: {detail}"
                continue
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
                continue
            return self._text(payload)
        raise AdapterError(f"{self.url} failed after {self.max_retries + 1} attempts; last error: {last}")

    def _text(self, payload: bytes) -> str:
        try:
            obj = json.loads(payload)
            content = obj["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise AdapterError(f"{self.url} returned no choices[0].message.content: {payload[:200]!r}") from e
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return "" if content is None else str(content)


def request_content(req: Request) -> list[dict[str, Any]]:
    """OpenAI content parts for one request: the images (data URLs) first, then the prompt."""
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": to_data_url(ref)}} for ref in req.images]
    parts.append({"type": "text", "text": req.prompt})
    return parts


@ADAPTERS.register("openai")
class OpenAIAdapter(ModelAdapter):
    """A model behind an OpenAI-compatible chat-completions endpoint."""

    def __init__(self, target: str, batch_size: int = 8, concurrency: int = 4, **options: Any):
        name, url = parse_target(target)
        self.name = name
        self.batch_size = max(1, int(batch_size))
        self.concurrency = max(1, int(concurrency))
        known = {"api_key", "api_key_env", "timeout", "max_retries", "backoff", "max_backoff"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise AdapterError(f"unknown openai adapter option(s) {unknown}; allowed: {sorted(known | {'concurrency'})}")
        self.client = OpenAIChatClient(name, url, **options)

    def describe(self) -> dict[str, Any]:
        return {"adapter": "openai", "name": self.name, "url": self.client.url, "temperature": 0}

    def generate(self, requests: list[Request]) -> list[str | None]:
        def one(req: Request) -> str:
            return self.client.chat(request_content(req), max_tokens=req.max_new_tokens)

        if self.concurrency == 1 or len(requests) <= 1:
            return [one(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(one, requests))
