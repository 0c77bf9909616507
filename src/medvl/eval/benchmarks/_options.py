"""Typed benchmark options: each loader declares a pydantic model (``Benchmark.Options``) whose fields are its
options with their types and defaults. ``parse_options`` turns what the user gave (CLI text such as
``subjects=Clinical_Medicine,Pharmacy`` or ``clean=false``, or typed Python values) into that model; every
problem (unknown option, bad value) is one ``BenchmarkOptionError`` line naming the option and what is
allowed. ``describe_options`` renders a model for ``medvl eval --list``."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from medvl.eval.types import BenchmarkOptionError


class BenchmarkOptions(BaseModel):
    """Base of every loader's option model: unknown options are refused, values are validated on use."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class NoOptions(BenchmarkOptions):
    """A benchmark without options."""


def _split_commas(value: Any) -> Any:
    """A comma-separated string -> list of stripped, non-empty parts; lists/tuples pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, tuple):
        return list(value)
    return value


def _dedupe(value: Any) -> Any:
    if isinstance(value, list):
        return list(dict.fromkeys(value))
    return value


def CommaList(item: Any) -> Any:  # noqa: N802 (a type factory, used like a type)
    """``list[item]`` that also accepts one comma-separated string ("a,b" -> ["a", "b"]); repeats dropped."""
    # before-validators run last-listed first: split the text, then drop repeats
    return Annotated[list[item], BeforeValidator(_dedupe), BeforeValidator(_split_commas)]


def parse_options(benchmark: str, model: type[BenchmarkOptions], given: dict[str, Any] | None) -> BenchmarkOptions:
    """``given`` validated into ``model``; raises ``BenchmarkOptionError`` (one line) naming each bad option."""
    given = dict(given or {})
    allowed = option_names(model)
    unknown = sorted(k for k in given if k not in allowed)
    if unknown:
        raise BenchmarkOptionError(f"{benchmark}: unknown option(s) {', '.join(unknown)}; "
                                   f"allowed: {', '.join(sorted(model.model_fields)) or '(none)'}")
    try:
        return model.model_validate(given)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = [str(x) for x in err["loc"]]
            where = loc[0] if loc else "?"
            if len(loc) > 1:
                where += f" item {int(loc[1]) + 1}" if loc[1].isdigit() else f".{'.'.join(loc[1:])}"
            problems.append(f"option {where}={err.get('input')!r}: {err['msg']}")
        raise BenchmarkOptionError(f"{benchmark}: " + "; ".join(problems).replace("\n", " ")) from None


def option_names(model: type[BenchmarkOptions]) -> set[str]:
    """Every name an option may be given under (field names and their aliases)."""
    names = set(model.model_fields)
    for field in model.model_fields.values():
        alias = field.validation_alias
        if alias is None:
            continue
        choices = getattr(alias, "choices", [alias])
        names.update(c for c in choices if isinstance(c, str))
    return names


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def type_text(tp: Any) -> str:
    """A short description of an option type: "one of en, zh, all", "true/false", "list of a, b (comma-separated)"."""
    tp = _strip_annotated(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        parts = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(type_text(a) for a in parts)
    if origin is list:
        (inner,) = typing.get_args(tp) or (str,)
        inner_text = type_text(inner)
        inner_text = inner_text[len("one of "):] if inner_text.startswith("one of ") else inner_text
        return f"comma-separated list of {inner_text}"
    return {bool: "true/false", int: "integer", float: "number", str: "text"}.get(tp, getattr(tp, "__name__", str(tp)))


def describe_options(model: type[BenchmarkOptions]) -> list[str]:
    """One line per option: ``name (aliases): type; default X. description`` (no default shown when unset)."""
    lines = []
    for name, field in model.model_fields.items():
        aliases = sorted(option_names(model) - set(model.model_fields))
        alias_txt = [a for a in aliases if _alias_of(model, a) == name]
        default = field.get_default(call_default_factory=True)
        if default is None:  # unset: the description says what happens
            default_txt = ""
        elif isinstance(default, bool):
            default_txt = f"; default {str(default).lower()}"
        else:
            default_txt = f"; default {','.join(default) if isinstance(default, list) else default}"
        head = name + (f" (also {', '.join(alias_txt)})" if alias_txt else "")
        desc = f". {field.description}" if field.description else ""
        lines.append(f"{head}: {type_text(field.annotation)}{default_txt}{desc}")
    return lines


def _alias_of(model: type[BenchmarkOptions], alias: str) -> str | None:
    for name, field in model.model_fields.items():
        choices = getattr(field.validation_alias, "choices", [field.validation_alias])
        if alias in choices:
            return name
    return None
