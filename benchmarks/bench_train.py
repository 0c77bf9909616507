"""Training speed of `medvl train` against a plain transformers loop, measured in the same run.

Model: a small random LLaVA (CLIP-style tower at 224 px, patch 16 = 196 image tokens, hidden 256, 4 layers;
Llama LM hidden 256, 4 layers), assembled by `medvl model init`. Data: the demo build's LLaVA JSON (built with
`medvl demo` into a temporary folder unless --data names one).

(a) Throughput, every module learning (stage III), one epoch over the same subset of conversations:
    medvl (packed to each --max-length, the feature cache off since the tower learns) against the baseline a
    user would write: `LlavaForConditionalGeneration` + `Trainer`, one conversation per row, padded batches
    from the `LlavaProcessor` (chat template, `<image>` expanded), labels = input ids with pad and image tokens
    masked. Same model, optimizer (AdamW), learning rate, threads. Samples/s and tokens/s (non-padding).
(b) Packing efficiency of the whole demo training set at 2048 tokens with 196 tokens per image.
(c) Stage I (projector only, tower frozen) with the frozen-tower feature cache against without it: the
    first epoch (cache filled during the stage) and a later epoch (cache already filled).
Prints a table of ratios (baseline time / medvl time: > 1 = medvl faster); nothing passes or fails.
Times are the training loop alone (``Trainer.train``), in CPU seconds (steady on a shared machine) and wall seconds.
Packs are one row with a block-diagonal causal mask: with SDPA the attention of a row costs length^2 whatever the
samples in it, so on CPU long packs lose to short padded rows; variable-length attention kernels
(flash-attention on GPUs) cost the sum of the samples' length^2 instead.
Run: python benchmarks/bench_train.py [--data train.json] [--samples 64] [--max-length 2048,1024]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self


def small_model(root: Path, tower_hidden: int = 256, tower_layers: int = 4, lm_hidden: int = 256,
                lm_layers: int = 4) -> Path:
    """`medvl model init` of a random CLIP-style tower (224 px, patch 16) and a random Llama."""
    from medvl.model import tiny
    from medvl.model.assemble import ModelSpec, init_model

    tower = tiny.save_tiny_tower(root / "tower", "clip", hidden=tower_hidden, layers=tower_layers, image_size=224,
                                 patch=16)
    lm = tiny.save_tiny_lm(root / "lm", hidden=lm_hidden, layers=lm_layers)
    return init_model(ModelSpec(vision=str(tower), lm=str(lm)), root / "init")


def demo_data(root: Path) -> Path:
    """The demo build's LLaVA training JSON (`medvl demo OUT`)."""
    subprocess.run([sys.executable, "-m", "medvl.cli.main", "demo", str(root / "demo")], check=True,
                   capture_output=True)
    return root / "demo" / "build" / "llava" / "train.json"


def subset(data: Path, n: int, out: Path) -> Path:
    """Every k-th conversation of ``data`` (image paths made absolute), ``n`` in all."""
    items = json.loads(data.read_text(encoding="utf-8"))
    from medvl.train.data import build_root

    root = build_root(data) or data.parent
    chosen = items[:: max(1, len(items) // n)][:n]
    for it in chosen:
        if it.get("image"):
            it["image"] = str(root / it["image"]) if isinstance(it["image"], str) else [str(root / p) for p in
                                                                                         it["image"]]
    out.write_text(json.dumps(chosen), encoding="utf-8")
    return out


def run_medvl(init: Path, data: Path, out: Path, stage: dict[str, Any], max_length: int,
              cache_dir: Path | None = None) -> dict[str, Any]:
    """One medvl stage; returns its stage summary (train metrics, packing)."""
    from medvl.train.config import parse_config
    from medvl.train.run import run

    raw = {"model": str(init), "output_dir": str(out), "data": [str(data)], "max_length": max_length,
           "stages": [{"save_steps": 10**6, "logging_steps": 10**6, "warmup_ratio": 0.0, **stage}]}
    if cache_dir:
        raw["feature_cache_dir"] = str(cache_dir)
    [res] = run(parse_config(raw, out), overwrite=True, log=lambda m: None)
    return res.summary


def run_plain(init: Path, data: Path, out: Path, batch: int, lr: float) -> tuple[float, int, int]:
    """The baseline: plain transformers; returns (train seconds, conversations, non-padding tokens)."""
    import torch
    from transformers import (
        AutoProcessor,
        LlavaForConditionalGeneration,
        Trainer,
        TrainingArguments,
    )

    from medvl.train.data import load_training_data

    model = LlavaForConditionalGeneration.from_pretrained(init, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(init)
    convs, _ = load_training_data([str(data)])
    rows = [{"messages": c.messages, "images": c.images} for c in convs]
    tokens = [0]
    pad, image = processor.tokenizer.pad_token_id, model.config.image_token_id

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [processor.apply_chat_template(r["messages"], tokenize=False) for r in batch]
        images = [ref.open() for r in batch for ref in r["images"]]
        enc = processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        labels = enc["input_ids"].clone()
        labels[(enc["attention_mask"] == 0) | (labels == image) | (labels == pad)] = -100
        tokens[0] += int(enc["attention_mask"].sum())
        return {**enc, "labels": labels}

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, num_train_epochs=1,
                             learning_rate=lr, lr_scheduler_type="cosine", save_strategy="no", report_to=[],
                             logging_steps=10**6, remove_unused_columns=False, use_cpu=True, disable_tqdm=True,
                             seed=0)
    result = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate).train()
    return result.metrics["train_runtime"], len(rows), tokens[0]


def packing_efficiency(init: Path, data: Path, max_length: int) -> dict[str, Any]:
    """Packing of the whole training file as `medvl train` packs it."""
    from transformers import AutoProcessor

    from medvl.train.config import parse_config
    from medvl.train.run import prepare_data

    cfg = parse_config({"model": str(init), "output_dir": "unused", "data": [str(data)], "max_length": max_length,
                        "stages": ["stage1"]}, data.parent)
    _, summary, _ = prepare_data(cfg, cfg.stages[0], AutoProcessor.from_pretrained(init), lambda m: None)
    return summary


class Timed:
    """Wall and CPU seconds of every ``transformers.Trainer.train`` call (medvl's ``MedvlTrainer`` included): the
    training loop alone, without loading, tokenizing or saving. CPU seconds are the fair measure on a machine
    shared with other work; wall seconds are printed too."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []

    def __enter__(self) -> Self:
        from transformers import Trainer

        self.original = Trainer.train
        calls = self.calls

        def train(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            w, c = time.perf_counter(), time.process_time()
            out = self.original(trainer, *args, **kwargs)
            calls.append((time.perf_counter() - w, time.process_time() - c))
            return out

        Trainer.train = train
        return self

    def __exit__(self, *exc: object) -> None:
        from transformers import Trainer

        Trainer.train = self.original

    def last(self) -> tuple[float, float]:
        return self.calls[-1]


def clock(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """(result, wall s, CPU s) of a call."""
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="a LLaVA JSON (default: build the demo)")
    ap.add_argument("--samples", type=int, default=64, help="conversations per timed epoch")
    ap.add_argument("--max-length", default="2048,1024", help="pack lengths for (a), comma-separated; (c) uses the first")
    ap.add_argument("--batch", type=int, default=8, help="baseline conversations per step")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steady CPU times on a shared machine)")
    ap.add_argument("--tower", default="256x4", help="tower hidden size x layers")
    ap.add_argument("--lm", default="256x4", help="LM hidden size x layers")
    opts = ap.parse_args()
    import torch

    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="medvl-bench-train-") as tmp, Timed() as timed:
        tmp = Path(tmp)
        data = opts.data or demo_data(tmp)
        (th, tl), (lh, ll) = (map(int, opts.tower.split("x")), map(int, opts.lm.split("x")))
        init = small_model(tmp / "model", th, tl, lh, ll)
        part = subset(data, opts.samples, tmp / "subset.json")
        n_img = json.loads((init / "medvl_model.json").read_text())["image_tokens"]
        pack = packing_efficiency(init, data, 2048)["packing"]

        everything = {"name": "all", "lr": {"projector": 1e-5, "vision": 1e-5, "lm": 1e-5}, "epochs": 1,
                      "batch_size": 1, "feature_cache": "off"}
        _, n_plain, tok_plain = run_plain(init, part, tmp / "plain", opts.batch, 1e-5)
        w_plain, c_plain = timed.last()
        lengths = [int(x) for x in opts.max_length.split(",")]
        medvl = []
        for length in lengths:
            s = run_medvl(init, part, tmp / "medvl", everything, length)
            medvl.append((length, s["packing"]["samples"], s["packing"]["tokens"], s["tokenize"]["truncated"],
                          *timed.last()))

        stage1 = {"name": "s1", "lr": {"projector": 1e-3, "vision": 0.0, "lm": 0.0}, "batch_size": 1}
        rows = []
        for label, cache in (("no cache", "off"), ("cache, filled in this run", "on"), ("cache, already filled", "on")):
            _, w, c = clock(run_medvl, init, part, tmp / "s1", {**stage1, "feature_cache": cache}, lengths[0],
                            tmp / "cache")
            rows.append((label, *timed.last(), w, c))

    print(f"model: tower 224 px / patch 16 ({n_img} image tokens), hidden {th} x {tl} layers; LM Llama hidden {lh} x "
          f"{ll} layers; {opts.threads} torch thread(s); times = training loop (Trainer.train), CPU seconds first")
    print(f"(b) packing, whole demo train set at 2048 tokens: {pack['samples']} samples in {pack['packs']} packs, "
          f"{pack['efficiency']:.1%} non-padding tokens ({pack['samples_per_pack']:.2f} samples per pack)")
    print(f"(a) throughput, every module learning, {n_plain} conversations, one epoch")
    print(f"    {'':36s}{'samples/s':>10s}{'tokens/s':>10s}{'CPU s':>8s}{'wall s':>8s}{'vs plain':>10s}")
    print(f"    {'plain Llava + Trainer (padded x' + str(opts.batch) + ')':36s}{n_plain / c_plain:10.2f}"
          f"{tok_plain / c_plain:10.0f}{c_plain:8.1f}{w_plain:8.1f}{'1.00x':>10s}")
    for length, n, tok, cut, w, c in medvl:
        ratio = (n / c) / (n_plain / c_plain)
        print(f"    {'medvl, packed to ' + str(length) + ' (1 pack/step)':36s}{n / c:10.2f}{tok / c:10.0f}{c:8.1f}"
              f"{w:8.1f}{ratio:9.2f}x" + (f"  ({cut} samples truncated)" if cut else ""))
    print(f"    non-padding tokens: plain {tok_plain}, medvl {', '.join(str(m[2]) for m in medvl)}; ratio = samples "
          f"per CPU second (by wall clock: {', '.join(f'{(m[1] / m[4]) / (n_plain / w_plain):.2f}x' for m in medvl)})")
    print("(c) stage I (projector learns, tower frozen), one epoch")
    print(f"    {'':30s}{'loop CPU s':>11s}{'loop wall s':>12s}{'stage CPU s':>12s}{'stage wall s':>13s}")
    for label, lw, lc, w, c in rows:
        print(f"    {label:30s}{lc:11.1f}{lw:12.1f}{c:12.1f}{w:13.1f}")
    off, first, later = rows
    print(f"    speed-up of the training loop with the cache: {off[2] / later[2]:.2f}x (CPU); whole stage: first "
          f"epoch {off[4] / first[4]:.2f}x (it encodes every image once), later epochs {off[4] / later[4]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
