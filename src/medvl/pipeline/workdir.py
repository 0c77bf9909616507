"""The build's work folder (``<out>/.medvl-work/``): the plan a build was started with, the journal of
finished units and the shards between stages. A finished build removes it; its presence means a build
in this folder did not finish, and ``--resume`` finishes it."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medvl.pipeline.recipe import Recipe

WORK = ".medvl-work"
PLAN_VERSION = 4  # 2: record images at png_compress_level 0-3 written by medvl's own encoder (different bytes);
# 3: levels 1-3 deflated by libdeflate instead of ISA-L (different bytes); 4: Parquet row groups end at
# row_group_bytes and the Parquet manifest entries carry num_bytes (a resumed build would mix both layouts)
# outputs a build owns in its folder (replaced by --overwrite); images/ and masks/ are content-addressed and
# kept for reuse: a rebuild writes only images it does not find, and removes those no record uses
OWNED = ("llava", "messages", "parquet", "mixture", "card", "webdataset", "records.jsonl", "samples.jsonl",
         "rejects.jsonl", "summary.json", "manifest.json", "mixture.json", "dataset_card.md", "dataset_card.html",
         "README.md", "dataset_info.json", "recipe.yaml", "dry-run", WORK)
REUSED = ("images", "masks")


class WorkdirError(RuntimeError):
    pass


def recipe_sha256(recipe: "Recipe") -> str:
    """SHA-256 of the recipe without its salt, ``workers`` and the model's run settings (which change nothing in
    the outputs)."""
    from medvl.llm.config import RUN_SETTINGS

    data = recipe.model_dump(mode="json")
    data.pop("workers", None)
    data.pop("salt", None)
    llm = (data.get("generation") or {}).get("llm") or {}
    for k in RUN_SETTINGS:  # how the model is reached (budget, endpoint, retries), not what it answers
        llm.pop(k, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


def plan_of(recipe: "Recipe", shard_units: int, chunk_records: int, bucket_records: int) -> dict[str, Any]:
    """What must not change between a build and its resumption: the recipe (its salt only as an HMAC
    check value, never in clear) and the shard settings."""
    recipe_hash = recipe_sha256(recipe)
    salt = recipe.salt or ""
    salt_check = hmac.new(salt.encode("utf-8"), b"medvl-resume-check", hashlib.sha256).hexdigest()[:16]
    return {"version": PLAN_VERSION, "recipe_sha256": recipe_hash, "salt_check": salt_check,
            "shard_units": shard_units, "chunk_records": chunk_records, "bucket_records": bucket_records}


def prepare(out_dir: Path, plan: dict[str, Any], overwrite: bool, resume: bool) -> Path:
    """Make ``out_dir`` ready and return its work folder. A fresh folder gets a plan; an unfinished build is
    resumed only with ``resume`` and an unchanged plan; a finished one is replaced only with ``overwrite``
    (keeping its images for reuse)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / WORK
    plan_path = work / "plan.json"
    if resume and not overwrite:
        if not plan_path.is_file():
            if (out_dir / "manifest.json").is_file():
                raise WorkdirError(f"{out_dir}: holds a finished build, nothing to resume; pass --overwrite to "
                                   "rebuild it")
            raise WorkdirError(f"{out_dir}: no unfinished build to resume (no {WORK}/plan.json); run without --resume")
        old = json.loads(plan_path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
        if changed:
            names = {"recipe_sha256": "the recipe", "salt_check": "the salt",
                     "version": f"medvl's build format (plan version {old.get('version')} -> {plan.get('version')})"}
            what = ", ".join(names.get(k, k) for k in changed)
            raise WorkdirError(f"{out_dir}: cannot resume: {what} changed since the build started; finish it with the "
                               "same recipe, or pass --overwrite to start over")
        return work
    present = [n for n in OWNED if (out_dir / n).exists()]
    if present and not overwrite:
        if (work / "plan.json").is_file():
            raise WorkdirError(f"{out_dir}: holds an unfinished build; pass --resume to finish it or --overwrite to "
                               "start over")
        raise WorkdirError(f"{out_dir}: already holds a build ({', '.join(present[:4])}...); pass --overwrite to "
                           "replace it")
    for n in present:
        p = out_dir / n
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    work.mkdir(parents=True)
    tmp = plan_path.with_name("plan.json.tmp")
    tmp.write_text(json.dumps(plan, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(plan_path)
    return work


def remove_unused(out_dir: Path, kept: dict[str, Path]) -> int:
    """Delete images and masks no kept record references (excluded, rejected after writing, or left by an
    earlier build). ``kept``: folder ("images", "masks") -> file of its kept paths, one per line, sorted by
    path components (:func:`medvl.curate.stage.path_order`). Each folder is walked in the same order and
    compared with its list as two sorted streams, so memory stays flat whatever the number of files."""
    from medvl.core.shards import read_lines
    from medvl.curate.stage import path_order

    removed = 0
    for folder in REUSED:
        listed = (path_order(line) for line in read_lines(kept[folder])) if folder in kept else iter(())
        nxt = next(listed, None)
        for path in _walk(out_dir / folder):
            rel = path_order(path.relative_to(out_dir).as_posix())
            while nxt is not None and nxt < rel:
                nxt = next(listed, None)
            if nxt == rel:
                continue
            path.unlink()
            removed += 1
    return removed


def _walk(d: Path):
    """Files under ``d`` (temporary files of killed writers included), depth first, each folder's entries in
    name order."""
    if not d.is_dir():
        return
    for p in sorted(d.iterdir(), key=lambda p: p.name):
        if p.is_dir():
            yield from _walk(p)
        elif p.is_file():
            yield p
