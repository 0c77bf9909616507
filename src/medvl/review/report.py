"""The review report: per source dataset the mean score of every criterion and overall, pass or fail, the
worst samples with the judge's comments, and for every failing dataset the recipe source that made it, so
it can be fixed and regenerated. Written as ``BUILD/review/report.json`` and ``BUILD/review/report.md``."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from medvl.review.judge import CRITERIA, Judged, ReviewConfig


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def recipe_sources(build: Path) -> dict[str, dict[str, Any]]:
    """Recipe source entries by name, from the recipe copy a build writes (``BUILD/recipe.yaml``)."""
    try:
        data = yaml.safe_load((build / "recipe.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    out = {}
    for i, s in enumerate(data.get("sources") or []):
        if isinstance(s, dict) and s.get("name"):
            out[s["name"]] = {"index": i, "name": s["name"], "format": s.get("format"), "path": s.get("path")}
    return out


def dataset_summary(items: list[Judged], cfg: ReviewConfig, in_build: int) -> dict[str, Any]:
    """Means per criterion and overall over the judged samples, by kind, the status and the worst ids."""
    ok = [j for j in items if j.verdict is not None]
    mean = {c: _mean([getattr(j.verdict, c).score for j in ok]) for c in CRITERIA}
    mean["overall"] = _mean([j.verdict.mean() for j in ok])
    by_kind: dict[str, list[float]] = defaultdict(list)
    for j in ok:
        by_kind[j.sample.kind].append(j.verdict.mean())
    if not ok:
        status = "unjudged"
    else:
        status = "pass" if mean["overall"] <= cfg.pass_mean + 1e-9 else "fail"
    worst = sorted(ok, key=lambda j: (-j.verdict.mean(), j.sample.id))[: cfg.worst]
    return {"samples_in_build": in_build, "chosen": len(items), "judged": len(ok),
            "errors": len(items) - len(ok), "mean": mean,
            "mean_by_kind": {k: _mean(v) for k, v in sorted(by_kind.items())},
            "status": status, "worst": [j.sample.id for j in worst]}


def make_report(build: Path, cfg: ReviewConfig, judged: dict[str, list[Judged]], usage: dict[str, Any]
                ) -> dict[str, Any]:
    """The report as a dict (see the module docstring); deterministic for the same build, seed and replies."""
    sources = recipe_sources(build)
    in_build = usage.get("samples_in_build", {})
    datasets = {ds: dataset_summary(items, cfg, int(in_build.get(ds, len(items)))) for ds, items in judged.items()}
    failing = [ds for ds, d in datasets.items() if d["status"] != "pass"]
    regenerate = []
    for ds in failing:
        worst = [j for j in judged[ds] if j.sample.id in set(datasets[ds]["worst"])]
        regenerate.append({
            "dataset": ds, "status": datasets[ds]["status"], "mean_overall": datasets[ds]["mean"]["overall"],
            "recipe_source": sources.get(ds),
            "generators": sorted({j.sample.generator for j in judged[ds]}),
            "worst_templates": sorted({j.sample.template_id or "" for j in worst} - {""}),
        })
    return {
        "build": str(build), "judge": cfg.judge.split("@", 1)[0], "prompt_version": usage.get("prompt_version"),
        "seed": cfg.seed, "samples_per_dataset": cfg.samples, "pass_mean": cfg.pass_mean,
        "scale": "1 best .. 5 worst", "passed": not failing, "failing": failing,
        "datasets": datasets, "regenerate": regenerate,
        "usage": {k: v for k, v in usage.items() if k not in ("endpoint", "samples_in_build")},
        "samples": [j.to_dict() for items in judged.values() for j in items],
    }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def to_markdown(report: dict[str, Any]) -> str:
    """The report for people: a table per dataset, what to regenerate, the worst samples with comments."""
    out = [f"# Quality review of `{report['build']}`", "",
           f"Judge `{report['judge']}`, prompt `{report['prompt_version']}`, {report['samples_per_dataset']} random "
           f"samples per source dataset (seed {report['seed']}), scores 1 (best) to 5 (worst); a dataset passes "
           f"at mean overall <= {report['pass_mean']}.", "",
           "| dataset | judged | medical accuracy | language clarity | completeness | imaging relevance "
           "| overall | result |", "|---|---|---|---|---|---|---|---|"]
    for ds, d in report["datasets"].items():
        m = d["mean"]
        judged = f"{d['judged']}/{d['chosen']} of {d['samples_in_build']}"
        out.append(f"| {ds} | {judged} | " + " | ".join(_fmt(m[c]) for c in CRITERIA)
                   + f" | {_fmt(m['overall'])} | {d['status'].upper()} |")
    out.append("")
    if report["regenerate"]:
        out += ["## Failing datasets: regenerate these", ""]
        for r in report["regenerate"]:
            src = r["recipe_source"]
            where = (f"recipe source #{src['index']} `{src['name']}` (format `{src['format']}`, path `{src['path']}`)"
                     if src else "no source of this name in the build's recipe.yaml")
            why = "never judged (see errors below)" if r["status"] == "unjudged" else f"mean {_fmt(r['mean_overall'])}"
            out.append(f"- **{r['dataset']}**: {why}; {where}; generators {', '.join(r['generators'])}"
                       + (f"; worst templates {', '.join(r['worst_templates'])}" if r["worst_templates"] else ""))
        out += ["", "Fix the labels, templates or prompts of these sources in the recipe that made this build "
                "(a copy is `recipe.yaml` in the build) and rebuild with "
                "`medvl build RECIPE -o BUILD --overwrite`.", ""]
    else:
        out += ["Every dataset passed.", ""]
    by_id = {s["id"]: s for s in report["samples"]}
    out += ["## Worst samples", ""]
    for ds, d in report["datasets"].items():
        if not d["worst"]:
            continue
        out += [f"### {ds}", ""]
        for sid in d["worst"]:
            s = by_id[sid]
            out.append(f"- `{sid}` ({s['kind']}, {s['lang']}), overall {_fmt(s['overall'])}: "
                       + ", ".join(f"{c.replace('_', ' ')} {s['scores'][c]}" for c in CRITERIA))
            for t in s["turns"]:
                out.append(f"  - {t['role']}: {t['text'][:300]}")
            for c in CRITERIA:
                if s["comments"][c]:
                    out.append(f"  - judge on {c.replace('_', ' ')}: {s['comments'][c]}")
            if s.get("overall_comment"):
                out.append(f"  - judge overall: {s['overall_comment']}")
        out.append("")
    errors = [s for s in report["samples"] if "error" in s]
    if errors:
        out += ["## Samples the judge could not score", ""]
        out += [f"- `{s['id']}`: {s['error'][:400]}" for s in errors] + [""]
    u = report["usage"]
    out.append(f"Judge usage: {u.get('requests', 0)} requests, {u.get('cached', 0)} from cache, "
               f"{u.get('reasks', 0)} re-asks, {u.get('retries', 0)} retries, "
               f"{u.get('prompt_tokens', 0)} + {u.get('completion_tokens', 0)} tokens.")
    return "\n".join(out) + "\n"


def write_report(build: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """``review/report.json`` and ``review/report.md`` (each written to a temporary name, then renamed)."""
    folder = Path(build) / "review"
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "report.json", folder / "report.md"
    for path, text in zip(paths, (json.dumps(report, indent=2, ensure_ascii=False, sort_keys=False) + "\n",
                                  to_markdown(report))):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return paths
