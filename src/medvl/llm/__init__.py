"""One client for every language-model call of medvl (OpenAI-compatible chat completions): retries, rate limits,
concurrency, schema validation with re-asks, an on-disk cache, usage/cost accounting, a per-run budget and dry
runs. See :mod:`medvl.llm.client`."""

from medvl.llm.client import BudgetExceeded, ChatRequest, LLMClient, LLMError, Reply, extract_json
from medvl.llm.config import Budget, LLMConfig, Prices, parse_target
from medvl.llm.ledger import Usage, read_ledger
from medvl.llm.messages import ImageLoadError, text_message, to_data_url, user_message

__all__ = ["Budget", "BudgetExceeded", "ChatRequest", "ImageLoadError", "LLMClient", "LLMConfig", "LLMError",
           "Prices", "Reply", "Usage", "extract_json", "parse_target", "read_ledger", "text_message", "to_data_url",
           "user_message"]
