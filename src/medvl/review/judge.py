"""The judge half of ``medvl review``: a multimodal model scores random samples of every source dataset on
GMAI-VL's rubric (medical accuracy, language clarity, completeness, imaging relevance; 1 best, 5 worst).

Every call goes through the project's one client (:mod:`medvl.llm`): concurrency, retries, JSON replies
validated against :class:`Verdict` with bounded re-asks, and the reply cache under ``BUILD/review/cache`` so
a re-run asks nothing twice. The prompt is a data file (``data/judge_prompt.yaml``, replaceable)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from medvl.core.config import StrictModel
from medvl.core.records import Sample
from medvl.review.sampling import choose, iter_samples

CRITERIA = ("medical_accuracy", "language_clarity", "completeness", "imaging_relevance")
DEFAULT_PROMPT = Path(__file__).parent / "data" / "judge_prompt.yaml"
PLACEHOLDERS = ("annotations", "conversation", "n_images", "kind", "lang")


class Criterion(BaseModel):
    """One criterion's score (1 best .. 5 worst) and the judge's reason."""

    model_config = ConfigDict(extra="ignore")
    score: int = Field(ge=1, le=5)
    comment: str = ""


class Verdict(BaseModel):
    """The judge's JSON reply for one sample."""

    model_config = ConfigDict(extra="ignore")
    medical_accuracy: Criterion
    language_clarity: Criterion
    completeness: Criterion
    imaging_relevance: Criterion
    overall_comment: str = ""

    def mean(self) -> float:
        return sum(getattr(self, c).score for c in CRITERIA) / len(CRITERIA)


class ReviewConfig(StrictModel):
    """Everything ``medvl review BUILD --judge SPEC`` does (the CLI flags mirror these keys)."""

    judge: str  # openai:NAME@URL
    samples: int = Field(30, ge=1)  # per source dataset
    pass_mean: float = Field(3.0, ge=1.0, le=5.0)  # a dataset passes when its mean overall score is <= this
    seed: int = 0
    concurrency: int = Field(8, ge=1)
    worst: int = Field(5, ge=0)  # worst samples per dataset shown in the report
    max_tokens: int = Field(512, ge=16)
    max_reasks: int = Field(2, ge=0)
    timeout: float = Field(120.0, gt=0)
    api_key_env: str = "OPENAI_API_KEY"
    prompt: Path | None = None  # a judge prompt YAML replacing the shipped one
    datasets: list[str] | None = None  # only these source datasets (default: all)


class Prompt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str
    system: str = ""
    user: str


def load_prompt(path: Path | None = None) -> Prompt:
    """The judge prompt YAML (``version``, optional ``system``, ``user`` with placeholders)."""
    path = Path(path or DEFAULT_PROMPT)
    try:
        prompt = Prompt.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        prompt.user.format(**{k: "" for k in PLACEHOLDERS})
    except KeyError as e:
        raise ValueError(f"judge prompt {path}: unknown placeholder {{{e.args[0]}}} in `user` (known: "
                         f"{', '.join('{' + k + '}' for k in PLACEHOLDERS)}; write literal braces as {{{{ }}}})") from None
    except (OSError, yaml.YAMLError, ValueError, IndexError) as e:
        raise ValueError(f"judge prompt {path}: {e}") from None
    return prompt


@dataclass
class Judged:
    """One sample and what became of it: a verdict, or the error that stopped it."""

    sample: Sample
    verdict: Verdict | None = None
    error: str | None = None
    cached: bool = False
    reasks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        s = self.sample
        d: dict[str, Any] = {"id": s.id, "dataset": s.meta.get("dataset"), "kind": s.kind, "lang": s.lang,
                             "generator": s.generator, "template_id": s.template_id, "images": s.images,
                             "turns": [t.to_dict() for t in s.turns]}
        if self.verdict is not None:
            v = self.verdict
            d["scores"] = {c: getattr(v, c).score for c in CRITERIA}
            d["comments"] = {c: getattr(v, c).comment for c in CRITERIA}
            d["overall"] = round(v.mean(), 4)
            d["overall_comment"] = v.overall_comment
        if self.error is not None:
            d["error"] = self.error
        if self.reasks:
            d["reasked"] = self.reasks
        return d


def annotations(record: dict[str, Any] | None, sample: Sample) -> str:
    """What the source dataset says about the image, as prompt lines (normalized boxes, like the text's)."""
    src = record or {}
    meta = sample.meta
    lines = []
    for key in ("modality", "department", "body_region", "clinical_task", "view"):
        val = src.get(key) or meta.get(key)
        if val:
            lines.append(f"- {key.replace('_', ' ')}: {val}")
    labels = src.get("labels") if record else meta.get("labels")
    lines.append(f"- image labels: {', '.join(labels) if labels else '(none given)'}")
    w, h = src.get("width"), src.get("height")
    for r in (src.get("regions") or [])[:12]:
        b = r["box"]
        if w and h:
            lines.append(f"- region '{r['label']}' at [{b[0] / w:.2f}, {b[1] / h:.2f}, {b[2] / w:.2f}, {b[3] / h:.2f}]")
    if src.get("slice"):
        lines.append(f"- slice of a volume: {json.dumps(src['slice'], sort_keys=True)}")
    return "\n".join(lines)


def conversation(sample: Sample) -> str:
    return "\n".join(f"{'User' if t.role == 'user' else 'Assistant'}: {t.text}" for t in sample.turns)


def build_messages(prompt: Prompt, sample: Sample, record: dict[str, Any] | None, build: Path) -> list[dict]:
    """The chat messages for one sample: system text, then the images and the filled-in rubric."""
    from medvl.llm import text_message, user_message

    text = prompt.user.format(annotations=annotations(record, sample), conversation=conversation(sample),
                              n_images=len(sample.images), kind=sample.kind, lang=sample.lang)
    msgs = [text_message("system", prompt.system.strip())] if prompt.system.strip() else []
    msgs.append(user_message(text, images=[build / p for p in sample.images]))
    return msgs


def records_for(path: Path, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The records of ``ids`` from a ``records.jsonl`` (one pass, only those kept)."""
    out: dict[str, dict[str, Any]] = {}
    if not ids or not path.is_file():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            if d.get("id") in ids:
                out[d["id"]] = d
    return out


def judge_build(build: Path, cfg: ReviewConfig, dry_run: bool = False) -> tuple[dict[str, list[Judged]], dict]:
    """Choose, ask, validate. -> ({dataset: [Judged, in rank order]}, the client's usage summary).
    One sample whose images cannot be read or whose judge never gives a valid reply is kept as an error;
    the others go on. ``dry_run``: nothing is sent; the usage holds the requests and tokens it would take
    (requests already in the cache are not counted)."""
    from medvl.llm import ChatRequest, LLMClient, LLMConfig, LLMError, parse_target

    build = Path(build)
    scheme, _, target = cfg.judge.partition(":")
    if scheme != "openai" or not target:
        raise ValueError(f"judge {cfg.judge!r} must be openai:NAME@URL (an OpenAI-compatible endpoint)")
    name, url = parse_target(target)
    prompt = load_prompt(cfg.prompt)
    counts: Counter = Counter()
    chosen = choose(iter_samples(build / "samples.jsonl"), cfg.samples, cfg.seed,
                    set(cfg.datasets) if cfg.datasets else None, counts)
    if cfg.datasets:
        missing = sorted(set(cfg.datasets) - set(chosen))
        if missing:
            raise ValueError(f"{build / 'samples.jsonl'} has no samples of dataset(s) {', '.join(missing)}; "
                             f"it has: {', '.join(sorted(counts)) or '(none)'}")
    recs = records_for(build / "records.jsonl", {s.record_id for v in chosen.values() for s in v if s.record_id})
    llm = LLMConfig(model=name, base_url=url, api_key_env=cfg.api_key_env, concurrency=cfg.concurrency,
                    timeout=cfg.timeout, max_reasks=cfg.max_reasks, max_tokens=cfg.max_tokens, temperature=0.0)
    client = LLMClient(llm, cache_dir=build / "review" / "cache", dry_run=dry_run)
    judged = {ds: [Judged(s) for s in samples] for ds, samples in chosen.items()}
    todo: list[Judged] = []
    requests = []
    for items in judged.values():
        for j in items:
            try:
                msgs = build_messages(prompt, j.sample, recs.get(j.sample.record_id or ""), build)
            except (ValueError, OSError) as e:  # ImageLoadError is a ValueError
                j.error = f"cannot build the request: {e}"
                continue
            todo.append(j)
            requests.append(ChatRequest(messages=msgs, max_tokens=cfg.max_tokens, temperature=0.0,
                                        schema=Verdict, max_reasks=cfg.max_reasks, tag=j.sample.id))
    replies = client.run(requests) if requests else []
    for j, rep in zip(todo, replies):
        if isinstance(rep, LLMError):
            j.error = str(rep)
        else:
            j.verdict, j.cached, j.reasks = rep.parsed, rep.cached, list(rep.rejected)
    client.close()
    usage = client.summary()
    usage["prompt_version"] = prompt.version
    usage["samples_in_build"] = dict(sorted(counts.items()))
    return judged, usage
