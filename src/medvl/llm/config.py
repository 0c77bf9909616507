"""The one configuration object of every language-model call: endpoint, model, retries, concurrency, budget,
prices and cache. Recipes carry it as ``generation.llm``; the CLI builds it from ``openai:NAME@URL`` specs.

The API key is never part of the config: ``api_key_env`` names the environment variable that holds it, so a
recipe, a cache or a log can be shared without leaking it."""

from __future__ import annotations

from pydantic import Field, field_validator

from medvl.core.config import StrictModel

DEFAULT_URL = "https://api.openai.com/v1"
# how requests are sent, never what the replies are: a build may be resumed after changing them (e.g. a larger
# budget, another server of the same model)
RUN_SETTINGS = ("base_url", "api_key_env", "concurrency", "timeout", "max_retries", "backoff", "max_backoff",
                "max_retry_after", "budget")


class Budget(StrictModel):
    """A per-run spending limit; any of the three may be set. Once a limit is reached no new request starts
    (requests already in flight finish and are cached), and the run stops with a message saying how to go on."""

    max_requests: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)  # prompt + completion tokens as the server reports them
    max_cost: float | None = Field(None, ge=0.0)  # in the currency of ``prices``


class Prices(StrictModel):
    """Price per million tokens (e.g. USD), used for the cost in the run summary and the dry-run estimate."""

    prompt_per_mtok: float = Field(0.0, ge=0.0)
    completion_per_mtok: float = Field(0.0, ge=0.0)


class LLMConfig(StrictModel):
    model: str
    base_url: str = DEFAULT_URL
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(8, ge=1, le=4096)
    timeout: float = Field(120.0, gt=0)  # seconds for one HTTP attempt (connect + reply)
    max_retries: int = Field(6, ge=0)  # extra attempts after a transport failure, 429 or 5xx
    backoff: float = Field(1.0, ge=0.0)  # first backoff in seconds, doubled per attempt, full jitter
    max_backoff: float = Field(60.0, ge=0.0)
    max_retry_after: float = Field(300.0, ge=0.0)  # a longer Retry-After fails the request instead of waiting
    max_reasks: int = Field(2, ge=0)  # re-asks after a reply that fails its schema or checks
    temperature: float = Field(0.0, ge=0.0)
    max_tokens: int = Field(512, ge=1)
    image_detail: str | None = None  # OpenAI's "low" / "high" / "auto"; None sends no detail field
    extra_body: dict = {}  # more chat-completions parameters (e.g. {"top_p": 1.0}); part of the cache key
    budget: Budget = Budget()
    prices: Prices = Prices()

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url {v!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)")
        return v.rstrip("/")

    @property
    def endpoint(self) -> str:
        """The chat-completions URL (``base_url`` may already be the full endpoint)."""
        u = self.base_url
        return u if u.endswith("/chat/completions") else u + "/chat/completions"


def parse_target(target: str) -> tuple[str, str]:
    """``NAME@URL`` -> (model name, base URL); ``NAME`` alone uses the OpenAI API."""
    name, url = target.rsplit("@", 1) if "@" in target else (target, DEFAULT_URL)
    if not name or not url.startswith(("http://", "https://")):
        raise ValueError(f"model spec {target!r} must look like NAME@http(s)://host[:port]/v1")
    return name, url.rstrip("/")
