"""``predictions:FILE`` — answers produced elsewhere: a JSONL with one ``{"id": ..., "response": ...}`` per
line, ``id`` being the benchmark's own question id. Ids the file lacks come back as ``None`` (the runner
reports them as missing and counts them wrong); a duplicate id is an error naming both lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvl.eval.adapters._base import AdapterError, ModelAdapter
from medvl.eval.types import ADAPTERS, Request


def read_predictions(path: Path) -> dict[str, str]:
    """Read a predictions JSONL into ``{id: response}`` (ids as strings), validating every line."""
    if not path.is_file():
        raise AdapterError(f"predictions file not found: {path}")
    answers: dict[str, str] = {}
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise AdapterError(f"{path}:{lineno}: not valid JSON ({e})") from e
            if not isinstance(row, dict) or "id" not in row or "response" not in row:
                raise AdapterError(f"{path}:{lineno}: expected an object with 'id' and 'response'")
            if isinstance(row["id"], (dict, list)) or row["id"] is None:
                raise AdapterError(f"{path}:{lineno}: 'id' must be a string or number, got {row['id']!r}")
            qid = str(row["id"])
            if qid in answers:
                raise AdapterError(f"{path}:{lineno}: duplicate id {qid!r} (first seen on line {first_line[qid]})")
            resp = row["response"]
            if resp is not None and not isinstance(resp, str):
                raise AdapterError(f"{path}:{lineno}: 'response' must be a string, got {type(resp).__name__}")
            answers[qid] = "" if resp is None else resp
            first_line[qid] = lineno
    return answers


@ADAPTERS.register("predictions")
class PredictionsAdapter(ModelAdapter):
    """Looks answers up in a predictions file instead of running a model."""

    def __init__(self, target: str, batch_size: int = 8, **options: Any):
        if options:
            raise AdapterError(f"the predictions adapter takes no options, got {sorted(options)}")
        self.path = Path(target).expanduser().resolve()
        self.name = self.path.stem
        self.batch_size = max(1, int(batch_size))
        self.answers = read_predictions(self.path)

    def describe(self) -> dict[str, Any]:
        return {"adapter": "predictions", "name": self.name, "path": str(self.path), "n": len(self.answers)}

    def generate(self, requests: list[Request]) -> list[str | None]:
        return [self.answers.get(r.id) for r in requests]

    def unknown_ids(self, known: set[str]) -> list[str]:
        """Ids in the file that the benchmark does not have (sorted) — usually a wrong split or benchmark."""
        return sorted(set(self.answers) - known)
