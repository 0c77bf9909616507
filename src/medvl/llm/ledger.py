"""Token, request and cost accounting, and the per-run budget shared by every process of a run.

Each client writes its running totals to its own file in the run's ledger folder (atomically, after each reply);
a budget check adds the other files' totals (re-read at most every ``refresh`` seconds) to its own live counts.
So a build whose generation runs in several worker processes stops starting requests once the run as a whole
reaches its budget; requests already in flight finish (at most ``concurrency`` per process beyond the limit)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from medvl.llm.config import Budget, Prices

COUNTERS = ("requests", "cached", "retries", "failures", "reasks", "prompt_tokens", "completion_tokens",
            "dry_run_requests", "estimated_prompt_tokens", "estimated_completion_tokens", "budget_stops")


@dataclass
class Usage:
    requests: int = 0  # requests sent to the server (one per logical request, retries counted apart)
    cached: int = 0  # requests answered from the cache (paid for by an earlier run)
    retries: int = 0  # extra HTTP attempts after a transport failure, 429 or 5xx
    failures: int = 0  # requests that failed after their retries
    reasks: int = 0  # follow-up requests after a reply that failed its schema or checks
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dry_run_requests: int = 0
    estimated_prompt_tokens: int = 0
    estimated_completion_tokens: int = 0
    budget_stops: int = 0  # requests not sent because the budget was reached

    def add(self, other: "Usage") -> "Usage":
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def cost(self, prices: Prices) -> float:
        return (self.prompt_tokens * prices.prompt_per_mtok + self.completion_tokens * prices.completion_per_mtok) / 1e6

    def estimated_cost(self, prices: Prices) -> float:
        return (self.estimated_prompt_tokens * prices.prompt_per_mtok
                + self.estimated_completion_tokens * prices.completion_per_mtok) / 1e6

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Usage":
        return cls(**{k: int(d.get(k, 0)) for k in COUNTERS})


def budget_reason(total: Usage, budget: Budget, prices: Prices) -> str | None:
    """Why the budget is used up (None while it is not)."""
    if budget.max_requests is not None and total.requests + total.reasks >= budget.max_requests:
        return f"max_requests={budget.max_requests} reached ({total.requests + total.reasks} sent)"
    tokens = total.prompt_tokens + total.completion_tokens
    if budget.max_tokens is not None and tokens >= budget.max_tokens:
        return f"max_tokens={budget.max_tokens} reached ({tokens} tokens)"
    if budget.max_cost is not None and total.cost(prices) >= budget.max_cost:
        return f"max_cost={budget.max_cost} reached ({total.cost(prices):.4f})"
    return None


class Ledger:
    """One client's usage, optionally shared through ``folder`` with the other processes of the same run."""

    def __init__(self, folder: str | Path | None = None, refresh: float = 0.2):
        self.own = Usage()
        self.folder = Path(folder) if folder else None
        self.file = self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.json" if self.folder else None
        self.refresh = refresh
        self._others = Usage()
        self._others_at = 0.0
        self._flushed_at = 0.0
        self._lock = threading.Lock()

    def bump(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self.own, k, getattr(self.own, k) + int(v))

    def flush(self, force: bool = True) -> None:
        """Write this client's totals for the run's other processes; ``force=False`` writes at most every
        ``refresh`` seconds (after each reply), the session's end always writes."""
        if not self.file:
            return
        now = time.monotonic()
        if not force and now - self._flushed_at < self.refresh:
            return
        self._flushed_at = now
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        with self._lock:
            tmp.write_text(json.dumps(asdict(self.own), sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.file)

    def total(self) -> Usage:
        """This run's usage so far: this client's live counts plus the other processes' last flushed totals."""
        if self.folder and time.monotonic() - self._others_at >= self.refresh:
            self._others = read_ledger(self.folder, exclude=self.file)
            self._others_at = time.monotonic()
        with self._lock:
            return self.own.add(self._others)


def read_ledger(folder: str | Path, exclude: Path | None = None) -> Usage:
    """The summed usage of every client file in a ledger folder."""
    total = Usage()
    folder = Path(folder)
    if not folder.is_dir():
        return total
    for p in sorted(folder.glob("*.json")):
        if exclude is not None and p == exclude:
            continue
        try:
            total = total.add(Usage.from_dict(json.loads(p.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue  # being replaced right now: counted at the next refresh
    return total
