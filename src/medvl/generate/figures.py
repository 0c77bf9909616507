"""PubMedVision-style samples of figure-caption records (source ``figure_caption``; REFERENCE 2, steps 5-6).

Without a model (the template engine), a figure gives one Alignment VQA: a describe-this-image question (one of
11 paraphrases, the plural set for several images) answered by the figure's caption, as LLaVA-Med's alignment
data does. With a model (:mod:`medvl.generate.model`, ``generation.llm.figures``), the unblinded rewrite replaces
it: the model sees the images with the caption and mentions inside ``<reference>`` and writes a description
(the Alignment VQA's answer) and a question with its answer (the Instruction VQA) in one of 10 sampled scenarios."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from medvl.core.hashing import stable_int
from medvl.core.records import ImageRecord, Sample, Turn

PROMPTS = Path(__file__).parent / "prompts" / "pubmedvision.yaml"
FIGURE_FORMAT = "figure_caption"


class FigureRewrite(BaseModel):
    """The JSON reply of the unblinded rewrite (PubMedVision's field names)."""

    Image_description: str = Field(min_length=20)
    QA_query: str = Field(alias="QA-query", min_length=5)
    QA_answer: str = Field(alias="QA-answer", min_length=2)


@lru_cache(maxsize=8)
def load_figure_prompts(path: str | None = None) -> dict[str, Any]:
    p = Path(path) if path else PROMPTS
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
    for key, n in (("scenarios", 10), ("alignment_questions", 11), ("alignment_questions_plural", 11)):
        if len(data.get(key) or []) != n:
            raise ValueError(f"{p}: {key} must list {n} entries (PubMedVision's), found {len(data.get(key) or [])}")
    if "{caption}" not in data.get("figure", "") or "{scenario}" not in data["figure"]:
        raise ValueError(f"{p}: the figure prompt must contain {{caption}} and {{scenario}}")
    return data


def is_figure(record: ImageRecord) -> bool:
    return record.source_format == FIGURE_FORMAT and bool(record.extra.get("caption"))


def figure_images(record: ImageRecord) -> list[str]:
    return list(record.extra.get("images") or [record.image])


def alignment_question(record: ImageRecord, seed: int, prompts: dict[str, Any]) -> tuple[int, str]:
    """(index, question): one of the 11 describe-this-image paraphrases, plural for several images."""
    pool = prompts["alignment_questions_plural" if len(figure_images(record)) > 1 else "alignment_questions"]
    i = stable_int(seed, record.id, "alignment") % len(pool)
    return i, pool[i]


def scenario(record: ImageRecord, seed: int, prompts: dict[str, Any]) -> tuple[int, str]:
    i = stable_int(seed, record.id, "scenario") % len(prompts["scenarios"])
    return i, prompts["scenarios"][i]


def figure_sample(gen: Any, record: ImageRecord, kind: str, question: str, answer: str, template_id: str,
                  generator: str = "template", meta: dict[str, Any] | None = None) -> Sample:
    """An English figure sample (kind "caption" = Alignment VQA, "instruction_qa" = Instruction VQA)."""
    base = gen.base_meta(record)
    base.update({"pipeline": "pubmedvision", "vqa": "alignment" if kind == "caption" else "instruction"})
    base.update(meta or {})
    return Sample(id=gen.sample_id(record, kind, "en", 0), images=figure_images(record),
                  turns=[Turn("user", question), Turn("assistant", answer)], kind=kind, lang="en",
                  record_id=record.id, generator=generator, template_id=template_id, meta=base)


def template_figure_samples(gen: Any, record: ImageRecord) -> list[Sample]:
    """The alignment VQA a figure gives without a model: the caption answers a describe-this-image question."""
    if int(gen.config.kinds.get("caption", 0)) <= 0:
        return []
    prompts = load_figure_prompts()
    i, q = alignment_question(record, gen.seed, prompts)
    return [figure_sample(gen, record, "caption", q, str(record.extra["caption"]).strip(),
                          f"{prompts['version']}/alignment-q{i}")]


def rewrite_prompt(record: ImageRecord, seed: int, prompts: dict[str, Any]) -> tuple[str, int]:
    n = len(figure_images(record))
    i, scen = scenario(record, seed, prompts)
    mentions = record.extra.get("mentions") or []
    text = prompts["figure"].format(
        n_images_phrase="an image" if n == 1 else f"{n} images",
        caption=str(record.extra["caption"]).strip(),
        mentions=" ".join(str(m).strip() for m in mentions) if mentions else "(none)",
        scenario=scen)
    return text, i
