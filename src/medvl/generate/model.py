"""Annotation-guided generation by a multimodal model (``generation.generator: llm``), beside the template engine.

The template engine writes every sample first. Then, per record and kind, a share of the English samples
(``generation.llm.share`` / ``source_share``, decided by a hash of seed, record id and kind) is rewritten by the
model, which gets the image and the record (modality, department, body region, labels, boxes in pixels) with
GMAI-VL's rules (prompts in ``prompts/annotation.yaml``): captions keep the template's question and take the
model's caption, region captions keep the question with its ``<box>`` and take the model's description of the
region, instruction QA takes the model's question and answer. Every reply passes :mod:`medvl.generate.checks`
(re-asked with the problems, then rejected: the template sample stays and the reply is listed in
``rejects.jsonl``). A ``translate_share`` of the English samples is also translated into Chinese by the model
(tags checked), kept beside the template engine's Chinese. Figure-caption records get PubMedVision's unblinded
rewrite (:mod:`medvl.generate.figures`).

Provenance: model-written samples have ``generator = "llm:<model>"``, ``template_id = "<prompt version>/<prompt
key>+<sha256 of the filled prompt, 12 hex>"`` and ``meta.provenance``. Replies are cached in the build's work
folder, so a resumed build pays for nothing twice and gives the same samples. A transport failure that outlives
the retries, or the budget, stops the chunk (and the build) with every reply so far cached."""

from __future__ import annotations

import copy
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from medvl.core.hashing import stable_int
from medvl.core.records import ImageRecord, Sample, Turn
from medvl.generate.base import GENERATORS
from medvl.generate.checks import answer_problems, content_problems, region_caption_problems, tag_problems
from medvl.generate.figures import (FigureRewrite, alignment_question, figure_images, figure_sample, is_figure,
                                    load_figure_prompts, rewrite_prompt, template_figure_samples)
from medvl.generate.template import TemplateGenerator
from medvl.llm import ChatRequest, LLMClient, LLMError, user_message

PROMPTS = Path(__file__).parent / "prompts" / "annotation.yaml"
_SCALE = 1_000_000


class CaptionReply(BaseModel):
    caption: str = Field(min_length=10)


class RegionReply(BaseModel):
    description: str = Field(min_length=10)


class QAReply(BaseModel):
    question: str = Field(min_length=5)
    answer: str = Field(min_length=1)


class TranslationReply(BaseModel):
    turns: list[str]


@lru_cache(maxsize=8)
def load_prompts(path: str | None = None) -> dict[str, str]:
    p = Path(path) if path else PROMPTS
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise FileNotFoundError(f"{p}: cannot read the prompt file ({e.strerror})") from None
    missing = [k for k in ("version", "caption", "region_caption", "instruction_qa", "translate") if k not in data]
    if missing:
        raise ValueError(f"{p}: the prompt file lacks {', '.join(missing)}")
    return data


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@GENERATORS.register("llm")
class ModelGenerator(TemplateGenerator):
    def __init__(self, config, seed, label_spaces, source_rules=None):
        super().__init__(config, seed, label_spaces, source_rules)
        self.mcfg = config.llm
        self.prompts = load_prompts(self.mcfg.prompts)
        self.fig_prompts = load_figure_prompts()
        self.out_dir = Path(".")
        self.dry_run = False
        self.ledger_dir: str | None = None
        self.client: LLMClient | None = None
        self._report = _Report()

    # run hooks ---------------------------------------------------------------------------------------
    def start_run(self, *, out_dir: str, dry_run: bool = False, ledger_dir: str | None = None) -> None:
        self.out_dir, self.dry_run, self.ledger_dir = Path(out_dir), dry_run, ledger_dir

    def open_cache(self, folder: str | None) -> None:
        cache = str(Path(folder) / "llm") if folder else None
        self.client = LLMClient(self.mcfg.client_config(), cache_dir=cache, ledger_dir=self.ledger_dir,
                                dry_run=self.dry_run)

    def run_report(self) -> dict[str, Any]:
        r = self._report
        out = {"usage": dict(r.usage), "counts": dict(r.counts), "rejects": list(r.rejects),
               "counts_by_source": {k: dict(v) for k, v in r.by_source.items()}}
        if self.client is not None and self.client.dry_run:
            out["dry_run_requests"] = list(self.client.dry_requests)
        return out

    # generation --------------------------------------------------------------------------------------
    def make_sample(self, *args: Any, **kwargs: Any) -> Sample:
        s = super().make_sample(*args, **kwargs)
        s.generator = "template"  # the template engine's samples say so; the model's say llm:<model>
        return s

    def generate(self, record: ImageRecord) -> list[Sample]:
        return self.generate_batch([record])[0]

    def generate_batch(self, records: list[ImageRecord]) -> list[list[Sample]]:
        self._report = _Report()
        if self.client is None:
            self.open_cache(None)
        base = [super(ModelGenerator, self).generate(r) for r in records]
        return self.client.run_async(self._batch, records, base)

    async def _batch(self, records: list[ImageRecord], base: list[list[Sample]]) -> list[list[Sample]]:
        import asyncio

        out = await asyncio.gather(*(self._record(r, s) for r, s in zip(records, base)), return_exceptions=True)
        # a budget or transport stop is raised only once every request in flight has its reply (and is cached)
        errors = [x for x in out if isinstance(x, BaseException)]
        if errors:
            raise next((e for e in errors if isinstance(e, LLMError) and e.kind == "budget"), errors[0])
        return list(out)

    async def _record(self, rec: ImageRecord, samples: list[Sample]) -> list[Sample]:
        out: list[Sample] = []
        if is_figure(rec) and self.mcfg.figures:
            samples = await self._figure(rec, samples)
        for s in samples:
            if (s.lang == "en" and s.generator == "template" and s.kind in ("caption", "region_caption",
                                                                             "instruction_qa")
                    and not is_figure(rec) and self._chosen(rec, s.kind, s.id, self.mcfg.share_for(rec.dataset, s.kind))):
                s = await self._annotated(rec, s) or s
            out.append(s)
            if s.lang == "en" and self._chosen(rec, "translate", s.id, self.mcfg.translate_share):
                zh = await self._translate(rec, s)
                if zh is not None:
                    out.append(zh)
        return out

    def _chosen(self, rec: ImageRecord, purpose: str, sample_id: str, share: float) -> bool:
        return share > 0 and stable_int(self.seed, rec.id, sample_id, purpose, "llm") % _SCALE < share * _SCALE

    # one model call ----------------------------------------------------------------------------------
    async def _ask(self, rec: ImageRecord, item: str, stage: str, prompt: str, images: list[str], schema: type,
                   check: Any, tag: str) -> Any:
        """The parsed reply, or None (the reason recorded as a reject). Budget and transport failures raise."""
        msg = user_message(prompt, images=[self.out_dir / p for p in images], detail=self.mcfg.image_detail)
        try:
            reply = await self.client.achat(ChatRequest(messages=[msg], schema=schema, check=check, tag=tag))
        except LLMError as e:
            if e.kind in ("budget", "transport", "fatal"):  # the run stops; every reply so far is cached
                raise
            if e.kind != "dry_run":  # "invalid": every re-ask was answered and failed; "http": a refusal
                self._report.add_usage(e.usage, exchanges=self.mcfg.max_reasks + 1 if e.kind == "invalid" else 0)
                self._report.reject(rec, item, stage, f"{tag}: {e}" + (f" | reply: {e.last_text[:300]}"
                                                                         if e.last_text else ""))
            return None
        self._report.add_usage(reply.usage, exchanges=reply.exchanges)
        return reply.parsed

    def _provenance(self, prompt_key: str, prompt: str, version: str) -> tuple[str, str, dict[str, Any]]:
        sha = _sha12(prompt)
        prov = {"generator": "llm", "model": self.mcfg.model, "prompt": prompt_key, "prompt_version": version,
                "prompt_sha256_12": sha}
        return f"llm:{self.mcfg.model}", f"{version}/{prompt_key}+{sha}", prov

    def _fields(self, rec: ImageRecord) -> dict[str, str]:
        f = self.record_fields(rec, "en")
        labels = self.record_labels(rec)
        lines = [f"- modality: {f.get('modality', rec.modality)}"]
        for key in ("body_region", "department", "view"):
            if key in f:
                lines.append(f"- {key.replace('_', ' ')}: {f[key]}")
        if labels:
            lines.append(f"- labels: {', '.join(labels)}")
        for r in rec.regions:
            lines.append(f"- region labelled {r.label!r}: box {[int(round(v)) for v in r.box]}")
        return {"record": "\n".join(lines), "modality_image_a": f.get("modality_image_a", "an image"),
                "department_phrase": f" from {f['department']}" if "department" in f else "",
                "labels": ", ".join(labels) if labels else "no label", "width": str(rec.width),
                "height": str(rec.height)}

    async def _annotated(self, rec: ImageRecord, s: Sample) -> Sample | None:
        fields = self._fields(rec)
        present = self.record_labels(rec)
        space = self.label_spaces.get(rec.dataset, [])
        version = self.prompts["version"]
        if s.kind == "caption":
            prompt = self.prompts["caption"].format(**fields)
            parsed = await self._ask(rec, s.id, "generate", prompt, s.images, CaptionReply,
                                     lambda r: content_problems(r.caption, present, space, rec.modality), "caption")
            texts = None if parsed is None else [s.turns[0].text, parsed.caption.strip()]
        elif s.kind == "region_caption":
            regions = self.localized_regions(rec)[: self.opts["max_regions"]]
            region = regions[s_n(s) // max(1, int(self.config.kinds.get("region_caption", 1)))]
            prompt = self.prompts["region_caption"].format(
                **fields, label=region.label, box_px=str([int(round(v)) for v in region.box]))
            parsed = await self._ask(
                rec, s.id, "generate", prompt, s.images, RegionReply,
                lambda r: region_caption_problems(r.description, region.label)
                + content_problems(r.description, present, space, rec.modality), "region_caption")
            texts = None if parsed is None else [s.turns[0].text, parsed.description.strip()]
        else:
            prompt = self.prompts["instruction_qa"].format(**fields)
            parsed = await self._ask(
                rec, s.id, "generate", prompt, s.images, QAReply,
                lambda r: content_problems(r.question + "\n" + r.answer, present, space, rec.modality)
                + answer_problems(r.question, r.answer, present), "instruction_qa")
            texts = None if parsed is None else [parsed.question.strip(), parsed.answer.strip()]
        if texts is None:
            return None
        generator, template_id, prov = self._provenance(s.kind, prompt, version)
        meta = {**s.meta, "provenance": prov}
        meta.pop("qa_types", None)
        meta.pop("distractors", None)
        meta.pop("negatives", None)
        self._report.count("model_samples")
        return Sample(id=s.id, images=s.images, turns=[Turn("user", texts[0]), Turn("assistant", texts[1])],
                      kind=s.kind, lang="en", record_id=s.record_id, generator=generator, template_id=template_id,
                      meta=meta)

    async def _translate(self, rec: ImageRecord, s: Sample) -> Sample | None:
        turns = [t.text for t in s.turns]
        prompt = self.prompts["translate"].format(turns_json=json.dumps(turns, ensure_ascii=False))
        parsed = await self._ask(rec, s.id, "translate", prompt, [], TranslationReply,
                                 lambda r: tag_problems(turns, r.turns), "translate")
        if parsed is None:
            return None
        generator, template_id, prov = self._provenance("translate", prompt, self.prompts["version"])
        meta = copy.deepcopy(s.meta)
        meta["provenance"] = {**prov, "translated_from": s.id, "source_generator": s.generator}
        self._report.count("translated")
        return Sample(id=self.sample_id(rec, s.kind, "zh", s_n(s)), images=s.images,
                      turns=[Turn(t.role, x.strip()) for t, x in zip(s.turns, parsed.turns)], kind=s.kind,
                      lang="zh", record_id=s.record_id, generator=generator, template_id=template_id, meta=meta)

    async def _figure(self, rec: ImageRecord, samples: list[Sample]) -> list[Sample]:
        prompt, scen = rewrite_prompt(rec, self.seed, self.fig_prompts)
        parsed = await self._ask(rec, f"{rec.id}#figure", "rewrite", prompt, figure_images(rec), FigureRewrite, None,
                                 "figure")
        if parsed is None:
            return samples or template_figure_samples(self, rec)
        generator, template_id, prov = self._provenance("figure", prompt, self.fig_prompts["version"])
        prov["scenario"] = scen
        _, question = alignment_question(rec, self.seed, self.fig_prompts)
        out = []
        if int(self.config.kinds.get("caption", 0)) > 0:
            out.append(figure_sample(self, rec, "caption", question, parsed.Image_description.strip(), template_id,
                                     generator, {"provenance": prov}))
        if int(self.config.kinds.get("instruction_qa", 0)) > 0:
            out.append(figure_sample(self, rec, "instruction_qa", parsed.QA_query.strip(), parsed.QA_answer.strip(),
                                     template_id, generator, {"provenance": prov}))
        self._report.count("figures_rewritten", rec.dataset)
        return out


def s_n(s: Sample) -> int:
    """The n of a sample id ``<record>#<kind>#<lang>#<n>``."""
    return int(s.id.rsplit("#", 1)[1])


class _Report:
    """What one chunk's model calls produced: usage of the replies behind its samples, counts and rejects."""

    def __init__(self) -> None:
        self.usage = {"exchanges": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.counts: dict[str, int] = {"model_samples": 0, "translated": 0, "figures_rewritten": 0, "rejected": 0}
        self.rejects: list[dict[str, str]] = []
        self.by_source: dict[str, dict[str, int]] = {}

    def add_usage(self, usage: dict[str, int], exchanges: int = 0) -> None:
        self.usage["exchanges"] += exchanges
        for k in ("prompt_tokens", "completion_tokens"):
            self.usage[k] += int(usage.get(k, 0))

    def count(self, key: str, source: str | None = None) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        if source is not None:
            per = self.by_source.setdefault(source, {})
            per[key] = per.get(key, 0) + 1

    def reject(self, rec: ImageRecord, item: str, stage: str, reason: str) -> None:
        self.counts["rejected"] += 1
        self.rejects.append({"source": rec.dataset, "item": item, "reason": reason, "stage": stage})
