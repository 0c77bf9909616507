"""Run the stages of a training config in order, each starting from the previous stage's ``final/`` folder.

A stage's folder (``<output_dir>/<stage>/``) holds ``checkpoints/`` (transformers checkpoints: weights,
optimizer, scheduler, RNG state, data position), ``final/`` (a plain transformers model folder), ``metrics.jsonl``
(one line per logged step), ``rejects.jsonl`` (every training item not used, with its reason) and
``stage.json`` (what the stage depends on, counts, packing efficiency, identity of the run). ``--resume`` skips
finished stages and continues an unfinished one from its last checkpoint, refusing a changed config."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvl.train.config import StageConfig, TrainConfig, TrainConfigError

Log = Callable[[str], None]


@dataclass
class StageResult:
    name: str
    final: Path
    skipped: bool
    summary: dict[str, Any]


def identity() -> dict[str, Any]:
    """Versions and source revision, recorded with every stage."""
    import torch
    import transformers

    from importlib.metadata import version

    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    return {"medvl": version("medvl"), "git": rev, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def _check_resumable(stage_dir: Path, fingerprint: dict[str, Any], resume: bool, overwrite: bool) -> bool:
    """Refuse to mix runs: an existing stage folder is resumed only under the same config. Reads only (every
    process checks); returns True when ``overwrite`` asks to delete the folder first."""
    state = stage_dir / "stage.json"
    if not stage_dir.exists() or not any(stage_dir.iterdir()):
        return False
    if overwrite:
        return True
    if not resume:
        raise TrainConfigError(f"{stage_dir} holds an earlier run; pass --resume to continue it or --overwrite")
    if state.is_file():
        old = json.loads(state.read_text(encoding="utf-8")).get("fingerprint")
        changes = _diff(old, json.loads(json.dumps(fingerprint, default=str)))
        if changes:
            raise TrainConfigError(f"{stage_dir}: the config changed since this stage started, refusing to "
                                   f"resume: {'; '.join(changes[:8])}")
    return False


def _finished(stage_dir: Path) -> bool:
    state = stage_dir / "stage.json"
    return state.is_file() and json.loads(state.read_text(encoding="utf-8")).get("status") == "done"


def last_checkpoint(stage_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    ckpt = stage_dir / "checkpoints"
    return get_last_checkpoint(str(ckpt)) if ckpt.is_dir() else None


def load_model(path: Path) -> tuple[Any, Any]:
    """(model, processor) from a folder; any weight the folder lacks is an error, never a silent re-init."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model, info = LlavaForConditionalGeneration.from_pretrained(path, local_files_only=True, dtype=torch.float32,
                                                                output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if k]
    if missing or info.get("mismatched_keys"):
        raise TrainConfigError(f"{path}: weights missing or mismatched ({(missing or info['mismatched_keys'])[:5]}); "
                               "refusing to train on re-initialized weights")
    return model, AutoProcessor.from_pretrained(path, local_files_only=True)


def prepare_data(cfg: TrainConfig, stage: StageConfig, processor: Any, log: Log,
                 global_batch: int = 1) -> tuple[Any, dict, list]:
    """(dataset, stats, rejects): read, tokenize (loss on answers), pack (the pack count made a multiple of
    ``global_batch``, see :func:`fill_global_batches`)."""
    from medvl.model import IMAGE_TOKEN
    from medvl.model.assemble import image_tokens_per_image
    from medvl.train.data import load_training_data
    from medvl.train.packing import PackedDataset
    from medvl.train.tokenize import tokenize_all

    conversations, rejects = load_training_data(cfg.data_for(stage), seed=cfg.seed)
    tok = processor.tokenizer
    samples, tok_rejects, stats = tokenize_all(
        conversations, tok, chat_template=processor.chat_template, image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        n_image_tokens=image_tokens_per_image(processor), max_length=cfg.max_length)
    rejects = list(rejects) + list(tok_rejects)
    if not samples:
        raise TrainConfigError(f"stage {stage.name}: no usable training sample ({len(rejects)} rejected; "
                               "see rejects.jsonl)")
    dataset = PackedDataset(samples, cfg.max_length, seed=cfg.seed, packed=cfg.packing)
    short = fill_global_batches(dataset, global_batch)
    if short:
        log(f"{stage.name}: {len(dataset)} packs do not fill the last step of an epoch ({global_batch} packs per "
            f"step over all processes); with several processes accelerate repeats {short} packs there")
    pstats = dataset.stats
    summary = {"conversations": len(conversations) + len(rejects) - len(tok_rejects), "rejected": len(rejects),
               "tokenize": stats.as_dict(), "packing": {"enabled": cfg.packing, **pstats}}
    log(f"{stage.name}: {len(samples)} samples in {len(dataset)} packs "
        f"(efficiency {pstats['efficiency']:.1%}), {stats.truncated} truncated to {cfg.max_length} tokens, "
        f"{len(rejects)} rejected")
    return dataset, summary, rejects


def fill_global_batches(dataset: Any, global_batch: int) -> int:
    """Split packs (whole samples: the last sample of the pack holding most samples moves to a new pack) until
    the pack count divides by ``global_batch`` (packs per optimizer step over all processes), so every step of
    an epoch is full. Otherwise the last step is short with one process, while with several accelerate fills
    it with packs from the epoch's start (``even_batches``) and N processes train on other data than one.
    Returns how many packs are still missing (0 unless there are too few multi-sample packs to split)."""
    from medvl.train.packing import packing_stats

    packs = dataset.packs
    while len(packs) % global_batch and max((len(p) for p in packs), default=0) > 1:
        fullest = max(range(len(packs)), key=lambda i: (len(packs[i]), -i))
        packs.append([packs[fullest].pop()])
    dataset.stats = packing_stats(packs, [len(s.input_ids) for s in dataset.samples], dataset.max_length)
    return -len(packs) % global_batch


def training_args(cfg: TrainConfig, stage: StageConfig, stage_dir: Path) -> Any:
    """transformers ``TrainingArguments`` of a stage (DeepSpeed / FSDP settings forwarded from the config)."""
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    if cfg.deepspeed and not cuda and _world_size() > 1:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")  # on GPUs accelerate starts DeepSpeed's processes itself
    bf16 = stage.bf16 == "on" or (stage.bf16 == "auto" and cuda and torch.cuda.is_bf16_supported())
    return TrainingArguments(
        output_dir=str(stage_dir / "checkpoints"), per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.grad_accum, learning_rate=max(stage.lr.projector, stage.lr.vision,
                                                                        stage.lr.lm),
        weight_decay=stage.weight_decay, adam_beta1=stage.adam_betas[0], adam_beta2=stage.adam_betas[1],
        max_grad_norm=stage.max_grad_norm, lr_scheduler_type=stage.schedule, warmup_steps=stage.warmup_ratio,
        num_train_epochs=stage.epochs, max_steps=stage.max_steps or -1, logging_steps=stage.logging_steps,
        save_steps=stage.save_steps, save_total_limit=stage.save_total_limit, seed=cfg.seed, data_seed=cfg.seed,
        bf16=bf16, activation_checkpointing=stage.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False}, remove_unused_columns=False, report_to=[],
        dataloader_num_workers=stage.dataloader_workers, ddp_backend="gloo" if not cuda and _world_size() > 1 else None,
        ddp_find_unused_parameters=stage.lr.vision > 0 or stage.lr.lm > 0, disable_tqdm=True, use_cpu=not cuda,
        save_only_model=False, **cfg.engine_args())


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def run_stage(cfg: TrainConfig, stage: StageConfig, init: Path, resume: bool = False, overwrite: bool = False,
              log: Log = print) -> StageResult:
    """Train one stage from ``init`` and save ``<output_dir>/<stage>/final``."""
    from medvl.model.assemble import save_model
    from medvl.train.features import FeatureCache
    from medvl.train.trainer import Collator, MedvlTrainer, MetricsLog, add_lora, apply_freezing, trainable_counts
    from medvl.train.trainer import install_image_path_hook, install_feature_hook, merge_lora

    stage_dir = Path(cfg.output_dir) / stage.name
    fingerprint = {**cfg.fingerprint(stage), "init": str(init)}
    if resume and _finished(stage_dir):
        state = json.loads((stage_dir / "stage.json").read_text(encoding="utf-8"))
        log(f"{stage.name}: finished earlier, skipped")
        return StageResult(stage.name, stage_dir / "final", True, state)
    args = training_args(cfg, stage, stage_dir)  # sets up the processes (torchrun / accelerate launch)
    main = args.process_index == 0
    wipe = _check_resumable(stage_dir, fingerprint, resume, overwrite)  # every process checks, one writes
    args.distributed_state.wait_for_everyone()
    if main:
        if wipe:
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        _write_state(stage_dir, {"status": "running", "fingerprint": fingerprint, "identity": identity()})
    args.distributed_state.wait_for_everyone()
    model, processor = load_model(init)
    global_batch = args.world_size * stage.batch_size * stage.grad_accum
    dataset, summary, rejects = prepare_data(cfg, stage, processor, log, global_batch)
    if main:
        _write_rejects(stage_dir / "rejects.jsonl", rejects)
    counts = apply_freezing(model, stage.lr)
    if stage.lora is not None:
        from transformers import set_seed

        set_seed(cfg.seed)  # the adapters' random init must not depend on what the process ran before
        model = add_lora(model, stage.lora, stage.lr)
        counts = trainable_counts(model)
    cache = None
    if stage.uses_feature_cache():
        with _whole_tower(model, args):
            cache = FeatureCache(cfg.feature_cache_dir or Path(cfg.output_dir) / "feature_cache", model,
                                 processor.image_processor, cfg.feature_dtype)
            with args.main_process_first(desc="feature cache"):
                t0 = time.perf_counter()
                n = cache.ensure([r for s in dataset.samples for r in s.images])
                log(f"{stage.name}: feature cache {cache.dir}: {n} images encoded in "
                    f"{time.perf_counter() - t0:.1f} s")
        install_feature_hook(model.get_base_model() if hasattr(model, "get_base_model") else model)
    install_image_path_hook(model.get_base_model() if hasattr(model, "get_base_model") else model, cache is not None)
    collator = Collator(processor.tokenizer.pad_token_id, processor.image_processor, cache)
    trainer = MedvlTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                           module_lr=stage.lr)
    metrics_path = stage_dir / "metrics.jsonl"
    ckpt = last_checkpoint(stage_dir) if resume else None
    if main and ckpt is None and metrics_path.exists():
        metrics_path.unlink()
    if main and ckpt is not None and metrics_path.exists():
        _drop_metrics_after(metrics_path, ckpt)
    trainer.add_callback(MetricsLog(metrics_path, trainer))
    log(f"{stage.name}: training {', '.join(stage.lr.trainable())} ({counts}) "
        f"{'from ' + ckpt if ckpt else 'from ' + str(init)}")
    out = trainer.train(resume_from_checkpoint=ckpt)
    final = stage_dir / "final"
    summary |= {"train": out.metrics, "trainable_parameters": counts, "feature_cache": cache.key if cache else None}
    full = _gathered_weights(trainer)  # every process takes part when ZeRO-3 / FSDP shard the weights
    if trainer.is_world_process_zero():
        plain = merge_lora(trainer.model if full is None else _rebuilt(trainer, full, stage))
        save_model(plain, processor, final, {"stage": stage.name, "init": str(init)})
        _write_state(stage_dir, {"status": "done", "fingerprint": fingerprint, "identity": identity(), **summary})
    trainer.accelerator.wait_for_everyone()
    return StageResult(stage.name, final, False, summary)


def _gathered_weights(trainer: Any) -> dict[str, Any] | None:
    """The whole state dict on the main process when DeepSpeed ZeRO-3 or FSDP shard the weights over the
    processes (a collective call: every process makes it); None when each process holds the whole model."""
    zero3 = trainer.is_deepspeed_enabled and trainer.accelerator.deepspeed_config["zero_optimization"]["stage"] == 3
    if not (zero3 or trainer.is_fsdp_enabled):
        return None
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


def _whole_tower(model: Any, args: Any) -> Any:
    """Context in which the vision tower's weights are whole on every process (ZeRO-3 partitions them from
    loading on; gathering is collective, so every process enters it); a no-op otherwise."""
    import contextlib

    ds = getattr(args, "hf_deepspeed_config", None)
    if ds is None or not ds.is_zero3():
        return contextlib.nullcontext()
    import deepspeed

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return deepspeed.zero.GatheredParameters(list(base.model.vision_tower.parameters()))


def _rebuilt(trainer: Any, state: dict[str, Any], stage: StageConfig) -> Any:
    """A whole copy of the trainer's sharded model (same class and config, LoRA adapters re-added) holding
    ``state``, built on this process alone (with ZeRO-3's collective ``zero.Init`` switched off meanwhile)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    from medvl.train.trainer import add_lora

    model = trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    ds = getattr(trainer.args, "hf_deepspeed_config", None)
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        fresh = type(base)(base.config)
        if stage.lora is not None:
            fresh = add_lora(fresh, stage.lora, stage.lr)
    finally:
        if ds is not None:
            hf_deepspeed.set_hf_deepspeed_config(ds)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    tied = set(getattr(fresh, "all_tied_weights_keys", None) or getattr(fresh, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and "lm_head" not in k or not base.config.tie_word_embeddings]
    if missing or unexpected:
        raise TrainConfigError(f"gathering the sharded weights failed (missing {missing[:5]}, unexpected "
                               f"{unexpected[:5]}); refusing to save a partial model")
    fresh.tie_weights()
    return fresh


def _drop_metrics_after(path: Path, ckpt: str) -> None:
    """Resuming from ``ckpt`` replays the steps after it: drop their lines logged before the interruption, so
    ``metrics.jsonl`` holds every step once."""
    step = json.loads((Path(ckpt) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(ln for ln in lines if json.loads(ln).get("step", 0) <= step), encoding="utf-8")


def _write_state(stage_dir: Path, state: dict[str, Any]) -> None:
    tmp = stage_dir / ".stage.json.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(stage_dir / "stage.json")


def _write_rejects(path: Path, rejects: list[Any]) -> None:
    from dataclasses import asdict, is_dataclass

    with open(path, "w", encoding="utf-8") as f:
        for r in rejects:
            f.write(json.dumps(asdict(r) if is_dataclass(r) else r, sort_keys=True, default=str) + "\n")


def run(cfg: TrainConfig, only: list[str] | None = None, resume: bool = False, overwrite: bool = False,
        log: Log = print) -> list[StageResult]:
    """Run the stages (all, or the ones named in ``only``) in order; returns one result per stage run."""
    names = [s.name for s in cfg.stages]
    for name in only or []:
        cfg.stage(name)
    init = Path(cfg.model)
    results = []
    for stage in cfg.stages:
        if only and stage.name not in only:
            init = Path(cfg.output_dir) / stage.name / "final"  # a later stage starts from this one's output
            continue
        if not (init / "config.json").is_file():
            prev = names[names.index(stage.name) - 1] if names.index(stage.name) else None
            raise TrainConfigError(f"stage {stage.name} starts from {init}, which is not a model folder"
                                   + (f" (run stage {prev} first, or leave it out of `stages:` to start "
                                      f"{stage.name} from the stage before it)" if prev else ""))
        result = run_stage(cfg, stage, init, resume=resume, overwrite=overwrite, log=log)
        results.append(result)
        init = result.final
    return results
