"""One client for every language-model call of medvl (OpenAI-compatible chat completions): retries, rate limits,
concurrency, schema validation with re-asks, an on-disk cache, usage/cost accounting, a per-run budget and dry
runs. See :mod:`medvl.llm.client`.

The names below are imported when first used (PEP 562): a recipe's model settings (:mod:`medvl.llm.config`) are
read by every build, but the client (asyncio, aiohttp: ~80 ms per process) only by builds that call a model."""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    **dict.fromkeys(("BudgetExceeded", "ChatRequest", "LLMClient", "LLMError", "Reply", "extract_json"),
                    "medvl.llm.client"),
    **dict.fromkeys(("Budget", "LLMConfig", "Prices", "parse_target"), "medvl.llm.config"),
    **dict.fromkeys(("Usage", "read_ledger"), "medvl.llm.ledger"),
    **dict.fromkeys(("ImageLoadError", "text_message", "to_data_url", "user_message"), "medvl.llm.messages"),
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'medvl.llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
