"""Shared pieces of the training tests: a small real medvl corpus (the demo's X-ray and IHC sources built with
``run_build``), a LLaVA JSON subset of it with absolute image paths plus a few hand-made items (text-only,
overlong, broken), tiny random models, and helpers to write a training YAML and read saved weights.

Everything is built once per test session (memoized on pytest's base temp folder), so the two training test
files share it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

_CACHE: dict[tuple[str, str], Any] = {}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on 2 shared cores: one intra-op thread avoids oversubscription (4x faster when the machine is
    busy); restored afterwards. Import it into a test module to use it there."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

# hand-made items (a user's own LLaVA JSON next to medvl's export): text-only, one overlong answer (truncated,
# kept), one overlong question (nothing left to learn: rejected), one missing image, one placeholder mismatch
TEXT_ONLY = [
    {"id": f"text-{i}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
    for i, (q, a) in enumerate([
        ("Which department reads chest radiographs?", "Radiology reads chest radiographs."),
        ("What does IHC stand for?", "Immunohistochemistry."),
        ("Is a CT scan an X-ray technique?", "Yes. Computed tomography uses X-rays."),
        ("Name a stain used in pathology.", "Haematoxylin and eosin."),
    ])
]
LONG_ANSWER_WORDS = 400  # far beyond the tests' max_length (256)


def _extra_items(image: str) -> list[dict[str, Any]]:
    long_answer = " ".join(["The image shows pathology tissue."] * (LONG_ANSWER_WORDS // 5))
    return TEXT_ONLY + [
        {"id": "overlong-answer", "image": image,
         "conversations": [{"from": "human", "value": "<image>\nDescribe this image in detail."},
                           {"from": "gpt", "value": long_answer}]},
        {"id": "overlong-question", "conversations": [{"from": "human", "value": long_answer},
                                                      {"from": "gpt", "value": "Yes."}]},
        {"id": "missing-image", "image": str(Path(image).parent / "no_such_image.png"),
         "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A cell."}]},
        {"id": "two-placeholders", "image": image,
         "conversations": [{"from": "human", "value": "<image>\n<image>\nCompare."}, {"from": "gpt", "value": "Same."}]},
    ]


def demo_build(base: Path) -> Path:
    """A medvl build of the demo's X-ray (NIH CSV layout) and IHC (image folder + COCO) sources: LLaVA export."""
    key = ("build", str(base))
    if key not in _CACHE:
        from medvl.demo import corpus as demo
        from medvl.pipeline.build import run_build
        from medvl.pipeline.recipe import parse_recipe

        root = base / "demo" / "corpus"
        root.mkdir(parents=True)
        demo.write_xray_csv(root)
        demo.write_ihc(root, tile=128, stride=128)
        recipe = demo.demo_recipe()
        recipe["sources"] = [s for s in recipe["sources"] if s["name"] in ("xray_csv", "ihc_tiles", "ihc_coco")]
        for s in recipe["sources"]:
            s["path"] = str(root / Path(s["path"]).relative_to("corpus"))
        recipe["exports"] = ["llava"]
        run_build(parse_recipe(recipe), base / "demo" / "build")
        _CACHE[key] = base / "demo" / "build"
    return _CACHE[key]


def corpus_json(base: Path, n_images: int = 36, every_kind: bool = False) -> Path:
    """A LLaVA JSON of ``n_images`` samples of the demo build's export (image paths made absolute) followed by
    :data:`TEXT_ONLY` and the overlong / broken items. Samples are every k-th of the export, or with
    ``every_kind`` taken in turn from each (source, kind of sample) so captions, QA and multi-turn conversations
    are all there (a separate file: the default one is what tests/test_train_distributed.py was tuned on)."""
    key = ("json", str(base), str(every_kind))
    if key not in _CACHE:
        build = demo_build(base)
        items = json.loads((build / "llava" / "train.json").read_text(encoding="utf-8"))
        if every_kind:
            groups: dict[str, list] = {}  # by (source, kind) from the sample id
            for it in items:
                parts = it["id"].split("#")
                groups.setdefault(f"{parts[3]}/{parts[-3]}", []).append(it)
            chosen = []
            while len(chosen) < n_images and any(groups.values()):
                for k in sorted(groups):
                    if groups[k] and len(chosen) < n_images:
                        chosen.append(groups[k].pop(0))
        else:
            step = max(1, len(items) // n_images)
            chosen = items[::step][:n_images]
        for it in chosen:
            it["image"] = str(build / it["image"])
        out = base / "demo" / ("train_every_kind.json" if every_kind else "train.json")
        out.write_text(json.dumps(chosen + _extra_items(chosen[0]["image"]), ensure_ascii=False, indent=1),
                       encoding="utf-8")
        _CACHE[key] = out
    return _CACHE[key]


def xray_png(base: Path) -> Path:
    """The demo's tibia radiograph (pydicom's RG3_UNCI.dcm rendered to an 880 x 880 PNG)."""
    demo_build(base)
    return base / "demo" / "corpus" / "xray_csv" / "images" / "00000001_000.png"


def tiny_init(base: Path, vision: str = "tiny-clip") -> Path:
    """``medvl model init`` of a tiny random tower + tiny Llama (saved once per session)."""
    key = ("init", str(base), vision)
    if key not in _CACHE:
        from medvl.model.assemble import ModelSpec, init_model

        _CACHE[key] = init_model(ModelSpec(vision=vision, lm="tiny-llama"), base / f"init-{vision}")
    return _CACHE[key]


def write_config(path: Path, *, model: Path, data: Path, stages: list[dict[str, Any]], **top: Any) -> Path:
    """A training YAML (``max_length`` 256 unless given)."""
    cfg = {"model": str(model), "output_dir": str(path.parent / "run"), "data": [str(data)], "max_length": 256,
           **top, "stages": stages}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def weights(folder: Path) -> dict[str, Any]:
    """The tensors of a saved model folder (all safetensors shards), by name."""
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def metrics(stage_dir: Path) -> list[dict[str, Any]]:
    """The lines of a stage's ``metrics.jsonl``."""
    return [json.loads(line) for line in (Path(stage_dir) / "metrics.jsonl").read_text().splitlines()]


def cosine_with_warmup(step: int, max_lr: float, total: int, warmup: int) -> float:
    """Reference learning rate of optimizer step ``step`` (0-based) for linear warmup then cosine decay to 0:
    ``step / warmup`` during warmup, then ``0.5 * (1 + cos(pi * progress))`` of the rest."""
    if step < warmup:
        return max_lr * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return max_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
