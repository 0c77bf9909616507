"""Frozen-tower feature cache: each image's vision features computed once and kept on disk.

A feature is the tower's hidden state at the model's ``vision_feature_layer`` with the class token dropped
(``default`` strategy), before the projector: exactly what ``LlavaModel.get_image_features`` feeds the
projector. Files live at ``<root>/<tower key>/<sha[:2]>/<sha>.npy`` where ``sha`` is the image's content hash
and the tower key hashes the tower weights, the feature layer, the selection strategy and the image
processor settings, so a changed tower or preprocessing never reads stale features. Writes go to a temporary
name and are renamed, so a killed run never leaves a half-written file that a later run trusts."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def tower_key(model: Any, image_processor: Any) -> str:
    """Hash of what a feature depends on: tower weights, feature layer, strategy, preprocessing."""
    h = hashlib.sha256()
    tower = model.model.vision_tower
    for name, tensor in sorted(tower.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    cfg = model.config
    h.update(json.dumps([cfg.vision_feature_layer, cfg.vision_feature_select_strategy,
                         image_processor.to_dict()], sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def encode(model: Any, pixel_values: Any) -> Any:
    """Pre-projector features [N, tokens, dim] of a pixel batch, as ``get_image_features`` selects them."""
    cfg = model.config
    out = model.model.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
    layer = cfg.vision_feature_layer
    if not isinstance(layer, int):
        hidden = [out.hidden_states[i] for i in layer]
        if cfg.vision_feature_select_strategy == "default":
            hidden = [h[:, 1:] for h in hidden]
        return __import__("torch").cat(hidden, dim=-1)
    feats = out.hidden_states[layer]
    return feats[:, 1:] if cfg.vision_feature_select_strategy == "default" else feats


class FeatureCache:
    """On-disk features of one tower; ``ensure`` fills it, ``load`` reads a batch as a tensor."""

    def __init__(self, root: str | Path, model: Any, image_processor: Any, dtype: str = "float32"):
        self.key = tower_key(model, image_processor)
        self.dir = Path(root) / self.key
        self.model = model
        self.image_processor = image_processor
        self.dtype = np.dtype(dtype)

    def path(self, sha: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.npy"

    def missing(self, refs: Iterable[Any]) -> list[Any]:
        """Distinct images (by content hash) with no cached feature yet, in first-seen order."""
        seen: dict[str, Any] = {}
        for ref in refs:
            if ref.key not in seen and not self.path(ref.key).is_file():
                seen[ref.key] = ref
        return list(seen.values())

    def ensure(self, refs: Sequence[Any], batch_size: int = 8,
               progress: Callable[[Iterable[int], int], Iterable[int]] | None = None) -> int:
        """Compute and store the features of every image not cached yet; returns how many were computed."""
        import torch

        todo = self.missing(refs)
        starts = range(0, len(todo), batch_size)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in progress(starts, len(starts)) if progress else starts:
                chunk = todo[start:start + batch_size]
                pixels = self.image_processor([r.open() for r in chunk], return_tensors="pt")["pixel_values"]
                tower = self.model.model.vision_tower
                with torch.no_grad():
                    feats = encode(self.model, pixels.to(tower.device, tower.dtype)).float().cpu().numpy()
                for ref, feat in zip(chunk, feats):
                    self._write(ref.key, feat.astype(self.dtype))
        finally:
            self.model.train(was_training)
        return len(todo)

    def _write(self, sha: str, feat: np.ndarray) -> None:
        path = self.path(sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, feat)
        os.replace(tmp, path)

    def load(self, refs: Sequence[Any]) -> Any:
        """Features of ``refs`` stacked [N, tokens, dim] as float32 (a missing one is an error naming it)."""
        import torch

        arrays = []
        for ref in refs:
            path = self.path(ref.key)
            try:
                arrays.append(np.load(path))
            except (OSError, ValueError) as e:
                raise FileNotFoundError(f"feature cache {path} for image {ref.path or ref.key}: {e}") from None
        return torch.from_numpy(np.stack(arrays).astype(np.float32))
