"""`medvl taxonomy`: what a recipe may say. Lists the allowed modalities (with synonyms and DICOM codes),
departments, clinical tasks, body regions and views from the taxonomy's data files, and with ``--formats``
every source format's ``options`` (type, default, description) plus the recipe's ``image`` keys, read from
the pydantic models themselves so the listing never goes stale. ``--markdown`` prints the same as Markdown
tables (the README's tables are this output)."""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

import click

from medvl.taxonomy import VOCABULARY_KINDS, vocabulary

TITLES = {"modality": "Modalities", "department": "Departments", "clinical_task": "Clinical tasks",
          "body_region": "Body regions", "view": "Views"}
WHERE = {"modality": "source key `modality`, or from the data: DICOM Modality, dataset.json, "
                     "image_folder `class_modality`, csv_labels `modality_column`",
         "department": "source key `department`", "clinical_task": "source key `clinical_task`",
         "body_region": "source key `body_region`, or from the data: DICOM BodyPartExamined",
         "view": "from the data: csv_labels `view_column`, DICOM ViewPosition, the slice axis of volumes"}


@dataclass(frozen=True)
class OptionRow:
    """One option of a source format (or a recipe ``image`` key): where, name, type, default, description."""

    scope: str  # source format name, or "image" for the recipe's image keys
    name: str
    type: str
    default: str  # as written in YAML/JSON: "Data_Entry_2017.csv" -> "Data_Entry_2017.csv" (quoted), null, []
    description: str


def type_name(annotation: Any) -> str:
    """A readable type: ``str | None``, ``list[str]``, ``'xywh' | 'xyxy'``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if inner else origin.__name__
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _field_comments(model: type) -> dict[str, str]:
    """Trailing ``# comments`` on one-line field definitions of a model class (used when a field has no
    ``description``)."""
    try:
        src = inspect.getsource(model)
    except (OSError, TypeError):
        return {}
    out = {}
    for m in re.finditer(r"^\s{4}(\w+)\s*:[^#\n]*#\s*(.+?)\s*$", src, flags=re.MULTILINE):
        out.setdefault(m.group(1), m.group(2))
    return out


def model_rows(scope: str, model: type) -> list[OptionRow]:
    """One row per field of a pydantic model, in definition order."""
    comments = _field_comments(model)
    rows = []
    for name, f in model.model_fields.items():
        default = f.get_default(call_default_factory=True)
        desc = f.description or comments.get(name, "")
        rows.append(OptionRow(scope, name, type_name(f.annotation), json.dumps(default, ensure_ascii=False), desc))
    return rows


def option_rows() -> list[OptionRow]:
    """Every option of every registered source format (formats sorted by name), then ``image.*``."""
    from medvl.sources.config import ImageConfig
    from medvl.sources import SOURCES

    rows = []
    for fmt in SOURCES.names():
        rows += model_rows(fmt, SOURCES.get(fmt).Options)
    return rows + model_rows("image", ImageConfig)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_vocabularies(kinds: list[str]) -> str:
    parts = []
    for kind in kinds:
        rows = vocabulary(kind)
        parts.append(f"**{TITLES[kind]}** ({WHERE[kind]})\n")
        dicom = kind == "modality"
        head = "| key | English | Chinese | also accepted |" + (" DICOM codes |" if dicom else "")
        parts.append(head)
        parts.append("|---" * (5 if dicom else 4) + "|")
        for e in rows:
            cells = [f"`{e['key']}`", e["en"], e["zh"], ", ".join(e["synonyms"])]
            if dicom:
                cells.append(", ".join(e["dicom"]))
            parts.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        parts.append("")
    return "\n".join(parts)


def markdown_options(rows: list[OptionRow]) -> str:
    lines = ["| format | option | type | default | description |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in
                                         (f"`{r.scope}`", f"`{r.name}`", r.type, f"`{r.default}`", r.description))
                     + " |")
    return "\n".join(lines) + "\n"


def _print_vocabularies(kinds: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for kind in kinds:
        t = Table(title=f"{TITLES[kind]} ({WHERE[kind].replace('`', '')})", show_lines=False)
        for col in ("key", "English", "Chinese", "also accepted") + (("DICOM",) if kind == "modality" else ()):
            t.add_column(col, overflow="fold")
        for e in vocabulary(kind):
            cells = [e["key"], e["en"], e["zh"], ", ".join(e["synonyms"])]
            t.add_row(*cells, *([", ".join(e["dicom"])] if kind == "modality" else []))
        console.print(t)


def _print_options(rows: list[OptionRow]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Source format options (recipe: sources[].options) and image keys", show_lines=False)
    for col in ("format", "option", "type", "default", "description"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r.scope, r.name, r.type, r.default, r.description)
    Console().print(t)


@click.command(name="taxonomy")
@click.argument("kind", required=False, type=click.Choice(VOCABULARY_KINDS))
@click.option("--formats", is_flag=True, help="List every source format's options (type, default, description) "
              "and the recipe's image keys instead of the vocabularies.")
@click.option("--format", "fmt", default=None, metavar="NAME", help="With --formats: only this source format.")
@click.option("--markdown", is_flag=True, help="Print Markdown tables (as in the README).")
def command(kind: str | None, formats: bool, fmt: str | None, markdown: bool) -> None:
    """List what a recipe may say: modalities (with synonyms and DICOM codes), departments, clinical tasks,
    body regions and views; or, with --formats, every source format's options with defaults.

    Examples: medvl taxonomy; medvl taxonomy modality; medvl taxonomy --formats --format csv_labels"""
    if formats or fmt:
        rows = option_rows()
        if fmt is not None:
            from medvl.sources import SOURCES

            if fmt not in SOURCES:
                raise click.BadParameter(f"{fmt!r} is not a source format; allowed: {', '.join(SOURCES.names())}",
                                         param_hint="--format")
            rows = [r for r in rows if r.scope == fmt]
        click.echo(markdown_options(rows), nl=False) if markdown else _print_options(rows)
        return
    kinds = [kind] if kind else list(VOCABULARY_KINDS)
    click.echo(markdown_vocabularies(kinds), nl=False) if markdown else _print_vocabularies(kinds)
