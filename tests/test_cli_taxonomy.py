"""`medvl taxonomy` (issue 6, item 20): the vocabularies a recipe may use and every source format's options,
generated from the data files and the Options models; and the README's options table kept in step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from medvl.cli.main import cli
from medvl.cli.taxonomy import option_rows
from medvl.pipeline.recipe import ImageConfig
from medvl.sources import SOURCES
from medvl.taxonomy import CLINICAL_TASKS, DEPARTMENTS, MODALITIES, vocabulary

README = Path(__file__).resolve().parents[1] / "README.md"


def _run(*args: str):
    return CliRunner().invoke(cli, ["taxonomy", *args], catch_exceptions=False)


def _md_rows(text: str) -> list[list[str]]:
    """Cells of every Markdown table row (escaped pipes kept inside cells, backticks stripped)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.fullmatch(r"[|\-: ]+", line):
            continue
        cells = re.split(r"(?<!\\)\|", line.strip("|"))
        rows.append([c.strip().replace("\\|", "|").strip("`") for c in cells])
    return rows


def test_vocabularies_list_every_key_with_synonyms():
    res = _run("--markdown")
    assert res.exit_code == 0
    rows = {r[0]: r for r in _md_rows(res.output)}
    for key in MODALITIES + DEPARTMENTS + CLINICAL_TASKS:
        assert key in rows, key
    ct = rows["CT"]
    assert "computed tomography" in ct[3] and ct[4] == "CT"
    assert "CR" in rows["X-ray"][4]  # DICOM codes of X-ray
    assert "thorax" in rows["chest"][3] and "transverse" in rows["axial"][3]
    one = _run("department", "--markdown").output
    assert "Otolaryngology (ENT) / Head & Neck Surgery" in one and "CT" not in one


def test_rich_listing_runs():
    res = _run("modality")
    assert res.exit_code == 0 and "computed" in res.output and "endoscopy" in res.output
    res = _run("--formats", "--format", "csv_labels")
    assert res.exit_code == 0 and "modality_column" in res.output and "split_dirs" not in res.output


def test_option_rows_come_from_the_models():
    rows = option_rows()
    by_scope: dict[str, dict[str, object]] = {}
    for r in rows:
        by_scope.setdefault(r.scope, {})[r.name] = r
    assert sorted(s for s in by_scope if s != "image") == SOURCES.names()
    for fmt in SOURCES.names():
        fields = SOURCES.get(fmt).Options.model_fields
        assert list(by_scope[fmt]) == list(fields), fmt
        for name, f in fields.items():
            assert json.loads(by_scope[fmt][name].default) == f.get_default(call_default_factory=True)
    assert set(by_scope["image"]) == set(ImageConfig.model_fields) >= {"min_side", "max_side"}
    assert by_scope["image"]["min_side"].default == "32"
    assert by_scope["csv_labels"]["separator"].type == "str | null"
    assert by_scope["csv_labels"]["separator"].default == '"|"'
    assert by_scope["image_folder"]["class_modality"].description
    md = _run("--formats", "--markdown").output
    table = {(r[0], r[1]): r for r in _md_rows(md)[1:]}
    assert table[("csv_labels", "separator")][3] == '"|"'  # the escaped pipe survives the table
    assert len(table) == len(rows)


def test_unknown_format_is_a_one_line_error():
    res = CliRunner().invoke(cli, ["taxonomy", "--formats", "--format", "nifti"])
    assert res.exit_code == 2 and "'nifti' is not a source format; allowed: coco" in res.output
    assert "Traceback" not in res.output


def test_readme_options_table_covers_every_option():
    """The README's format-options table (pasted from `medvl taxonomy --formats --markdown`) must list every
    option of every registered format and the image keys, with the model's default."""
    text = README.read_text(encoding="utf-8")
    table = {(r[0], r[1]): r for r in _md_rows(text) if len(r) == 5}
    missing, stale = [], []
    for r in option_rows():
        row = table.get((r.scope, r.name))
        if row is None:
            missing.append(f"{r.scope}.{r.name}")
        elif row[3] != r.default:
            stale.append(f"{r.scope}.{r.name}: README {row[3]}, code {r.default}")
    assert not missing, f"README lacks options: {', '.join(missing)} (paste `medvl taxonomy --formats --markdown`)"
    assert not stale, "README defaults differ from the code: " + "; ".join(stale)


@pytest.mark.parametrize("kind", ["modality", "department", "clinical_task", "body_region", "view"])
def test_vocabulary_entries(kind):
    entries = vocabulary(kind)
    assert entries and all(e["key"] and e["en"] and e["zh"] for e in entries)
    with pytest.raises(KeyError, match="allowed: modality"):
        vocabulary("organ")
