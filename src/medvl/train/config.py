"""`medvl train` configuration: one YAML file, the three GMAI-VL stages as presets, each overridable.

```yaml
model: runs/init            # a folder from `medvl model init` (or a previous stage's final/)
output_dir: runs/medvl
data: [build/mixture/train.json]      # medvl exports or any LLaVA JSON; per-stage `data:` overrides it
max_length: 2048
stages:
  - preset: stage1          # projector only, lr 1e-3, tower features cached
    max_steps: 200
  - preset: stage2
  - {preset: stage3, lora: {r: 16}}
```
Presets live in ``presets/*.yaml`` beside this file; a stage's keys override its preset's (``lr`` key by key).
Relative paths resolve against the config file's folder."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medvl.train.data import DataSpec  # one schema for a data entry, shared with the readers

PRESETS = ("stage1", "stage2", "stage3")
MODULES = ("projector", "vision", "lm")
SHIPPED_DEEPSPEED = {"zero2": "deepspeed_zero2.json", "zero3": "deepspeed_zero3.json"}  # in configs/


class TrainConfigError(ValueError):
    """A training config problem, naming the file and the key."""


class ModuleLR(BaseModel):
    """Learning rate per module; 0 freezes the module (left out of the optimizer)."""

    model_config = ConfigDict(extra="forbid")
    projector: float = Field(ge=0)
    vision: float = Field(ge=0)
    lm: float = Field(ge=0)

    def trainable(self) -> list[str]:
        return [m for m in MODULES if getattr(self, m) > 0]


class LoraSpec(BaseModel):
    """LoRA adapters on the language model (peft); merged into the weights when the stage ends."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class StageConfig(BaseModel):
    """One training stage (a preset plus overrides)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    lr: ModuleLR
    lora: LoraSpec | None = None
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="overrides epochs")
    batch_size: int = Field(4, ge=1, description="packs per device per step")
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    gradient_checkpointing: bool = False
    bf16: Literal["auto", "on", "off"] = "auto"
    feature_cache: Literal["auto", "on", "off"] = Field(
        "auto", description="cache frozen-tower features on disk; auto = on when the vision lr is 0")
    data: list[DataSpec] | None = None
    save_steps: int = Field(50, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    dataloader_workers: int = Field(0, ge=0)

    def uses_feature_cache(self) -> bool:
        if self.feature_cache == "auto":
            return self.lr.vision == 0
        if self.feature_cache == "on" and self.lr.vision > 0:
            raise TrainConfigError(f"stage {self.name}: feature_cache: on needs a frozen vision tower (lr.vision: 0)")
        return self.feature_cache == "on"


class TrainConfig(BaseModel):
    """The whole run: the starting model, the data, and the stages in order."""

    model_config = ConfigDict(extra="forbid")
    model: str
    output_dir: str
    data: list[DataSpec] = []
    max_length: int = Field(2048, ge=32)
    packing: bool = True
    seed: int = 0
    feature_cache_dir: str | None = Field(None, description="default: <output_dir>/feature_cache")
    feature_dtype: Literal["float32", "float16"] = "float32"
    deepspeed: str | None = Field(None, description="DeepSpeed JSON for every stage: a path, or zero2 / zero3 (the "
                                  "files shipped in medvl/train/configs/; their 'auto' values the Trainer fills)")
    fsdp: str | None = Field(None, description='FSDP options as TrainingArguments takes them, e.g. "full_shard '
                             'auto_wrap" (or launch with accelerate launch --config_file configs/fsdp.yaml)')
    fsdp_config: dict[str, Any] | str | None = Field(None, description="FSDP settings: a mapping or a JSON path")
    stages: list[StageConfig]

    @model_validator(mode="after")
    def _engines(self) -> TrainConfig:
        if self.deepspeed and self.fsdp:
            raise ValueError("deepspeed and fsdp exclude each other; set one")
        for key in ("deepspeed", "fsdp_config"):
            value = getattr(self, key)
            if isinstance(value, str) and value not in SHIPPED_DEEPSPEED and not Path(value).is_file():
                raise ValueError(f"{key}: no such file {value}" + (f" (or one of {', '.join(SHIPPED_DEEPSPEED)})"
                                                                    if key == "deepspeed" else ""))
        return self

    def engine_args(self) -> dict[str, Any]:
        """The DeepSpeed / FSDP settings as ``TrainingArguments`` keywords (empty when neither is set)."""
        out: dict[str, Any] = {}
        if self.deepspeed:
            name = SHIPPED_DEEPSPEED.get(self.deepspeed)
            out["deepspeed"] = str(resources.files("medvl.train") / "configs" / name) if name else self.deepspeed
        if self.fsdp:
            out["fsdp"] = self.fsdp
        if self.fsdp_config is not None:
            out["fsdp_config"] = self.fsdp_config
        return out

    @field_validator("stages")
    @classmethod
    def _unique_names(cls, stages: list[StageConfig]) -> list[StageConfig]:
        names = [s.name for s in stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stage names must be unique; repeated: {dup}")
        if not stages:
            raise ValueError("at least one stage is needed")
        return stages

    def stage(self, name: str) -> StageConfig:
        for s in self.stages:
            if s.name == name:
                return s
        raise TrainConfigError(f"no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def data_for(self, stage: StageConfig) -> list[DataSpec]:
        specs = stage.data if stage.data is not None else self.data
        if not specs:
            raise TrainConfigError(f"stage {stage.name}: no data (set `data:` at the top or in the stage)")
        return specs

    def fingerprint(self, stage: StageConfig) -> dict[str, Any]:
        """What a checkpoint of ``stage`` depends on; resuming with anything different is refused."""
        top = self.model_dump(exclude={"stages", "feature_cache_dir"})
        top["data"] = [d.model_dump() for d in self.data_for(stage)]
        return {"run": top, "stage": stage.model_dump(exclude={"save_steps", "save_total_limit", "logging_steps",
                                                               "dataloader_workers", "data"})}


def preset(name: str) -> dict[str, Any]:
    """A preset stage as a dict (from ``presets/<name>.yaml``)."""
    if name not in PRESETS:
        raise TrainConfigError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    text = (resources.files("medvl.train") / "presets" / f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _merge_stage(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"preset": raw}
    if not isinstance(raw, dict):
        raise TrainConfigError(f"{where}: a stage is a preset name or a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    base = preset(raw.pop("preset")) if "preset" in raw else {}
    lr = {**base.get("lr", {}), **(raw.pop("lr", None) or {})}
    merged = {**base, **raw}
    if lr:
        merged["lr"] = lr
    return merged


def _resolve(path: str, root: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (root / p))


def _resolve_data(specs: Any, root: Path) -> list[dict[str, Any]]:
    out = []
    for spec in specs or []:
        spec = {"path": spec} if isinstance(spec, str) else dict(spec)
        if "path" in spec:
            spec["path"] = _resolve(str(spec["path"]), root)
        if spec.get("image_root"):
            spec["image_root"] = _resolve(str(spec["image_root"]), root)
        out.append(spec)
    return out


def parse_config(raw: dict[str, Any], root: Path, where: str = "config") -> TrainConfig:
    """A validated config from a mapping; relative paths against ``root``."""
    if not isinstance(raw, dict):
        raise TrainConfigError(f"{where}: expected a mapping at the top")
    raw = dict(raw)
    stages = raw.pop("stages", list(PRESETS))
    raw["stages"] = [_merge_stage(s, f"{where}: stages[{i}]") for i, s in enumerate(stages)]
    for s in raw["stages"]:
        if "data" in s and s["data"] is not None:
            s["data"] = _resolve_data(s["data"], root)
    raw["data"] = _resolve_data(raw.get("data"), root)
    for key in ("model", "output_dir", "feature_cache_dir"):
        if raw.get(key):
            raw[key] = _resolve(str(raw[key]), root)
    for key in ("deepspeed", "fsdp_config"):
        if isinstance(raw.get(key), str) and raw[key] not in SHIPPED_DEEPSPEED:
            raw[key] = _resolve(raw[key], root)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise TrainConfigError(f"{where}: {problems}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a training YAML file (``overrides`` replace top-level keys, e.g. from the CLI)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise TrainConfigError(f"cannot read training config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise TrainConfigError(f"{path}: not valid YAML ({e})") from None
    raw = {**(raw or {}), **(overrides or {})}
    return parse_config(raw, path.resolve().parent, where=str(path))


def digest(obj: Any) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
