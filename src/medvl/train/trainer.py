"""transformers ``Trainer`` glue: per-module learning rates and freezing, LoRA, cached tower features, the
batch collator and step metrics. The training loop itself is transformers' (so ``accelerate launch`` /
``torchrun``, DeepSpeed and FSDP run it unchanged); medvl only decides what learns, at which rate, on what."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from medvl.train.config import MODULES, LoraSpec, ModuleLR

CHECKPOINT_WEIGHTS = "medvl_weights.safetensors"  # a checkpoint's weights, under the in-memory parameter names
NO_DECAY = ("bias", "norm", "embed_tokens", "position_embedding", "class_embedding", "cls_token", "mask_token")


def module_of(name: str) -> str:
    """Which of projector / vision / lm a parameter belongs to (by its name in ``LlavaForConditionalGeneration``)."""
    if "multi_modal_projector" in name:
        return "projector"
    if "vision_tower" in name:
        return "vision"
    return "lm"


def apply_freezing(model: torch.nn.Module, lr: ModuleLR, lora: bool = False) -> dict[str, int]:
    """``requires_grad`` from the learning rates (0 = frozen; with LoRA only adapters learn in the LM);
    returns trainable parameter counts per module."""
    for name, p in model.named_parameters():
        module = module_of(name)
        trainable = getattr(lr, module) > 0
        if module == "lm" and lora:
            trainable = trainable and "lora_" in name
        p.requires_grad_(trainable)
    return trainable_counts(model)


def trainable_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable parameters per module (with LoRA, the LM's are its adapters)."""
    counts = dict.fromkeys(MODULES, 0)
    for name, p in model.named_parameters():
        if p.requires_grad:
            counts[module_of(name)] += p.numel()
    return counts


def param_groups(model: torch.nn.Module, lr: ModuleLR, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups per module (and decay / no decay); frozen parameters are left out."""
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.dim() > 1 and not any(k in name.lower() for k in NO_DECAY)
        groups.setdefault((module_of(name), decay), []).append(p)
    return [{"params": ps, "lr": getattr(lr, module), "weight_decay": weight_decay if decay else 0.0,
             "name": f"{module}{'' if decay else '_no_decay'}"}
            for (module, decay), ps in sorted(groups.items())]


def add_lora(model: torch.nn.Module, spec: LoraSpec, lr: ModuleLR) -> torch.nn.Module:
    """Wrap the LM's linear layers with LoRA adapters (peft); projector / tower keep their own switches."""
    from peft import LoraConfig, get_peft_model

    targets = "|".join(spec.target_modules)
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, bias="none",
                        target_modules=rf".*language_model.*\.({targets})")
    peft_model = get_peft_model(model, config)
    apply_freezing(peft_model, lr, lora=True)
    return peft_model


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """The plain transformers model with the adapters merged into its weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def install_feature_hook(model: torch.nn.Module) -> Any:
    """Let the model take ``image_features`` (cached pre-projector features): a forward pre-hook projects them
    and hands them to LLaVA as ``mm_encoder_outputs``, inside the model's forward, so DDP/FSDP see the projector
    used in the forward like any other module."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        feats = kwargs.pop("image_features", None)
        if feats is not None:
            projector = module.model.multi_modal_projector
            projected = projector(feats.to(projector.linear_1.weight.dtype))
            kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=list(projected))}
        return args, kwargs

    return model.register_forward_pre_hook(hook, with_kwargs=True)


def install_image_path_hook(model: torch.nn.Module, cached: bool) -> Any:
    """Run the image path first in every training forward, the same way on every process (a forward pre-hook):
    pixel values go through the tower and projector (as ``get_image_features`` would; handed to LLaVA as
    ``mm_encoder_outputs``), and a batch without images (a pack of text-only samples) runs that path on a blank
    input (a zero feature when features come from the cache, else a black image) whose sum, times 0, is added
    to the language model's input embeddings (a pre-hook on the LM: the modules run in their usual order). So the
    loss always depends on the modules that learn (a text-only batch of stage I or II gives zero gradients
    instead of failing), DDP sees the same parameters used everywhere, and ZeRO-3 / FSDP gather the same modules
    in the same order on every process, forward and backward."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from medvl.train.features import encode

    pending: dict[str, Any] = {"blank": None}  # the blank projection, added to the LM's input embeddings

    def pre(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        pending["blank"] = None
        if not module.training:
            return args, kwargs
        projector = module.model.multi_modal_projector
        weight = projector.linear_1.weight
        pixels = kwargs.get("pixel_values")
        if pixels is not None:
            feats = encode(module, kwargs.pop("pixel_values").to(weight.dtype))
            kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(
                pooler_output=list(projector(feats.to(weight.dtype))))}
        elif not any(kwargs.get(k) is not None for k in ("image_features", "mm_encoder_outputs")):
            if cached:  # ZeRO-3 keeps the whole shape in ds_shape
                feats = weight.new_zeros(1, 1, getattr(weight, "ds_shape", weight.shape)[1])
            else:
                size = module.config.vision_config.image_size
                feats = encode(module, weight.new_zeros(1, 3, size, size)).to(weight.dtype)
            pending["blank"] = projector(feats).sum()
        return args, kwargs

    def lm_input(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        blank, pending["blank"] = pending["blank"], None
        embeds = kwargs.get("inputs_embeds")
        if blank is not None and embeds is not None:
            kwargs["inputs_embeds"] = embeds + 0.0 * blank.to(embeds.dtype)
        return args, kwargs

    return (model.register_forward_pre_hook(pre, with_kwargs=True),
            model.model.language_model.register_forward_pre_hook(lm_input, with_kwargs=True))


class Collator:
    """Packs -> model inputs: token tensors from ``collate_packs`` plus pixel values (the processor's image
    preprocessing) or cached features; ``n_tokens`` / ``n_samples`` ride along for the metrics."""

    def __init__(self, pad_id: int, image_processor: Any = None, cache: Any = None):
        self.pad_id = pad_id
        self.image_processor = image_processor
        self.cache = cache

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from medvl.train.packing import collate_packs

        batch = collate_packs(items, self.pad_id)
        images = batch.pop("images")
        batch["n_tokens"] = torch.tensor(sum(len(it["input_ids"]) for it in items))
        batch["n_samples"] = torch.tensor(sum(int(it.get("n_samples", 1)) for it in items))
        if images:
            if self.cache is not None:
                batch["image_features"] = self.cache.load(images)
            else:
                pil = [ref.open() for ref in images]
                batch["pixel_values"] = self.image_processor(pil, return_tensors="pt")["pixel_values"]
        return batch


class MedvlTrainer(Trainer):
    """``Trainer`` with per-module learning rates and token / sample counters."""

    def __init__(self, *args: Any, module_lr: ModuleLR, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.module_lr = module_lr
        self.tokens_seen = 0
        self.samples_seen = 0

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            groups = param_groups(model or self.model, self.module_lr, self.args.weight_decay)
            if not groups:
                raise ValueError("nothing to train: every module has learning rate 0")
            self.optimizer = torch.optim.AdamW(groups, lr=max(g["lr"] for g in groups),
                                               betas=(self.args.adam_beta1, self.args.adam_beta2),
                                               eps=self.args.adam_epsilon)
        return self.optimizer

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        self.tokens_seen += int(inputs.pop("n_tokens", 0))
        self.samples_seen += int(inputs.pop("n_samples", 0))
        inputs["use_cache"] = False  # a cache would disable the block-diagonal mask of packed samples
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoint weights under the model's own parameter names (adapters included). ``save_pretrained`` renames
        LLaVA's keys to the original layout, which ``Trainer`` resumes without renaming back (every weight silently
        stays at its start value), and saves only the adapters of a PEFT model (a LoRA stage's projector and tower
        would restart). DeepSpeed and FSDP keep their own checkpoint formats."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._save(output_dir, state_dict)
        if not self.args.should_save:
            return None
        from safetensors.torch import save_model
        from transformers.trainer import TRAINING_ARGS_NAME

        out = Path(output_dir if output_dir is not None else self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_model(self.accelerator.unwrap_model(self.model), str(out / CHECKPOINT_WEIGHTS))
        torch.save(self.args, out / TRAINING_ARGS_NAME)
        return None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Load a checkpoint written by :meth:`_save` strictly: any missing or unexpected weight is an error."""
        path = Path(resume_from_checkpoint) / CHECKPOINT_WEIGHTS
        if not path.is_file():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from safetensors.torch import load_model

        load_model(model if model is not None else self.model, str(path), strict=True)
        return None


class MetricsLog(TrainerCallback):
    """Appends one JSON line per logging step to ``metrics.jsonl``: loss, grad norm, per-group learning rate,
    tokens/s and samples/s (all processes), elapsed time. ``lr_groups`` are the rates the step's optimizer update
    used (read before the scheduler moves them on), like transformers' own ``learning_rate``."""

    def __init__(self, path: Path, trainer: MedvlTrainer):
        self.path = path
        self.trainer = trainer
        self.last = (time.perf_counter(), 0, 0)
        self.step_lrs: dict[str, float] = {}

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        opt = self.trainer.optimizer
        self.step_lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)} if opt else {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = (time.perf_counter(), self.trainer.tokens_seen, self.trainer.samples_seen)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        now = time.perf_counter()
        t0, tok0, smp0 = self.last
        tokens, samples = self.trainer.tokens_seen, self.trainer.samples_seen
        self.last = (now, tokens, samples)
        if not state.is_world_process_zero or not logs:
            return
        dt = max(now - t0, 1e-9)
        world = max(1, args.world_size)
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs, "lr_groups": self.step_lrs}
        if "train_runtime" not in logs:  # the end-of-training summary line has its own rates
            record |= {"tokens_per_s": round((tokens - tok0) * world / dt, 1),
                       "samples_per_s": round((samples - smp0) * world / dt, 2)}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
