"""``conversations``: multi-turn medical dialogue (GMAI-VL's Text-Multi) from ShareGPT-style JSON / JSONL
(``{"id", "conversations": [{"from": "human" | "gpt" | "system", "value"}]}``) or OpenAI-style messages
(``{"messages": [{"role": "user" | "assistant" | "system", "content"}]}``; content as a string or text parts).
Roles are validated and normalized (human/user -> user; gpt/assistant/bot/chatgpt/model -> assistant); a leading
system turn is kept in ``meta.system``; the turns must alternate starting with the user and end with the assistant.
A row with images, unknown roles, empty turns or a broken order is a reject naming the file, row and problem."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvl.core.records import Reject
from medvl.sources.base import SOURCES, SourceOptions, Unit
from medvl.sources.text_base import TextItem, TextSource, detect_lang, normalize_split, split_from_name

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
         "chatgpt": "assistant", "model": "assistant", "system": "system"}


class ConversationOptions(SourceOptions):
    file: str | None = None
    split_field: str | None = None  # a field holding the official split; default: the file name


def _content(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if any(isinstance(p, dict) and p.get("type") in ("image", "image_url") for p in value):
            raise ValueError("a turn holds an image (this format is for text-only dialogue)")
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    raise ValueError(f"turn content is a {type(value).__name__}, not text")


def normalize_turns(raw: Any) -> tuple[list[tuple[str, str]], str | None]:
    """(user/assistant turns, system prompt) or ValueError with the problem."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("no turns")
    turns: list[tuple[str, str]] = []
    system = None
    for i, t in enumerate(raw, 1):
        if not isinstance(t, dict):
            raise ValueError(f"turn {i} is not an object")
        who = t.get("from", t.get("role"))
        role = ROLES.get(str(who).strip().lower()) if who is not None else None
        if role is None:
            raise ValueError(f"turn {i}: unknown role {who!r} (allowed: {', '.join(sorted(ROLES))})")
        text = _content(t.get("value", t.get("content"))).strip()
        if not text:
            raise ValueError(f"turn {i} ({role}) is empty")
        if role == "system":
            if turns or system is not None:
                raise ValueError(f"turn {i}: a system turn is allowed only first")
            system = text
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"turn {i}: expected a {expected} turn, got {role} (turns must alternate, user first)")
        turns.append((role, text))
    if not turns or turns[-1][0] != "assistant":
        raise ValueError("the dialogue must end with an assistant turn")
    return turns, system


@SOURCES.register("conversations")
class ConversationSource(TextSource):
    Options = ConversationOptions

    def load_text(self, unit: Unit) -> Iterator[TextItem | Reject]:
        file_split = split_from_name(Path(unit.payload["path"]))
        for n, r in enumerate(self.rows(unit), 1):
            if isinstance(r, Reject):
                yield r
                continue
            where, row = r
            if isinstance(row, tuple):  # a JSON object of id -> dialogue
                row = {"id": row[0], **row[1]} if isinstance(row[1], dict) else {"id": row[0], "conversations": row[1]}
            if isinstance(row, list):
                row = {"conversations": row}
            if not isinstance(row, dict):
                yield self.reject(f"{unit.key}#{n}", f"{where}: expected an object, got {type(row).__name__}",
                                  "validate")
                continue
            raw = row.get("conversations", row.get("messages"))
            try:
                turns, system = normalize_turns(raw)
            except ValueError as e:
                yield self.reject(f"{unit.key}#{n}", f"{where}: {e}", "validate")
                continue
            split = normalize_split(row.get(self.opts.split_field)) if self.opts.split_field else file_split
            meta: dict[str, Any] = {"turns": len(turns)}
            if system:
                meta["system"] = system
            yield TextItem(key=str(row.get("id") or f"{Path(unit.key).stem}-{n}"), turns=turns, task="dialogue",
                           split=split, lang=detect_lang(" ".join(t for _, t in turns)), source_file=unit.key,
                           meta=meta)
