"""The offline template generator: samples of every kind from the template banks in ``templates/``.

Every choice (language, template, question type, region, wrong options) is a hash of
(seed, record id, kind, n, purpose), so the same record and seed always give identical samples and
different ``n`` rotate through different phrasings. Text says only what the record supports: its
modality, body region, department, view, labels and annotated regions. "No" answers (and multiple-choice
questions whose wrong options are claimed absent) appear only when ``record.extra["labels_exhaustive"]``
is True, i.e. the source / recipe says every record lists all of its dataset's labels that apply; wrong
options and negatives are listed in ``meta["distractors"]`` / ``meta["negatives"]``. Labels meaning "no
finding" (``templates/label_semantics.yaml``) are never asked about or offered as negatives, and are
phrased as "no finding is labelled".

Regions: a box spanning (nearly) the whole image (``generation.options.whole_image_fraction``, default 0.9
of width and height) localizes nothing, so it never gets a region caption or a box question, and its label
is named without boxes. Counting questions ("How many regions labelled X ...?" / "N annotated regions") are
asked only about labels whose regions are separate instances (:meth:`Generator.countable`: instance-like
labels by default, a source's ``count_labels`` otherwise) and none of whose boxes is whole-image."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from medvl.core.hashing import stable_int
from medvl.core.records import ImageRecord, Region, Sample
from medvl.core.yamlio import load_data_yaml
from medvl.generate.base import GENERATORS, Generator
from medvl.generate.figures import is_figure, template_figure_samples
from medvl.generate.semantics import WHOLE_IMAGE_FRACTION, is_no_finding, is_whole_image, no_finding_labels
from medvl.imaging.boxes import box_to_text, ref

TEMPLATE_DIR = Path(__file__).parent / "templates"
OPTION_DEFAULTS: dict[str, int | float] = {"max_regions": 16, "max_boxes": 10, "max_options": 4,
                                           "whole_image_fraction": WHOLE_IMAGE_FRACTION}
PERCEPTION_TYPES = ("box2label", "label2box", "box_mc", "cls", "cls_mc")
INSTRUCTION_TYPES = ("modality", "department", "body_region", "view", "structures", "yes", "no", "count")
_FMT = string.Formatter()
__all__ = ["TemplateGenerator", "is_no_finding", "no_finding_labels", "load_bank", "join_list"]


@lru_cache(maxsize=None)
def load_bank(lang: str) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """kind -> pool -> [(template id, text)] for one language, checked for unique ids and valid fields."""
    path = TEMPLATE_DIR / f"{lang}.yaml"
    try:
        data = load_data_yaml(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read template bank ({e.strerror})") from None
    bank: dict[str, dict[str, list[tuple[str, str]]]] = {}
    seen: set[str] = set()
    for kind, pools in data.items():
        if not isinstance(pools, dict):
            continue
        bank[kind] = {}
        for pool, entries in pools.items():
            items = []
            for tid, text in (entries or {}).items():
                if tid in seen:
                    raise ValueError(f"{path}: template id {tid!r} is used twice")
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"{path}: {kind}.{pool}.{tid}: expected a non-empty string")
                list(_FMT.parse(text))  # raises on malformed braces
                seen.add(tid)
                items.append((str(tid), text))
            bank[kind][pool] = items
    return bank


def _fields_of(text: str) -> set[str]:
    return {name for _, name, _, _ in _FMT.parse(text) if name}


@lru_cache(maxsize=4096)
def _candidates(lang: str, section: str, pool: str, names: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """The pool's (template id, text) whose fields are all among ``names``, in bank order (cached: a
    template's fields are parsed once, not on every fill)."""
    return tuple((tid, t) for tid, t in load_bank(lang)[section][pool] if _fields_of(t) <= names)


def join_list(items: list[str], lang: str) -> str:
    """'a', 'a and b', 'a, b and c' (English) / 'a、b和c' (Chinese)."""
    if len(items) <= 1:
        return "".join(items)
    if lang == "zh":
        return "、".join(items[:-1]) + "和" + items[-1]
    return ", ".join(items[:-1]) + " and " + items[-1]


@dataclass
class _QA:
    """One question-answer pair with the template ids used and what it added to meta."""

    q: str
    a: str
    ids: list[str]
    qa_type: str
    distractors: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    """A question type that applies to a record, before anything is filled: the pools of its question and
    answer, the extra field names each gets, and ``values`` computing (question fields, answer fields,
    ``_QA`` keyword arguments) when the type is chosen."""

    qa_type: str
    section: str
    qpool: str
    apool: str
    qkeys: tuple[str, ...]
    akeys: tuple[str, ...]
    values: Callable[[], tuple[dict[str, str], dict[str, str], dict[str, Any]]]

    def fits(self, job: "_Job") -> bool:
        return job.fits(self.section, self.qpool, self.qkeys) and job.fits(self.section, self.apool, self.akeys)


class _Job:
    """Everything one sample needs: record, language, n, and deterministic choices."""

    def __init__(self, gen: "TemplateGenerator", rec: ImageRecord, kind: str, lang: str, n: int):
        self.gen, self.rec, self.kind, self.lang, self.n = gen, rec, kind, lang, n
        self.bank = load_bank(lang)
        self.fields = gen.record_fields(rec, lang)
        self.field_names = frozenset(self.fields)
        self.localized = gen.localized_regions(rec)
        # labels with a whole-image box: named, never located or counted
        self.unlocated = {r.label for r in rec.regions if not gen.is_localized(rec, r)}

    def h(self, *purpose: object) -> int:
        return stable_int(self.gen.seed, self.rec.id, self.kind, self.n, *purpose)

    def rotate(self, options: list[Any], *purpose: object) -> Any:
        """An element chosen by a hash that does not involve n, offset by n: consecutive n differ."""
        base = stable_int(self.gen.seed, self.rec.id, self.kind, *purpose)
        return options[(base + self.n) % len(options)]

    def fill(self, section: str, pool: str, extra: dict[str, str] | None = None, slot: object = "") -> tuple[str, str] | None:
        """Pick a template whose fields are all available and fill it (only that one); None when none fits."""
        values = {**self.fields, **(extra or {})}
        cands = _candidates(self.lang, section, pool, frozenset(values))
        if not cands:
            return None
        tid, text = self.rotate(cands, section, pool, slot)
        out = text.format(**values)
        if self.lang == "en" and out[:1].islower():
            out = out[0].upper() + out[1:]
        return tid, out

    def fits(self, section: str, pool: str, extra_keys: tuple[str, ...] = ()) -> bool:
        """True when ``fill`` with extra fields named ``extra_keys`` would find a template (nothing filled)."""
        return bool(_candidates(self.lang, section, pool, self.field_names | frozenset(extra_keys)))

    def label(self, name: str) -> str:
        return self.gen.localize_label(name, self.lang)

    def boxes_of(self, label: str) -> list[Region]:
        return [r for r in self.rec.regions if r.label == label]

    def locatable(self, label: str) -> bool:
        """The label's boxes may be given as its location: none of them is whole-image and there are at
        most ``max_boxes`` of them."""
        return label not in self.unlocated and len(self.boxes_of(label)) <= self.gen.opts["max_boxes"]

    def box_text(self, regions: list[Region]) -> str:
        return box_to_text([list(r.box) for r in regions], self.rec.width, self.rec.height)


@GENERATORS.register("template")
class TemplateGenerator(Generator):
    """Offline generator: template banks per language, choices by hash. Options (generation.options):
    ``max_regions`` (regions per record that get region captions, default 16), ``max_boxes`` (a label
    with more boxes is named without boxes, default 10), ``max_options`` (multiple-choice size, default 4),
    ``whole_image_fraction`` (a box at least this fraction of the image's width and height is whole-image,
    default 0.9)."""

    def __init__(self, config, seed: int, label_spaces: dict[str, list[str]], source_rules=None):
        super().__init__(config, seed, label_spaces, source_rules)
        unknown = sorted(set(config.options) - set(OPTION_DEFAULTS))
        if unknown:
            raise ValueError(f"generation.options: unknown key(s) {', '.join(unknown)} for the template generator; "
                             f"allowed: {', '.join(OPTION_DEFAULTS)}")
        self.opts = dict(OPTION_DEFAULTS)
        for k, v in config.options.items():
            kind = type(OPTION_DEFAULTS[k])
            try:
                self.opts[k] = kind(v)
            except (TypeError, ValueError):
                raise ValueError(f"generation.options.{k}: expected a number, got {v!r}") from None
        frac = self.opts["whole_image_fraction"]
        if not 0.0 < frac <= 1.0:
            raise ValueError(f"generation.options.whole_image_fraction: expected a fraction in (0, 1], got {frac}")
        for lang in self.languages:
            load_bank(lang)

    def is_localized(self, rec: ImageRecord, region: Region) -> bool:
        """False for a whole-image box (see ``whole_image_fraction``)."""
        return not is_whole_image(region.box, rec.width, rec.height, self.opts["whole_image_fraction"])

    def localized_regions(self, rec: ImageRecord) -> list[Region]:
        """The record's regions that say where something is (whole-image boxes left out)."""
        return [r for r in rec.regions if self.is_localized(rec, r)]

    # --- entry point ----------------------------------------------------------------------------
    def generate(self, record: ImageRecord) -> list[Sample]:
        if is_figure(record):  # a paper figure with its caption: PubMedVision's alignment VQA
            return template_figure_samples(self, record)
        out: list[Sample] = []
        for kind in ("caption", "region_caption", "perception_qa", "instruction_qa", "conversation"):
            count = int(self.config.kinds.get(kind, 0))
            if count <= 0:
                continue
            if kind == "region_caption":
                regions = self.localized_regions(record)[: self.opts["max_regions"]]
                jobs = [(i * count + j, r) for i, r in enumerate(regions) for j in range(count)]
            else:
                jobs = [(n, None) for n in range(count)]
            for n, region in jobs:
                lang = self.choose_lang(record.id, kind, n)
                job = _Job(self, record, kind, lang, n)
                qas = self._build(job, region)
                if not qas:
                    continue
                texts = [t for qa in qas for t in (qa.q, qa.a)]
                extra: dict[str, Any] = {"qa_types": [qa.qa_type for qa in qas]}
                dis = sorted({d for qa in qas for d in qa.distractors})
                neg = sorted({d for qa in qas for d in qa.negatives})
                if dis:
                    extra["distractors"] = dis
                if neg:
                    extra["negatives"] = neg
                out.append(self.make_sample(record, kind, lang, n, texts, [i for qa in qas for i in qa.ids], extra))
        return out

    def _build(self, job: _Job, region: Region | None) -> list[_QA]:
        if job.kind == "caption":
            qa = self.caption(job, "caption", "question")
            return [qa] if qa else []
        if job.kind == "region_caption":
            return [self.region_caption(job, region)] if region is not None else []
        if job.kind == "perception_qa":
            qa = self.pick_qa(job, PERCEPTION_TYPES, "ptype")
            return [qa] if qa else []
        if job.kind == "instruction_qa":
            qa = self.pick_qa(job, INSTRUCTION_TYPES, "itype")
            return [qa] if qa else []
        if job.kind == "conversation":
            return self.conversation(job)
        raise ValueError(f"unknown sample kind {job.kind!r}")

    # --- captions -------------------------------------------------------------------------------
    def caption(self, job: _Job, section: str, qpool: str) -> _QA | None:
        q = job.fill(section, qpool)
        parts: list[tuple[str, str] | None] = [job.fill("caption", "modality")]
        if "body_region" in job.fields:
            parts.append(job.fill("caption", "body_region"))
        if "view" in job.fields:
            parts.append(job.fill("caption", "view"))
        rec = job.rec
        shown = _finding_labels(rec.labels)
        if shown:
            parts.append(job.fill("caption", "labels", {"labels": join_list([job.label(x) for x in shown], job.lang)}))
        elif rec.labels:  # only "no finding" labels
            parts.append(job.fill("caption", "no_finding"))
        if rec.regions:
            parts.append(job.fill("caption", "regions", {"regions": self._regions_text(job)}))
        elif rec.task in ("seg", "det") and not rec.labels:
            parts.append(job.fill("caption", "no_regions"))
        if "department" in job.fields:
            parts.append(job.fill("caption", "department"))
        got = [p for p in parts if p is not None]
        if q is None or not got:
            return None
        sep = "" if job.lang == "zh" else " "
        return _QA(q[1], sep.join(t for _, t in got), [q[0], *(i for i, _ in got)], "caption")

    def _regions_text(self, job: _Job) -> str:
        pieces = []
        for lab in self._region_labels(job.rec):
            regs = job.boxes_of(lab)
            tag = ref(job.label(lab))
            pieces.append(tag + job.box_text(regs) if job.locatable(lab) else tag)
        return ("、" if job.lang == "zh" else ", ").join(pieces)

    @staticmethod
    def _region_labels(rec: ImageRecord) -> list[str]:
        out: list[str] = []
        for r in rec.regions:
            if r.label not in out:
                out.append(r.label)
        return out

    def region_caption(self, job: _Job, region: Region) -> _QA | None:
        box = job.box_text([region])
        q = job.fill("region_caption", "question", {"box": box})
        a = job.fill("region_caption", "answer", {"ref": ref(job.label(region.label))})
        if q is None or a is None:
            return None
        ids, text = [q[0], a[0]], a[1]
        if "body_region" in job.fields:
            ctx = job.fill("region_caption", "context")
            if ctx is not None:
                ids.append(ctx[0])
                text += ("" if job.lang == "zh" else " ") + ctx[1]
        return _QA(q[1], text, ids, "region_caption")

    # --- question types -------------------------------------------------------------------------
    # ``plan_<type>`` says whether a type can apply to the job's record (None when not) and which pools it
    # fills with which field names; the field values (box text, label names, options) are computed only for
    # the type that is chosen, and only the chosen phrasing of each pool is filled.
    def pick_qa(self, job: _Job, types: tuple[str, ...], purpose: str, exclude: set[str] | None = None) -> _QA | None:
        """One of the question types that apply to the record, rotating with n so that consecutive
        samples of a record ask different things. A type applies when its plan exists and both its pools
        have a template whose fields are all available, which is exactly when building it gives a QA; so the
        choice is made first and only the chosen type is built."""
        cands = [t for t in types if not (exclude and t in exclude)]
        plans = [p for p in (getattr(self, f"plan_{t}")(job) for t in cands) if p is not None and p.fits(job)]
        if not plans:
            return None
        return self._build_qa(job, job.rotate(plans, purpose, *sorted(exclude or ())))

    def build_qa(self, job: _Job, qa_type: str) -> _QA | None:
        """One question type on its own: its QA, or None when it does not apply to the record."""
        plan = getattr(self, f"plan_{qa_type}")(job)
        return self._build_qa(job, plan) if plan is not None and plan.fits(job) else None

    @staticmethod
    def _build_qa(job: _Job, plan: _Plan) -> _QA:
        qx, ax, kw = plan.values()
        if set(qx) != set(plan.qkeys) or set(ax) != set(plan.akeys):  # the applicability check would be wrong
            raise RuntimeError(f"question type {plan.qa_type}: planned fields {sorted(plan.qkeys)} / "
                               f"{sorted(plan.akeys)} but filled {sorted(qx)} / {sorted(ax)}")
        q = job.fill(plan.section, plan.qpool, qx)
        a = job.fill(plan.section, plan.apool, ax)
        if q is None or a is None:
            raise RuntimeError(f"question type {plan.qa_type}: no template fits although the plan said one does")
        return _QA(q[1], a[1], [q[0], a[0]], plan.qa_type, **kw)

    def _distractor_space(self, job: _Job, exclude: set[str]) -> list[str]:
        return [x for x in self.label_spaces.get(job.rec.dataset, []) if x not in exclude]

    def _distractors(self, job: _Job, exclude: set[str]) -> list[str]:
        space = self._distractor_space(job, exclude)
        k = min(len(space), self.opts["max_options"] - 1)
        order = sorted(space, key=lambda x: stable_int(self.seed, job.rec.id, job.kind, job.n, "distractor", x))
        return sorted(order[:k])

    def _options(self, job: _Job, correct: str, wrong: list[str]) -> tuple[str, str]:
        opts = sorted([correct, *wrong], key=lambda x: stable_int(self.seed, job.rec.id, job.kind, job.n, "opt", x))
        lines = [f"{chr(65 + i)}. {job.label(o)}" for i, o in enumerate(opts)]
        return "\n".join(lines), lines[opts.index(correct)]

    def _mc_plan(self, job: _Job, t: str, qpool: str, exclude: set[str], keys: tuple[str, ...],
                 question: Callable[[], tuple[str, dict[str, str]]]) -> _Plan | None:
        """A multiple-choice type: applies when there is at least one wrong option (``_distractors`` keeps
        ``min(len(space), max_options - 1)`` of the space, sliced exactly the same way here)."""
        space = self._distractor_space(job, exclude)
        if not space[:min(len(space), self.opts["max_options"] - 1)]:
            return None

        def values() -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
            correct, extra = question()
            wrong = self._distractors(job, exclude)
            options, answer = self._options(job, correct, wrong)
            return {**extra, "options": options}, {"answer": answer}, {"distractors": wrong}
        return _Plan(t, "perception_qa", qpool, "mc_a", (*keys, "options"), ("answer",), values)

    @staticmethod
    def _same(t: str, section: str, qpool: str, apool: str, keys: tuple[str, ...],
              extra: Callable[[], dict[str, str]] = dict) -> _Plan:
        """A type whose question and answer are filled with the same fields."""
        def values() -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
            x = extra()
            return x, x, {}
        return _Plan(t, section, qpool, apool, keys, keys, values)

    def plan_box2label(self, job: _Job) -> _Plan | None:
        if not job.localized:
            return None

        def extra() -> dict[str, str]:
            r = job.rotate(job.localized, "region")
            return {"box": job.box_text([r]), "ref": ref(job.label(r.label))}
        return self._same("box2label", "perception_qa", "box2label_q", "box2label_a", ("box", "ref"), extra)

    def plan_label2box(self, job: _Job) -> _Plan | None:
        labs = [x for x in self._region_labels(job.rec) if job.locatable(x)]
        if not labs:
            return None

        def extra() -> dict[str, str]:
            lab = job.rotate(labs, "region_label")
            return {"box": job.box_text(job.boxes_of(lab)), "ref": ref(job.label(lab))}
        return self._same("label2box", "perception_qa", "label2box_q", "label2box_a", ("box", "ref"), extra)

    def plan_box_mc(self, job: _Job) -> _Plan | None:
        if not job.localized:
            return None

        def question() -> tuple[str, dict[str, str]]:
            r = job.rotate(job.localized, "region")
            return r.label, {"box": job.box_text([r])}
        return self._mc_plan(job, "box_mc", "box_mc_q", set(self.record_labels(job.rec)), ("box",), question)

    def plan_cls(self, job: _Job) -> _Plan | None:
        if not job.rec.labels:
            return None
        shown = _finding_labels(job.rec.labels)
        if not shown:
            return self._same("cls", "perception_qa", "cls_q", "cls_none_a", ())
        return self._same("cls", "perception_qa", "cls_q", "cls_a", ("labels",),
                          lambda: {"labels": join_list([job.label(x) for x in shown], job.lang)})

    @staticmethod
    def _absence_known(rec: ImageRecord) -> bool:
        """True when a dataset label missing from this record is known to be absent: only when the
        pipeline marked the record's labels exhaustive (``extra["labels_exhaustive"] is True``)."""
        return rec.extra.get("labels_exhaustive") is True

    def plan_cls_mc(self, job: _Job) -> _Plan | None:
        if not job.rec.labels or not self._absence_known(job.rec):
            return None
        return self._mc_plan(job, "cls_mc", "mc_q", set(self.record_labels(job.rec)), (),
                             lambda: (job.rotate(job.rec.labels, "mc_label"), {}))

    def plan_modality(self, job: _Job) -> _Plan | None:
        return self._same("modality", "instruction_qa", "modality_q", "modality_a", ())

    def _field_plan(self, job: _Job, name: str) -> _Plan | None:
        if name not in job.fields:
            return None
        return self._same(name, "instruction_qa", f"{name}_q", f"{name}_a", ())

    def plan_department(self, job: _Job) -> _Plan | None:
        return self._field_plan(job, "department")

    def plan_body_region(self, job: _Job) -> _Plan | None:
        return self._field_plan(job, "body_region")

    def plan_view(self, job: _Job) -> _Plan | None:
        return self._field_plan(job, "view")

    def plan_structures(self, job: _Job) -> _Plan | None:
        if not job.rec.regions:
            return None
        return self._same("structures", "instruction_qa", "structures_q", "structures_a", ("labels",),
                          lambda: {"labels": join_list([job.label(x) for x in self._region_labels(job.rec)], job.lang)})

    def plan_yes(self, job: _Job) -> _Plan | None:
        candidates = _finding_labels(self.record_labels(job.rec))
        if not candidates:
            return None
        lab = job.rotate(candidates, "yes_label")
        regs = job.boxes_of(lab)
        boxed = bool(regs) and job.locatable(lab)
        keys = ("label", "ref", "box") if boxed else ("label", "ref")

        def extra() -> dict[str, str]:
            x = {"label": job.label(lab), "ref": ref(job.label(lab))}
            if boxed:
                x["box"] = job.box_text(regs)
            return x
        return self._same("yes", "instruction_qa", "yes_q", "yes_region_a" if boxed else "yes_label_a", keys, extra)

    def plan_no(self, job: _Job) -> _Plan | None:
        rec = job.rec
        if not self._absence_known(rec):
            return None
        present = set(self.record_labels(rec))
        space = [x for x in self.label_spaces.get(rec.dataset, []) if x not in present and not is_no_finding(x)]
        if not space:
            return None
        shown = _finding_labels(rec.labels)
        if len(shown) == 1:
            apool, akeys = "no_single_a", ("neg", "label")
        elif rec.labels and not shown:
            apool, akeys = "no_none_a", ("neg",)
        else:
            apool, akeys = "no_multi_a", ("neg",)

        def values() -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
            neg = job.rotate(space, "neg")
            a = {"neg": job.label(neg)}
            if len(shown) == 1:
                a["label"] = job.label(shown[0])
            return {"label": a["neg"]}, a, {"negatives": [neg]}
        return _Plan("no", "instruction_qa", "yes_q", apool, ("label",), akeys, values)

    def plan_count(self, job: _Job) -> _Plan | None:
        """How many regions of a label: only for labels whose regions are instances (``countable``) and none
        of whose boxes is whole-image (a component covering the image may hold any number of instances)."""
        labs = [x for x in self._region_labels(job.rec)
                if x not in job.unlocated and self.countable(job.rec, x)]
        if not labs:
            return None
        lab = job.rotate(labs, "count_label")
        boxed = job.locatable(lab)
        keys = ("label", "ref", "count", "region_word", *(("box",) if boxed else ()))

        def extra() -> dict[str, str]:
            regs = job.boxes_of(lab)
            x = {"label": job.label(lab), "ref": ref(job.label(lab)), "count": str(len(regs)),
                 "region_word": "region" if len(regs) == 1 else "regions"}
            if job.lang == "zh":
                x["region_word"] = "区域"
            if boxed:
                x["box"] = job.box_text(regs)
            return x
        return self._same("count", "instruction_qa", "count_q", "count_a", keys, extra)

    # --- conversation ---------------------------------------------------------------------------
    def conversation(self, job: _Job) -> list[_QA]:
        """An overview turn (the caption answer) followed by 1-3 different grounded questions."""
        first = self.caption(job, "conversation", "opener")
        if first is None:
            return []
        qas = [first]
        want = 1 + job.h("turns") % 3
        used: set[str] = set()
        types = INSTRUCTION_TYPES + PERCEPTION_TYPES
        for i in range(want):
            qa = self.pick_qa(job, types, f"conv{i}", exclude=used | {"cls"})
            if qa is None:
                break
            used.add(qa.qa_type)
            qas.append(qa)
        return qas if len(qas) >= 2 else []


def _finding_labels(labels: list[str]) -> list[str]:
    """The labels that name something, i.e. without the "no finding" ones."""
    return [x for x in labels if not is_no_finding(x)]
