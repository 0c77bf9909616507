"""``openai:NAME@URL`` — any OpenAI-compatible ``/v1/chat/completions`` endpoint (OpenAI, vLLM, SGLang,
LMDeploy, Ollama, ``transformers serve``...), through the project's one model client (:mod:`medvl.llm`):
images as base64 data URLs, temperature 0, concurrent requests, retries on every transport failure with
``Retry-After`` honoured. Answers are remembered per request for the life of the adapter, so when the runner
retries a failed batch item by item, the items already answered are not sent again."""

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
                 **options: Any):
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
        self.client = LLMClient(config, api_key=api_key)
        self._answered: dict[tuple[Any, ...], str] = {}

    def describe(self) -> dict[str, Any]:
        return {"adapter": "openai", "name": self.name, "url": self.client.config.endpoint, "temperature": 0}

    def generate(self, requests: list[Request]) -> list[str | None]:
        keys = [(r.prompt, tuple(map(str, r.images)), r.max_new_tokens) for r in requests]
        todo = [i for i, k in enumerate(keys) if k not in self._answered]
        asks = [ChatRequest(messages=[request_message(requests[i])], max_tokens=requests[i].max_new_tokens)
                for i in todo]
        errors = []
        for i, out in zip(todo, self.client.run(asks) if asks else []):
            if isinstance(out, LLMError):
                errors.append(out)
            else:
                self._answered[keys[i]] = out.text
        if errors:
            raise AdapterError(str(errors[0]))
        answers = [self._answered[k] for k in keys]
        for k in keys:
            self._answered.pop(k, None)
        return answers
