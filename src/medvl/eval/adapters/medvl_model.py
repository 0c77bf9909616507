"""``medvl:PATH`` — a model saved by ``medvl train`` or ``medvl model init``: a plain transformers LLaVA folder
(model, processor, chat template), served by the ``hf`` adapter. PATH may also be a stage folder of a training
run (``runs/x/stage3``: its ``final/`` model is used)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvl.eval.adapters._base import AdapterError, ModelAdapter
from medvl.eval.types import ADAPTERS


def _is_transformers_vlm(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        conf = json.loads(cfg.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return isinstance(conf, dict) and ("vision_config" in conf or "llava" in str(conf.get("model_type", "")))


@ADAPTERS.register("medvl")
class MedvlModelAdapter(ModelAdapter):
    """Factory: returns the adapter that can serve a medvl model folder."""

    def __new__(cls, target: str, batch_size: int = 8, **options: Any):  # type: ignore[misc]
        path = Path(target).expanduser()
        if path.is_dir() and not (path / "config.json").is_file() and (path / "final" / "config.json").is_file():
            path = path / "final"  # a `medvl train` stage folder
        if not path.is_dir():
            raise AdapterError(f"medvl model folder not found: {path} (give a folder saved by `medvl train`)")
        if _is_transformers_vlm(path):
            from medvl.eval.adapters.hf import HFAdapter

            return HFAdapter(str(path), batch_size=batch_size, **options)
        raise AdapterError(
            f"{path} is not a model saved by `medvl train` (or a transformers LLaVA folder with a "
            "config.json holding a vision_config); train one with `medvl train`, or use hf:PATH for "
            "a transformers model"
        )
