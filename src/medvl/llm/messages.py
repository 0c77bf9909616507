"""Chat messages in the OpenAI format: images as base64 data URLs, their cache-key form (an image is keyed by
the sha256 of its data URL, never by its bytes) and the token estimate a dry run prices."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

_MIME_BY_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
ImageInput = str | Path | bytes | bytearray


class ImageLoadError(ValueError):
    """An image that cannot be read or decoded; the message names the file."""


def _describe(ref: ImageInput) -> str:
    return f"<{len(ref)} image bytes>" if isinstance(ref, (bytes, bytearray)) else str(ref)


def image_bytes(ref: ImageInput) -> bytes:
    """The encoded bytes of an image given as a path or as bytes."""
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref)
    path = Path(ref)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    return path.read_bytes()


def to_data_url(ref: ImageInput) -> str:
    """A ``data:<mime>;base64,...`` URL; PNG/JPEG/WEBP/GIF pass through, anything else is re-encoded as PNG."""
    from PIL import Image

    data = image_bytes(ref)
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").upper()
            if fmt not in _MIME_BY_FORMAT:
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="PNG")
                data, fmt = buf.getvalue(), "PNG"
    except Exception as e:  # noqa: BLE001 - PIL raises several types for bad data
        raise ImageLoadError(f"cannot decode image {_describe(ref)}: {e}") from e
    return f"data:{_MIME_BY_FORMAT[fmt]};base64,{base64.b64encode(data).decode('ascii')}"


def user_message(text: str, images: list[ImageInput] | tuple = (), detail: str | None = None) -> dict[str, Any]:
    """One user turn: the images (data URLs) first, then the text; a plain string when there is no image."""
    if not images:
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = []
    for ref in images:
        url: dict[str, Any] = {"url": to_data_url(ref)}
        if detail:
            url["detail"] = detail
        parts.append({"type": "image_url", "image_url": url})
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def text_message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": text}


def _keyed_content(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    out = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            out.append({"type": "image_url", "sha256": hashlib.sha256(url.encode("ascii", "replace")).hexdigest(),
                        "detail": (part.get("image_url") or {}).get("detail")})
        else:
            out.append(part)
    return out


def keyed_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with every image replaced by the sha256 of its data URL (for cache keys and dry runs)."""
    return [{**m, "content": _keyed_content(m.get("content"))} for m in messages]


def cache_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """sha256 of (model, messages with image hashes, request parameters): what makes two requests the same."""
    blob = json.dumps({"model": model, "messages": keyed_messages(messages), "params": params},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _image_tokens(url: str, detail: str | None) -> int:
    """OpenAI's published estimate for one image: 85 tokens at low detail; at high detail the image is fit into
    2048x2048, its short side scaled to 768, and each 512-px tile costs 170 more."""
    if detail == "low":
        return 85
    from PIL import Image

    try:
        raw = base64.b64decode(url.split(",", 1)[1])
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - an estimate: assume one 512x512 tile
        return 85 + 170
    s = min(1.0, 2048 / max(w, h))
    w, h = w * s, h * s
    s = min(1.0, 768 / min(w, h))
    w, h = w * s, h * s
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A rough prompt-token estimate (4 characters a token, images by OpenAI's tile rule, 4 per message)."""
    total = 0
    for m in messages:
        total += 4
        content = m.get("content")
        if isinstance(content, str):
            total += math.ceil(len(content) / 4)
            continue
        for part in content or []:
            if part.get("type") == "image_url":
                iu = part.get("image_url") or {}
                total += _image_tokens(str(iu.get("url", "")), iu.get("detail"))
            else:
                total += math.ceil(len(str(part.get("text", ""))) / 4)
    return total
