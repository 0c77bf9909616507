"""Turn an ``ImageRef`` (file path or encoded bytes) into a PIL image or a base64 data URL."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from medvl.eval.types import ImageRef

_MIME_BY_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


class ImageLoadError(ValueError):
    """An image reference that cannot be read; the message names the file."""


def _describe(ref: ImageRef) -> str:
    return f"<{len(ref)} image bytes>" if isinstance(ref, (bytes, bytearray)) else str(ref)


def _read_bytes(ref: ImageRef) -> bytes:
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref)
    path = Path(ref)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    return path.read_bytes()


def load_pil(ref: ImageRef):
    """Open ``ref`` as an RGB PIL image (fully loaded, file closed)."""
    from PIL import Image

    data = _read_bytes(ref)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    except Exception as e:  # PIL raises several types for bad data
        raise ImageLoadError(f"cannot decode image {_describe(ref)}: {e}") from e


def to_data_url(ref: ImageRef) -> str:
    """A ``data:<mime>;base64,...`` URL; PNG/JPEG/WEBP/GIF pass through, anything else is re-encoded as PNG."""
    from PIL import Image

    data = _read_bytes(ref)
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").upper()
            if fmt not in _MIME_BY_FORMAT:
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="PNG")
                data, fmt = buf.getvalue(), "PNG"
    except Exception as e:
        raise ImageLoadError(f"cannot decode image {_describe(ref)}: {e}") from e
    return f"data:{_MIME_BY_FORMAT[fmt]};base64,{base64.b64encode(data).decode('ascii')}"
