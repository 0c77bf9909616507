"""The model-adapter interface and ``--model SCHEME:TARGET`` spec parsing.

An adapter answers ``Request``s: ``generate(requests) -> list[str | None]`` (``None`` = no answer, e.g. an
id missing from a predictions file), with a ``name`` and a preferred ``batch_size``. Adapters are
registered in ``ADAPTERS`` by scheme (``hf``, ``openai``, ``medvl``, ``predictions``)."""

from __future__ import annotations

from typing import Any

from medvl.eval.types import ADAPTERS, Request


class AdapterError(RuntimeError):
    """A model adapter could not be created or could not answer; the message says why and what to do."""


class ModelAdapter:
    """Base class of model adapters. Subclasses take ``(target, batch_size=..., **options)``."""

    registry_name = ""
    name: str = ""
    batch_size: int = 8

    def generate(self, requests: list[Request]) -> list[str | None]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What to record about the model in results.json (no secrets)."""
        return {"adapter": self.registry_name, "name": self.name}

    def close(self) -> None:
        """Release resources (default: nothing)."""


def parse_model_spec(spec: str) -> tuple[str, str]:
    """Split ``scheme:target`` (``hf:/models/x``, ``openai:gpt-4o@http://host/v1``, ``predictions:f.jsonl``)."""
    if ":" not in spec:
        raise AdapterError(
            f"model spec {spec!r} has no scheme; use one of "
            f"{', '.join(s + ':...' for s in ADAPTERS.names())} (e.g. hf:/path/to/model)"
        )
    scheme, target = spec.split(":", 1)
    scheme = scheme.strip().lower()
    if scheme not in ADAPTERS:
        raise AdapterError(f"unknown model scheme {scheme!r} in {spec!r}; allowed: {', '.join(ADAPTERS.names())}")
    if not target.strip():
        raise AdapterError(f"model spec {spec!r} names no model after '{scheme}:'")
    return scheme, target.strip()


def load_adapter(spec: str, batch_size: int = 8, **options: Any) -> ModelAdapter:
    """Create the adapter a ``--model`` spec names."""
    scheme, target = parse_model_spec(spec)
    cls = ADAPTERS.get(scheme)
    try:
        return cls(target, batch_size=batch_size, **options)
    except (ValueError, TypeError) as e:  # a model option of the wrong type ("concurrency=many")
        given = ", ".join(f"{k}={v!r}" for k, v in sorted(options.items())) or "none"
        raise AdapterError(f"{scheme} adapter: bad model option value ({type(e).__name__}: {e}); given: {given}") from e
