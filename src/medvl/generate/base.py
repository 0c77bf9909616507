"""What a generator is: a registered class that turns one ``ImageRecord`` into ``Sample``s.

The pipeline builds one generator per run with ``make_generator(config, seed, label_spaces, source_rules)`` and calls
``generate(record)`` for every record, possibly in several processes, so a generator must be
deterministic and keep no state that depends on call order.

Adding a generator = one new file in ``medvl/generate/`` with ``@GENERATORS.register("name")``.

How an LLM-backed generator plugs in (GMAI-VL's "annotation-guided" generation):
- subclass :class:`Generator`, register it (e.g. ``"llm"``), read the model / endpoint from
  ``GenerationConfig.options``;
- take its prompts from a data file (the two prompt families of GMAI-VL: instruction QA and region
  caption), fill them with :meth:`Generator.record_fields`, send the image plus prompt, parse the JSON
  answer and drop replies that name labels the record does not have;
- keep the shared conventions by using :meth:`Generator.choose_lang`, :meth:`Generator.sample_id` and
  :meth:`Generator.make_sample`: same ids, same meta, ``generator="llm:<model>"`` and
  ``template_id="<model>+<sha256 of the filled prompt, 12 hex>"``, so exports and curation treat the
  two kinds of samples alike. Caching replies by that prompt hash keeps reruns byte-identical."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from medvl.core.hashing import stable_int
from medvl.core.records import ImageRecord, Sample, Turn
from medvl.core.registry import Registry
from medvl.generate.semantics import is_instance_label
from medvl.taxonomy import (body_region_name, department_name, has_chinese_name, label_zh, modality_image_name,
                            modality_name, normalize_body_region, normalize_department, normalize_modality,
                            normalize_view, view_name)

if TYPE_CHECKING:
    from medvl.generate.config import GenerationConfig

GENERATORS: Registry[type["Generator"]] = Registry("generator", "medvl.generate")

_LANG_SCALE = 1_000_000


@dataclass(frozen=True)
class SourceRules:
    """What generated text may say about one source's regions (built by the pipeline from the recipe).

    ``count_labels``: "auto" (labels naming countable instances, see :func:`is_instance_label`), "none", or
    the exact set of normalized labels to count. ``regions_are_instances``: False when the source gives one
    box per label instead of one per connected component (``options.per_component: false``), so the number
    of boxes says nothing about the number of instances."""

    count_labels: Literal["auto", "none"] | frozenset[str] = "auto"
    regions_are_instances: bool = True


class Generator:
    """Base class. ``label_spaces`` maps dataset name -> sorted list of every normalized label in that
    dataset (image labels and region labels); generators draw wrong options and negatives from it.
    ``source_rules`` maps dataset name -> :class:`SourceRules` (a dataset without an entry gets the defaults)."""

    registry_name: ClassVar[str] = ""

    def __init__(self, config: "GenerationConfig", seed: int, label_spaces: dict[str, list[str]],
                 source_rules: Mapping[str, SourceRules] | None = None):
        self.config = config
        self.seed = int(seed)
        self.label_spaces = {k: sorted(v) for k, v in (label_spaces or {}).items()}
        self.source_rules = dict(source_rules or {})
        langs = list(config.languages)
        if not langs:
            raise ValueError("generation.languages: expected at least one of 'en', 'zh'")
        self.languages = langs
        self.zh_share = float(config.zh_share)

    def generate(self, record: ImageRecord) -> list[Sample]:
        """All samples for one record (an empty list when no kind applies)."""
        raise NotImplementedError

    def generate_batch(self, records: list[ImageRecord]) -> list[list[Sample]]:
        """Samples for a batch of records (one build chunk), in record order. The default calls
        :meth:`generate` per record; a generator that calls slow endpoints overrides this to send the
        batch's requests concurrently (e.g. ``asyncio.run`` over the batch with a concurrency limit)."""
        return [self.generate(r) for r in records]

    def open_cache(self, folder: str | None) -> None:
        """Called once per chunk before :meth:`generate_batch` with a folder the generator may keep an
        on-disk cache in (shared by all chunks and kept across a resumed build, so a chunk redone after a
        kill pays for no request twice), or None. The template engine needs none."""

    def start_run(self, *, out_dir: str, dry_run: bool = False, ledger_dir: str | None = None) -> None:
        """Called once per chunk before :meth:`open_cache`: the build's output folder (image paths are relative
        to it), whether this is a dry run (model requests are listed, not sent) and the folder in which the
        run's processes share their model usage (budget). The template engine needs none of it."""

    def run_report(self) -> dict[str, Any]:
        """After :meth:`generate_batch`: ``usage`` (tokens of the replies behind the chunk's samples),
        ``counts``, ``rejects`` (dicts of :class:`medvl.core.records.Reject` fields: replies that failed their
        checks) and, in a dry run, ``dry_run_requests``. The template engine reports nothing."""
        return {}

    # shared conventions ------------------------------------------------------------------------
    def choose_lang(self, record_id: str, kind: str, n: int) -> str:
        """Language of one sample: Chinese with probability ``zh_share`` when both languages are on,
        decided by a hash of (seed, record id, kind, n), so it never depends on run order."""
        has_en, has_zh = "en" in self.languages, "zh" in self.languages
        if not has_zh:
            return "en"
        if not has_en:
            return "zh"
        u = stable_int(self.seed, record_id, kind, n, "lang") % _LANG_SCALE
        return "zh" if u < self.zh_share * _LANG_SCALE else "en"

    @staticmethod
    def sample_id(record: ImageRecord, kind: str, lang: str, n: int) -> str:
        return f"{record.id}#{kind}#{lang}#{n}"

    @staticmethod
    def record_labels(record: ImageRecord) -> list[str]:
        """Image labels, then region labels not already listed (first-seen order)."""
        out = list(record.labels)
        for r in record.regions:
            if r.label not in out:
                out.append(r.label)
        return out

    def countable(self, record: ImageRecord, label: str) -> bool:
        """Whether the number of ``label``'s regions in ``record`` is a number of instances that text may
        state: the source's regions are per component and its ``count_labels`` admits the label."""
        rules = self.source_rules.get(record.dataset, SourceRules())
        if not rules.regions_are_instances or rules.count_labels == "none":
            return False
        if rules.count_labels == "auto":
            return is_instance_label(label)
        return label in rules.count_labels

    def localize_label(self, label: str, lang: str) -> str:
        """A label as written in ``lang``: in Chinese the recipe's ``generation.label_zh`` name, else the
        glossary's term, else the English label as written."""
        if lang == "zh":
            return label_zh(label, getattr(self.config, "label_zh", None) or {}) or label
        return label

    @staticmethod
    def record_fields(record: ImageRecord, lang: str) -> dict[str, str]:
        """Text for the record's metadata in ``lang``: modality, modality_image(_a), and when known
        body_region, department and view(_a). Unknown vocabulary values are used as written."""
        f: dict[str, str] = {}
        mod = normalize_modality(record.modality)
        if mod is not None:
            f["modality"] = modality_name(mod, lang)
            f["modality_image"] = modality_image_name(mod, lang)
            f["modality_image_a"] = modality_image_name(mod, lang, article=(lang == "en"))
        else:
            f["modality"] = str(record.modality)
            f["modality_image"] = f"{record.modality} image" if lang == "en" else f"{record.modality}图像"
            f["modality_image_a"] = (_article(f["modality_image"]) + " " if lang == "en" else "") + f["modality_image"]
        if record.body_region:
            br = normalize_body_region(record.body_region)
            f["body_region"] = body_region_name(br, lang) if br else str(record.body_region)
        if record.department:
            dep = normalize_department(record.department)
            f["department"] = department_name(dep, lang) if dep else str(record.department)
        view_raw = (record.slice or {}).get("axis") or record.view
        if view_raw:
            v = normalize_view(str(view_raw))
            f["view"] = view_name(v, lang) if v else str(view_raw)
            f["view_a"] = f"{_article(f['view'])} {f['view']}" if lang == "en" else f["view"]
        return f

    def base_meta(self, record: ImageRecord) -> dict[str, Any]:
        return {
            "modality": record.modality,
            "department": record.department,
            "clinical_task": record.clinical_task,
            "body_region": record.body_region,
            "dataset": record.dataset,
            "source_task": record.task,
            "labels": self.record_labels(record),
        }

    def make_sample(self, record: ImageRecord, kind: str, lang: str, n: int, texts: list[str],
                    template_ids: list[str], extra_meta: dict[str, Any] | None = None) -> Sample:
        """A sample whose turns alternate user / assistant, starting with the user."""
        if not texts or len(texts) % 2:
            raise ValueError(f"{kind} sample for {record.id}: expected user/assistant pairs, got {len(texts)} turns")
        turns = [Turn(role="user" if i % 2 == 0 else "assistant", text=t) for i, t in enumerate(texts)]
        meta = self.base_meta(record)
        if extra_meta:
            meta.update(extra_meta)
        return Sample(
            id=self.sample_id(record, kind, lang, n),
            images=[record.image],
            turns=turns,
            kind=kind,
            lang=lang,
            record_id=record.id,
            generator=self.registry_name or "template",
            template_id="+".join(template_ids),
            meta=meta,
        )


def missing_zh_labels(labels: Iterable[str], label_zh_map: Mapping[str, str] | None = None) -> list[str]:
    """The labels (sorted, each once) that Chinese samples would have to leave in English: neither
    ``label_zh_map`` (a recipe's ``generation.label_zh``) nor the built-in glossary names them, and
    they contain no Chinese already. The pipeline warns about these so a recipe can add names."""
    return sorted({str(x) for x in labels if str(x).strip() and not has_chinese_name(str(x), label_zh_map or {})})


def _article(phrase: str) -> str:
    """'a' or 'an' by the first letter (good enough for the vocabulary phrases used here)."""
    return "an" if phrase[:1].lower() in "aeio" else "a"
