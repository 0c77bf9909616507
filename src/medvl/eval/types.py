"""Shared types of the evaluation harness: items, requests, score results, and the registries.

- a *benchmark* (``medvl/eval/benchmarks/<name>.py``) reads its published files into ``EvalItem``s;
- a *protocol* (``medvl/eval/protocols.py``) turns an item into a prompt and names its default scorer;
- a *scorer* (``medvl/eval/scorers/<name>.py``) turns (item, raw response) into a ``ScoreResult``;
- a *model adapter* (``medvl/eval/adapters/<name>.py``) answers ``Request``s.
Each is registered by name; adding one is one new file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

from medvl.core.registry import Registry

ImageRef = Union[str, bytes]  # absolute file path, or encoded image bytes (PNG/JPEG)
AnswerType = Literal["mc", "closed", "open"]


@dataclass
class EvalItem:
    id: str  # the benchmark's own question id (as a string)
    question: str  # question text as published (MedXpertQA's already contains its options)
    images: list[ImageRef]
    answer: str | None  # gold: option letter for "mc"; answer text for "closed"/"open"; None if hidden
    options: dict[str, str] = field(default_factory=dict)  # "A" -> text, in order; empty for open items
    answer_type: AnswerType = "open"  # "mc" multiple choice; "closed" yes/no-like; "open" free text
    lang: str = "en"
    groups: dict[str, str] = field(default_factory=dict)  # modality, task, department, granularity, question_type...
    meta: dict[str, Any] = field(default_factory=dict)  # anything else kept from the source row (no images)

    @property
    def gold_text(self) -> str | None:
        """The gold answer as text (option text for multiple choice)."""
        if self.answer is None:
            return None
        if self.answer_type == "mc" and self.answer in self.options:
            return self.options[self.answer]
        return self.answer


@dataclass
class Request:
    id: str
    prompt: str
    images: list[ImageRef]
    max_new_tokens: int = 64


@dataclass
class ScoreResult:
    parsed: str | None  # the extracted answer (letter or normalized text); None = could not parse
    correct: bool | None  # None when the gold answer is hidden
    score: float = 0.0  # 1/0 for accuracy; recall or F1 for open items
    unparsed: bool = False  # True when extraction failed (never replaced by a random guess)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Benchmark:
    """Base class: subclasses set ``name``-level attributes, declare their options as a pydantic model
    ``Options`` (see ``benchmarks/_options.py``; None = no options) and implement ``load``. After ``load``,
    ``skipped`` lists the rows that could not become items, each an (id, reason) pair with a ``code``."""

    registry_name: ClassVar[str] = ""
    Options: ClassVar[Any] = None
    default_protocol: ClassVar[str] = "mc_vlmevalkit"
    default_scorer: ClassVar[str | None] = None  # None = the protocol's default
    splits: ClassVar[tuple[str, ...]] = ("test",)
    description: ClassVar[str] = ""

    def load(self, data_dir: Path, split: str | None = None, **options: Any) -> list[EvalItem]:
        raise NotImplementedError

    def write_submission(self, results: list[dict[str, Any]], out_dir: Path) -> Path | None:
        """Write the organizers' predictions file when the split hides its answers (default: none)."""
        return None


class BenchmarkFormatError(ValueError):
    """A benchmark file that does not match its published layout; the message names file and field."""


class BenchmarkOptionError(ValueError):
    """A bad benchmark option or split given by the user; a one-line message naming it and what is allowed."""


BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark", "medvl.eval.benchmarks")
SCORERS: Registry[Any] = Registry("scorer", "medvl.eval.scorers")
ADAPTERS: Registry[Any] = Registry("model adapter", "medvl.eval.adapters")
