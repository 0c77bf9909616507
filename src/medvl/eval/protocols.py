"""Evaluation protocols: how an ``EvalItem`` is posed to a model (prompt, token budget, default scorer).

Each protocol reproduces the prompt of a peer toolkit (strings live in ``eval/data/prompts.yaml``):

- ``mc_vlmevalkit``: VLMEvalKit's ``Hint / Question / Options / Please select ...`` prompt;
- ``mc_letter``: LLaVA / HuatuoGPT-Vision / lmms-eval MMMU: question, ``A. ..`` lines, "Answer with the
  option's letter from the given choices directly."; options are not appended again when
  ``item.meta["options_in_question"]`` is true (MedXpertQA);
- ``closed_as_mc``: HuatuoGPT-Vision: a closed yes/no item becomes a two-option multiple choice
  (see ``pose_closed_as_mc``); other items are posed as ``mc_letter`` (mc) or ``short_answer``;
- ``short_answer``: lmms-eval SLAKE: question + "Answer the question using a single word or phrase."
  (Chinese suffix for ``lang == "zh"``), 32 new tokens;
- ``open_llava_med``: the question as published.

Items without options under an mc protocol (e.g. MMMU's open questions) get the short-answer prompt, as
lmms-eval's MMMU task does; items with options under ``short_answer`` / ``open_llava_med`` get the
``mc_letter`` prompt (a multiple-choice question cannot be asked without its options).

The runner must score the item *as posed*: ``score_response`` does ``protocol.pose(item)`` then
``get_scorer(name).score(posed_item, response)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from medvl.core.yamlio import load_data_yaml
from medvl.eval.scorers._text import gold_yes_no
from medvl.eval.types import SCORERS, EvalItem, ScoreResult

_PROMPTS: dict[str, Any] = load_data_yaml(
    (Path(__file__).parent / "data" / "prompts.yaml").read_text(encoding="utf-8")
)


def _is_zh(item: EvalItem) -> bool:
    return item.lang.lower().startswith("zh")


def _hint(item: EvalItem) -> str | None:
    hint = item.meta.get("hint")
    if hint is None:
        return None
    text = str(hint).strip()
    return None if text == "" or text.lower() in ("nan", "none") else text


def _option_lines(item: EvalItem, template: str) -> str:
    return "".join(template.format(letter=k, text=v) for k, v in item.options.items())


def _short_answer_prompt(item: EvalItem) -> str:
    suffix = _PROMPTS["short_answer"]["suffix"]["zh" if _is_zh(item) else "en"]
    return f"{item.question}{suffix}"


def _mc_letter_prompt(item: EvalItem) -> str:
    if not item.options:
        return _short_answer_prompt(item)
    cfg = _PROMPTS["mc_letter"]
    text = cfg["question"].format(question=item.question)
    if not item.meta.get("options_in_question"):
        text += _option_lines(item, cfg["option"])
    return text + cfg["instruction"]


def _mc_vlmevalkit_prompt(item: EvalItem) -> str:
    if not item.options:
        return _short_answer_prompt(item)
    cfg = _PROMPTS["mc_vlmevalkit"]
    hint = _hint(item)
    text = cfg["hint"].format(hint=hint) if hint else ""
    text += cfg["question"].format(question=item.question)
    if not item.meta.get("options_in_question"):
        text += cfg["options_header"] + _option_lines(item, cfg["option"])
    return text + cfg["instruction"]


def _question_only_prompt(item: EvalItem) -> str:
    return _mc_letter_prompt(item) if item.options else item.question


def _short_or_mc_prompt(item: EvalItem) -> str:
    return _mc_letter_prompt(item) if item.options else _short_answer_prompt(item)


def pose_closed_as_mc(item: EvalItem) -> EvalItem:
    """The item as HuatuoGPT-Vision poses it: a closed item whose gold means yes or no (English yes/no,
    SLAKE's Chinese 是/是的/有/包含/... and 否/不是/没有/不包含/...) becomes answer_type "mc" with options
    ``A = yes, B = no`` (Chinese items: ``A = 是, B = 否``); the gold letter is "A" when the gold means yes
    and "B" when it means no. A closed item with hidden gold (None) is posed the same way with answer None.
    Other items (mc, open, closed with a non-yes/no gold such as "Coronal Plane") are returned unchanged.
    The original gold is kept in ``meta["closed_gold"]``."""
    if item.answer_type != "closed" or item.options:
        return item
    polarity = gold_yes_no(item.answer) if item.answer is not None else None
    if item.answer is not None and polarity is None:
        return item
    options = dict(_PROMPTS["closed_as_mc"]["options"]["zh" if _is_zh(item) else "en"])
    letter = None if polarity is None else ("A" if polarity == "yes" else "B")
    meta = dict(item.meta, posed_as="closed_as_mc", closed_gold=item.answer)
    return dataclasses.replace(item, options=options, answer=letter, answer_type="mc", meta=meta)


def _identity(item: EvalItem) -> EvalItem:
    return item


@dataclass(frozen=True)
class Protocol:
    """How items are posed: ``prompt(item)`` gives the text sent with the images; ``pose(item)`` gives the
    item the scorer must see (differs from the input only for ``closed_as_mc``)."""

    name: str
    default_scorer: str
    max_new_tokens: int
    description: str
    builder: Callable[[EvalItem], str] = field(repr=False)
    poser: Callable[[EvalItem], EvalItem] = field(default=_identity, repr=False)

    def pose(self, item: EvalItem) -> EvalItem:
        """The item as asked (options and gold letter added by ``closed_as_mc``; others unchanged)."""
        return self.poser(item)

    def prompt(self, item: EvalItem) -> str:
        """The prompt text for ``item`` (no image placeholder: adapters add their own)."""
        return self.builder(self.pose(item))


def _make(name: str, description: str, builder: Callable[[EvalItem], str],
          poser: Callable[[EvalItem], EvalItem] = _identity) -> Protocol:
    cfg = _PROMPTS[name]
    return Protocol(name=name, default_scorer=str(cfg["default_scorer"]),
                    max_new_tokens=int(cfg["max_new_tokens"]), description=description,
                    builder=builder, poser=poser)


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        _make("mc_vlmevalkit", "VLMEvalKit multiple-choice prompt (Hint/Question/Options).", _mc_vlmevalkit_prompt),
        _make("mc_letter", "LLaVA/HuatuoGPT-Vision/lmms-eval MMMU letter prompt.", _mc_letter_prompt),
        _make("closed_as_mc", "HuatuoGPT-Vision: yes/no closed items as 2-option multiple choice.",
              _short_or_mc_prompt, pose_closed_as_mc),
        _make("short_answer", "lmms-eval SLAKE: answer with a single word or phrase.", _short_or_mc_prompt),
        _make("open_llava_med", "LLaVA-Med: the question as published.", _question_only_prompt),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; KeyError listing the allowed names otherwise."""
    if name not in PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r}; allowed: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]


@lru_cache(maxsize=None)
def get_scorer(name: str) -> Any:
    """A (cached) instance of the scorer registered as ``name`` (KeyError listing allowed names)."""
    return SCORERS.get(name)()


def score_response(item: EvalItem, response: str, protocol: str | Protocol = "mc_letter",
                   scorer: str | None = None) -> ScoreResult:
    """Score ``response`` to ``item`` asked under ``protocol`` with ``scorer`` (default: the protocol's)."""
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    return get_scorer(scorer or proto.default_scorer).score(proto.pose(item), response)
