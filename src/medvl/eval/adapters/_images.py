"""Turn an ``ImageRef`` (file path or encoded bytes) into a PIL image; data URLs come from the shared model
client (:func:`medvl.llm.messages.to_data_url`)."""

from __future__ import annotations

import io

from medvl.eval.types import ImageRef
from medvl.llm.messages import ImageLoadError, _describe, image_bytes, to_data_url

__all__ = ["ImageLoadError", "load_pil", "to_data_url"]


def load_pil(ref: ImageRef):
    """Open ``ref`` as an RGB PIL image (fully loaded, file closed)."""
    from PIL import Image

    data = image_bytes(ref)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    except Exception as e:  # PIL raises several types for bad data
        raise ImageLoadError(f"cannot decode image {_describe(ref)}: {e}") from e
