"""Training conversations read from medvl's exports and from LLaVA-format data a user brings.

Formats (names as in medvl's ``manifest.json``):

- ``llava-json``: a JSON list of ``{"id", "image", "conversations": [{"from", "value"}]}`` (``image`` a path, a
  list of paths, or absent for text-only samples); ``llava-jsonl``: the same, one object per line.
- ``parquet``: medvl's Parquet shards (``image`` struct ``{bytes, path}``, ``extra_images`` list of those,
  ``conversations``), read in batches; embedded bytes stay in memory as :class:`ImageRef` ``data``.
- ``messages-jsonl``: ``{"id", "messages": [{"role", "content"}], "images": [paths]}`` per line.
- ``mixture-json``: GMAI-VL's mixture list ``{name: {"image_dir", "annotations", "sample_ratio", "length"}}``
  (medvl's ``mixture.json`` and ``mixture/<split>.json``; InternVL's ``root``/``annotation``/``repeat_time``
  spellings are accepted too). Each annotation file gets its own ``sample_ratio``.

Relative paths resolve against the folder of the file that names them, except in a medvl build (a folder
whose ``manifest.json`` lists the file), where every path is relative to the build folder, as medvl writes
them; an explicit ``image_root`` overrides both. Every item is validated (roles, turn order, ``<image>``
placeholders against images, image files present); an invalid item becomes a :class:`Reject` with its
reason, never an exception, and never disappears silently."""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medvl.core.hashing import content_hash, file_digest, stable_int
from medvl.core.records import Reject
from medvl.model import IMAGE_TOKEN

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
         "system": "system"}
FORMATS = ("llava-json", "llava-jsonl", "parquet", "messages-jsonl", "mixture-json")
STAGE = "train-data"


class DataError(ValueError):
    """A training-data file cannot be used at all (missing, unreadable, unknown format): names the file."""


@lru_cache(maxsize=1 << 16)
def _file_sha256(path: str) -> str:
    """The image file's content hash, once per path in a run (the same file is named by many samples)."""
    return file_digest(path)


@dataclass(frozen=True)
class ImageRef:
    """One image of a sample: a file path, or encoded bytes held in memory (Parquet), or both."""

    path: str | None = None
    data: bytes | None = field(default=None, repr=False)
    _key: str | None = field(default=None, init=False, repr=False, compare=False)

    def read_bytes(self) -> bytes:
        """The encoded image bytes."""
        if self.data is not None:
            return self.data
        if self.path is None:
            raise ValueError("ImageRef has neither path nor data")
        return Path(self.path).read_bytes()

    def open(self):
        """The image as an RGB PIL image."""
        from PIL import Image

        src = io.BytesIO(self.data) if self.data is not None else self.path
        with Image.open(src) as im:
            return im.convert("RGB")

    @property
    def key(self) -> str:
        """Hex SHA-256 of the encoded bytes (computed once)."""
        if self._key is None:
            object.__setattr__(self, "_key", content_hash(self.data) if self.data is not None
                               else _file_sha256(str(self.path)))
        return self._key  # type: ignore[return-value]


@dataclass
class Conversation:
    """One training sample: ChatML messages (``<image>`` placeholders in the texts, one per image, in order)."""

    id: str
    messages: list[dict[str, str]]
    images: list[ImageRef]
    source: str


class DataSpec(BaseModel):
    """One training-data input: a file and how to read it."""

    model_config = ConfigDict(extra="forbid")
    path: Path
    format: Literal["llava-json", "llava-jsonl", "parquet", "messages-jsonl", "mixture-json"] | None = Field(
        None, description="detected from the extension and content when absent")
    sample_ratio: float = Field(1.0, ge=0, description="<1: a seeded subset; >1: whole copies + a seeded part")
    image_root: Path | None = Field(None, description="folder relative image paths resolve against")
    name: str | None = Field(None, description="source name in rejects and stats (default: the path)")


@dataclass
class SourceData:
    """What one annotation file gave: ``n_items == n_valid + len(rejects)``; ``conversations`` after the ratio."""

    name: str
    path: Path
    format: str
    n_items: int
    n_valid: int
    sample_ratio: float
    conversations: list[Conversation]
    rejects: list[Reject]


class _Bad(Exception):
    """An item is invalid (message = the reason)."""


# ----------------------------------------------------------------------------------------------- validation

def make_conversation(cid: str, turns: list[Any], images: list[ImageRef], source: str, *,
                      role_key: str, text_key: str, exists: dict[str, bool]) -> Conversation:
    """Validate one raw item and build its :class:`Conversation` (raises ``_Bad(reason)``)."""
    if not isinstance(turns, list) or not turns:
        raise _Bad("no conversation turns")
    messages: list[dict[str, str]] = []
    for k, t in enumerate(turns):
        if not isinstance(t, dict):
            raise _Bad(f"turn {k} is not an object")
        raw = t.get(role_key)
        role = ROLES.get(str(raw).strip().lower()) if raw is not None else None
        if role is None:
            raise _Bad(f"turn {k}: unknown role {raw!r} (allowed: {', '.join(ROLES)})")
        text = t.get(text_key)
        if isinstance(text, list):  # OpenAI-style parts
            text = "".join(IMAGE_TOKEN + "\n" if isinstance(p, dict) and p.get("type") == "image"
                           else str(p.get("text", "")) if isinstance(p, dict) else "" for p in text)
        if not isinstance(text, str):
            raise _Bad(f"turn {k}: {text_key!r} is not text")
        messages.append({"role": role, "content": text})
    _check_order(messages)
    n_ph = 0
    for k, m in enumerate(messages):
        c = m["content"].count(IMAGE_TOKEN)
        if c and m["role"] != "user":
            raise _Bad(f"turn {k}: {IMAGE_TOKEN!r} in the {m['role']} turn (only user turns may hold images)")
        n_ph += c
    if images and n_ph == 0:  # LLaVA: the image goes before the first question
        first = next(m for m in messages if m["role"] == "user")
        first["content"] = (IMAGE_TOKEN + "\n") * len(images) + first["content"]
        n_ph = len(images)
    if n_ph != len(images):
        raise _Bad(f"{n_ph} {IMAGE_TOKEN} placeholder(s) for {len(images)} image(s)")
    for im in images:
        if im.data is None:
            ok = exists.get(im.path)  # type: ignore[arg-type]
            if ok is None:
                ok = exists[im.path] = Path(im.path).is_file()  # type: ignore[index, arg-type]
            if not ok:
                raise _Bad(f"image file not found: {im.path}")
    return Conversation(cid, messages, images, source)


def _check_order(messages: list[dict[str, str]]) -> None:
    body = messages[1:] if messages[0]["role"] == "system" else messages
    if not body:
        raise _Bad("only a system turn")
    offset = len(messages) - len(body)
    for k, m in enumerate(body):
        want = "user" if k % 2 == 0 else "assistant"
        if m["role"] != want:
            raise _Bad(f"turn {k + offset}: expected a {want} turn, got {m['role']} (turns must alternate "
                       f"user/assistant after an optional first system turn)")
        if want == "assistant" and not m["content"].strip():
            raise _Bad(f"turn {k + offset}: empty answer")
    if body[-1]["role"] != "assistant":
        raise _Bad("the last turn is a user turn: no answer to learn")


# ----------------------------------------------------------------------------------------------- readers

def _path_image(p: Any, root: Path) -> ImageRef:
    if not isinstance(p, str) or not p:
        raise _Bad(f"image path {p!r} is not a non-empty string")
    q = Path(p)
    return ImageRef(path=str(q if q.is_absolute() else root / q))


def _llava_rows(path: Path, fmt: str) -> Iterator[tuple[str, Any]]:
    """(position label, parsed object or _Bad) for every item of a LLaVA JSON list or a JSONL file."""
    if fmt == "llava-json":
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"training data {path}: not readable JSON ({e})") from None
        if not isinstance(items, list):
            raise DataError(f"training data {path}: expected a JSON list of samples, got {type(items).__name__}")
        for i, obj in enumerate(items):
            yield f"item {i}", obj
        return
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below; bytes so one bad line is one reject
    except OSError as e:
        raise DataError(f"training data {path}: cannot open ({e})") from None
    with f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield f"line {n}", json.loads(line.decode("utf-8"))
                except UnicodeDecodeError:
                    yield f"line {n}", _Bad("not UTF-8 text")
                except json.JSONDecodeError as e:
                    yield f"line {n}", _Bad(f"invalid JSON ({e.msg})")


def _read_json_items(path: Path, fmt: str, root: Path, source: str, out: SourceData) -> None:
    messages_fmt = fmt == "messages-jsonl"
    exists: dict[str, bool] = {}
    for where, obj in _llava_rows(path, fmt):
        out.n_items += 1
        cid = obj.get("id") if isinstance(obj, dict) else None
        label = str(cid) if cid is not None else where
        try:
            if isinstance(obj, _Bad):
                raise obj
            if not isinstance(obj, dict):
                raise _Bad("not a JSON object")
            if messages_fmt:
                imgs = obj.get("images") or []
                images = [_path_image(p, root) for p in (imgs if isinstance(imgs, list) else [imgs])]
                turns, rk, tk = obj.get("messages"), "role", "content"
            else:
                img = obj.get("image")
                images = [] if img is None else [_path_image(p, root) for p in (img if isinstance(img, list) else [img])]
                turns, rk, tk = obj.get("conversations"), "from", "value"
            cid = str(cid) if cid is not None else f"{path.name}:{where.split()[-1]}"
            out.conversations.append(make_conversation(cid, turns, images, source, role_key=rk, text_key=tk,
                                                       exists=exists))
        except _Bad as e:
            out.rejects.append(Reject(source, f"{path}: {label}", str(e), STAGE))


def _read_parquet(path: Path, root: Path, source: str, out: SourceData, batch_rows: int = 256) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DataError(f"training data {path}: not a readable Parquet file ({e})") from None
    missing = {"conversations"} - set(pf.schema_arrow.names)
    if missing:
        raise DataError(f"training data {path}: Parquet file without column(s) {sorted(missing)}")
    cols = [c for c in ("id", "image", "extra_images", "conversations") if c in pf.schema_arrow.names]
    exists: dict[str, bool] = {}
    shared: dict[bytes, ImageRef] = {}  # one copy of each embedded image (rows repeat their image's bytes)
    row = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
        for obj in batch.to_pylist():
            out.n_items += 1
            cid = obj.get("id")
            label = str(cid) if cid is not None else f"row {row}"
            try:
                structs = ([obj["image"]] if obj.get("image") else []) + list(obj.get("extra_images") or [])
                images = [shared.setdefault(s["bytes"], ImageRef(data=s["bytes"])) if s.get("bytes")
                          else _path_image(s.get("path"), root) for s in structs]
                cid = str(cid) if cid is not None else f"{path.name}:{row}"
                out.conversations.append(make_conversation(cid, obj.get("conversations"), images, source,
                                                           role_key="from", text_key="value", exists=exists))
            except _Bad as e:
                out.rejects.append(Reject(source, f"{path}: {label}", str(e), STAGE))
            row += 1


# ----------------------------------------------------------------------------------------------- locating

def build_root(path: Path) -> Path | None:
    """The medvl build folder holding ``path`` (its folder or the one above, whose manifest lists it)."""
    path = path.resolve()
    for folder in (path.parent, path.parent.parent):
        man = folder / "manifest.json"
        if man.is_file():
            try:
                listed = {f.get("path") for f in json.loads(man.read_text(encoding="utf-8")).get("files", [])}
            except (OSError, ValueError, AttributeError):
                continue
            if path.relative_to(folder).as_posix() in listed:
                return folder
    return None


def detect_format(path: Path) -> str:
    """The format of a training-data file, from its extension and its first item."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix not in (".json", ".jsonl"):
        raise DataError(f"training data {path}: unknown format (extension {suffix or 'none'!r}); pass format= "
                        f"one of {', '.join(FORMATS)}")
    with open(path, "rb") as f:
        head = f.read(1 << 16).decode("utf-8", errors="replace")
    stripped = head.lstrip()
    if suffix == ".json" and stripped.startswith("["):
        return "llava-json"
    if suffix == ".json" and stripped.startswith("{"):
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"training data {path}: not valid JSON ({e})") from None
        if obj and all(isinstance(v, dict) and ("annotations" in v or "annotation" in v) for v in obj.values()):
            return "mixture-json"
        raise DataError(f"training data {path}: a JSON object that is not a mixture list "
                        f"({{name: {{image_dir, annotations, sample_ratio}}}})")
    first = next((ln for ln in head.splitlines() if ln.strip()), "")
    if '"messages"' in first:
        return "messages-jsonl"
    if '"conversations"' in first:
        return "llava-jsonl"
    raise DataError(f"training data {path}: cannot tell the format from its first line (no 'conversations' "
                    f"or 'messages' key); pass format= one of {', '.join(FORMATS)}")


def apply_ratio(items: list, ratio: float, *key: object) -> list:
    """``ratio`` copies of ``items``: whole copies, then a subset of ``round(frac * n)`` items chosen by a
    generator seeded with ``key`` (kept in file order). Same key -> same result."""
    whole = int(ratio)
    out = list(items) * whole
    k = math.floor((ratio - whole) * len(items) + 0.5)
    if k:
        pick = sorted(random.Random(stable_int("sample_ratio", *key)).sample(range(len(items)), k))
        out += [items[i] for i in pick]
    return out


# ----------------------------------------------------------------------------------------------- entry points

def read_file(path: Path, fmt: str, *, name: str, image_root: Path | None, ratio: float, seed: int) -> SourceData:
    """Read, validate and ratio-sample one annotation file (not a mixture)."""
    root = image_root if image_root is not None else (build_root(path) or path.resolve().parent)
    out = SourceData(name, path, fmt, 0, 0, ratio, [], [])
    if fmt == "parquet":
        _read_parquet(path, root, name, out)
    else:
        _read_json_items(path, fmt, root, name, out)
    out.n_valid = len(out.conversations)
    out.conversations = apply_ratio(out.conversations, ratio, seed, name)
    return out


def read_mixture(path: Path, *, image_root: Path | None, ratio: float, seed: int) -> list[SourceData]:
    """Every annotation file a mixture list names, each with its own (times the spec's) sample ratio."""
    try:
        mix = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"training data {path}: not readable JSON ({e})") from None
    if not isinstance(mix, dict):
        raise DataError(f"training data {path}: a mixture list is a JSON object, got {type(mix).__name__}")
    base = build_root(path) or path.resolve().parent
    out = []
    for ds, entry in mix.items():
        ann = entry.get("annotations", entry.get("annotation")) if isinstance(entry, dict) else None
        if not isinstance(ann, str):
            raise DataError(f"training data {path}: entry {ds!r} has no 'annotations' path")
        r = entry.get("sample_ratio", entry.get("repeat_time", 1.0))
        if not isinstance(r, (int, float)) or r < 0:
            raise DataError(f"training data {path}: entry {ds!r}: sample_ratio must be a number >= 0, got {r!r}")
        ann_path = Path(ann) if Path(ann).is_absolute() else base / ann
        img_dir = Path(entry.get("image_dir", entry.get("root", ".")))
        img_root = img_dir if img_dir.is_absolute() else (image_root or base) / img_dir
        fmt = _checked_format(ann_path, None, f" (entry {ds!r} of {path})")
        out.append(read_file(ann_path, fmt, name=ds, image_root=img_root, ratio=float(r) * ratio, seed=seed))
    return out


def _checked_format(path: Path, fmt: str | None, where: str = "") -> str:
    if not path.is_file():
        raise DataError(f"training data {path}{where}: file not found")
    return fmt or detect_format(path)


def read_spec(spec: str | Path | dict[str, Any] | DataSpec, seed: int) -> list[SourceData]:
    """One spec (a path or ``{path, format?, sample_ratio?, image_root?, name?}``) -> its files' data."""
    if not isinstance(spec, DataSpec):
        try:
            spec = DataSpec(path=spec) if isinstance(spec, (str, Path)) else DataSpec.model_validate(spec)
        except ValidationError as e:
            errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise DataError(f"training data spec {spec!r}: {errs}") from None
    path = Path(spec.path).expanduser()
    fmt = _checked_format(path, spec.format)
    if fmt == "mixture-json":
        return read_mixture(path, image_root=spec.image_root, ratio=spec.sample_ratio, seed=seed)
    return [read_file(path, fmt, name=spec.name or str(spec.path), image_root=spec.image_root,
                      ratio=spec.sample_ratio, seed=seed)]


def load_training_data(specs: Any, seed: int = 0) -> tuple[list[Conversation], list[Reject]]:
    """All conversations of ``specs`` (one spec or a list) and every rejected item with its reason."""
    if isinstance(specs, (str, Path, dict, DataSpec)):
        specs = [specs]
    convs: list[Conversation] = []
    rejects: list[Reject] = []
    for spec in specs:
        for sd in read_spec(spec, seed):
            convs.extend(sd.conversations)
            rejects.extend(sd.rejects)
    return convs, rejects
