"""The on-disk reply cache: one small JSON file per request key (``<folder>/<k[:2]>/<k>.json``), written to a
unique temporary name and renamed into place, so any number of threads, processes or Ray workers on one
filesystem can share it: a reader sees a whole file or none, and two writers of one key write the same reply.
Nothing secret is stored: the key hashes the model, the messages (images by hash) and the parameters."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


class DiskCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable entry: asked again, then overwritten

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(value, ensure_ascii=False, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*/*.json")) if self.folder.is_dir() else 0
