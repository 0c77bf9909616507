"""``openai:NAME@URL`` — any OpenAI-compatible ``/v1/chat/completions`` endpoint (OpenAI, vLLM, SGLang,
LMDeploy, Ollama, ``transformers serve``...), through the project's one model client (:mod:`medvl.llm`):
images as base64 data URLs, temperature 0, concurrent requests, retries on every transport failure with
``Retry-After`` honoured. ``medvl eval`` gives it a reply cache in the run folder (``OUT/model_cache``), so a
killed run resumed asks no question it had an answer to, and answers are per item (``generate_each``): an
answered item is never sent again because another item of its batch failed."""

from __future__ import annotations

from typing import Any

from medvl.eval.adapters._base import AdapterError, ModelAdapter
from medvl.eval.types import ADAPTERS, Request
from medvl.llm import ChatRequest, LLMClient, LLMConfig, LLMError, parse_target, user_message

CLIENT_OPTIONS = {"api_key_env", "timeout", "max_retries", "backoff", "max_backoff", "max_retry_after"}


def request_message(req: Request) -> dict[str, Any]:
    """The user message for one request: the images (data URLs) first, then the prompt."""
    return user_message(req.prompt, images=list(req.images)) if req.images else \
        {"role": "user", "content": [{"type": "text", "text": req.prompt}]}


@ADAPTERS.register("openai")
class OpenAIAdapter(ModelAdapter):
    """A model behind an OpenAI-compatible chat-completions endpoint."""

    def __init__(self, target: str, batch_size: int = 8, concurrency: int = 4, api_key: str | None = None,
                 cache_dir: str | None = None, **options: Any):
        try:
            name, url = parse_target(target)
        except ValueError as e:
            raise AdapterError(f"openai {e}") from e
        self.name = name
        self.batch_size = max(1, int(batch_size))
        unknown = sorted(set(options) - CLIENT_OPTIONS)
        if unknown:
            raise AdapterError(f"unknown openai adapter option(s) {unknown}; "
                               f"allowed: {sorted(CLIENT_OPTIONS | {'api_key', 'concurrency'})}")
        config = LLMConfig(model=name, base_url=url, concurrency=max(1, int(concurrency)), temperature=0.0,
                           max_reasks=0, **options)
        self.client = LLMClient(config, api_key=api_key, cache_dir=cache_dir)  # the runner's: OUT/model_cache
        self._answered: dict[tuple[Any, ...], str] = {}

    def describe(self) -> dict[str, Any]:
        return {"adapter": "openai", "name": self.name, "url": self.client.config.endpoint, "temperature": 0}

    @staticmethod
    def _key(r: Request) -> tuple[Any, ...]:
        return (r.prompt, tuple(map(str, r.images)), r.max_new_tokens)

    def _run(self, requests: list[Request]) -> list[str | BaseException]:
        """Per request the answer (remembered until returned) or the error that ended it after the client's
        own retries; remembered answers are not sent again."""
        todo = [i for i, r in enumerate(requests) if self._key(r) not in self._answered]
        asks = [ChatRequest(messages=[request_message(requests[i])], max_tokens=requests[i].max_new_tokens)
                for i in todo]
        failed: dict[int, BaseException] = {}
        for i, out in zip(todo, self.client.run(asks) if asks else []):
            if isinstance(out, LLMError):
                failed[i] = AdapterError(str(out))
            else:
                self._answered[self._key(requests[i])] = out.text
        return [failed[i] if i in failed else self._answered[self._key(r)] for i, r in enumerate(requests)]

    def _forget(self, requests: list[Request]) -> None:
        for r in requests:
            self._answered.pop(self._key(r), None)

    def generate_each(self, requests: list[Request]) -> list[str | BaseException]:
        """Per request the answer or its error, so the runner keeps every answer a batch received and sends no
        answered request again."""
        out = self._run(requests)
        self._forget(requests)
        return out

    def generate(self, requests: list[Request]) -> list[str | None]:
        """All answers, or the first error (the answers received are remembered: a retry does not resend them)."""
        out = self._run(requests)
        errors = [x for x in out if isinstance(x, BaseException)]
        if errors:
            raise errors[0]
        self._forget(requests)
        return [str(x) for x in out]
