"""Classification labels from a CSV/TSV table, e.g. NIH ChestX-ray14 ``Data_Entry_2017.csv``.

NIH layout (the defaults): columns ``Image Index`` (file name), ``Finding Labels`` (labels joined by "|",
"No Finding" for normal images), ``Patient ID``, ``View Position`` (PA/AP), plus age, gender, follow-up
and original size/spacing columns; images sit in ``images/`` or ``images_00N/images/`` (set
``search_subdirs: true`` to index every file name under ``images_dir`` once).

Rows are checked in ``units()``: a path that escapes the dataset folder, a missing or ambiguous file, a
malformed or duplicate row, an empty label -> a Reject naming the CSV row and the file. The helpers
``read_table`` and ``ImageResolver`` are shared with ``csv_boxes``.

Modality: the recipe's ``modality`` for the whole table, or ``options.modality_column`` per row (values
normalized by the taxonomy: names, synonyms, DICOM codes; a row with an empty or unknown value is rejected
with a reason naming the row and the value). The two are exclusive."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import ClassVar, Iterator

from pydantic import Field, model_validator

from medvl.core.records import Reject
from medvl.io.raster import RasterReadError, is_probably_image, read_raster
from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit

# words that mark a column as identifying; such columns may never be copied into Item.extra
_IDENTIFYING_WORDS = {"id", "ids", "name", "names", "surname", "forename", "initials", "birth", "birthdate", "dob",
                      "date", "dates", "time", "accession", "mrn", "address", "phone", "ssn", "physician", "doctor",
                      "institution", "hospital", "clinic", "email", "study", "series", "uid", "operator",
                      "station", "serial", "zip", "postcode"}


class TableError(ValueError):
    """A CSV/TSV table that cannot be read; the message names the file and the problem."""


def _lines(path: Path, block: int = 1 << 20) -> Iterator[str]:
    """The lines of a UTF-8 text file (BOM dropped), split exactly as ``str.splitlines()`` splits the whole
    text, read a block at a time."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        carry = ""
        while True:
            chunk = f.read(block)
            if not chunk:
                break
            parts = (carry + chunk).splitlines(keepends=True)
            # the last part may go on in the next block (no line break yet, or a "\r" a "\n" may follow)
            carry = parts.pop() if parts and (parts[-1].splitlines()[0] == parts[-1] or parts[-1].endswith("\r")) else ""
            for line in parts:
                yield line.splitlines()[0]
        if carry:
            yield from carry.splitlines()


def read_table(path: Path, delimiter: str | None = None) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """Read a delimited text table -> (header, iterator of (row number, cells)). ``delimiter`` None = tab for
    .tsv/.tab files, else comma. Header cells are stripped; blank rows are skipped. The file is checked
    whole first (encoding and quoting: a TableError before any row), then streamed, so a table of millions
    of rows is never held in memory."""
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","

    def rows() -> Iterator[tuple[int, list[str]]]:
        for i, r in enumerate(csv.reader(_lines(path), delimiter=delimiter)):
            if any(c.strip() for c in r):
                yield i + 1, r

    header: list[str] | None = None
    try:
        for _, r in rows():  # the checking pass: reads every row, keeps none
            if header is None:
                header = r
    except FileNotFoundError:
        raise TableError(f"{path.name}: table file not found") from None
    except UnicodeDecodeError as e:
        raise TableError(f"{path.name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise TableError(f"{path.name}: not a valid delimited table ({e})") from None
    except OSError as e:
        raise TableError(f"{path.name}: cannot read ({e.strerror})") from None
    if header is None:
        raise TableError(f"{path.name}: empty table (no header)")
    body = rows()
    next(body)  # the header
    return [h.strip() for h in header], body


def column_index(header: list[str], name: str, table: str) -> int:
    """Index of column ``name``; TableError listing the available columns when absent."""
    if name not in header:
        shown = ", ".join(repr(h) for h in header if h)
        raise TableError(f"{table}: no column {name!r}; columns are {shown}")
    return header.index(name)


class ImageResolver:
    """Turns a table cell into a file path relative to the dataset root, refusing paths that escape it.
    With ``search_subdirs`` a bare file name is looked up in an index of every file under ``images_dir``
    (built once; a name found in several places is ambiguous)."""

    def __init__(self, source: Source, images_dir: str, search_subdirs: bool):
        self.source = source
        self.base = source.root / images_dir
        # file name -> its path relative to the root, or the sorted list of its paths when found in several
        # places; plain strings, walked with os.walk (Path.rglob keeps every path it yielded in a set)
        self.index: dict[str, str | list[str]] | None = None
        if search_subdirs and self.base.is_dir() and source.inside_root(self.base):
            self.index = {}
            root = str(source.root)
            for folder, dirs, files in os.walk(self.base):  # symlinked folders are not entered, as rglob
                dirs.sort()
                rel = os.path.relpath(folder, root).replace(os.sep, "/")
                for name in sorted(files):
                    if is_probably_image(name) and os.path.isfile(os.path.join(folder, name)):
                        path = name if rel == "." else f"{rel}/{name}"
                        had = self.index.get(name)
                        self.index[name] = path if had is None else sorted(
                            [*(had if isinstance(had, list) else [had]), path], key=lambda x: x.split("/"))

    def resolve(self, cell: str) -> tuple[str | None, str | None]:
        """-> (path relative to root, None) or (None, problem)."""
        cell = cell.strip()
        if not cell:
            return None, "empty image path"
        direct = self.base / cell
        if not self.source.inside_root(direct):
            return None, f"image {cell!r}: path escapes the dataset folder"
        if direct.is_file():
            return direct.resolve().relative_to(self.source.root.resolve()).as_posix(), None
        if self.index is not None and "/" not in cell and "\\" not in cell:
            found = self.index.get(cell)
            hits = [] if found is None else [found] if isinstance(found, str) else found
            if len(hits) == 1:
                return hits[0], None
            if len(hits) > 1:
                return None, f"image {cell!r}: ambiguous, found in {len(hits)} places ({', '.join(hits[:3])})"
        return None, f"image {cell!r}: file not found"


class CsvLabelsOptions(SourceOptions):
    """Options of the ``csv_labels`` source (defaults follow NIH ``Data_Entry_2017.csv``)."""

    modality_options: ClassVar[tuple[str, ...]] = ("modality_column",)  # exclusive with the recipe's `modality`

    csv: str = Field("Data_Entry_2017.csv", description="the table, relative to the source path (.tsv/.tab = tabs)")
    image_column: str = Field("Image Index", description="column with the image file name or relative path")
    label_column: str = Field("Finding Labels", description="column with the label(s)")
    separator: str | None = Field("|", description="separator of several labels in one cell; null = one label "
                                  "per row (a single-label table: its labels count as exhaustive)")
    patient_column: str | None = Field("Patient ID", description="column with the patient id (hashed, never "
                                       "stored); null = none")
    view_column: str | None = Field("View Position", description="column with the view (PA, AP, ...); null = none")
    modality_column: str | None = Field(None, description="column with each image's modality (names, synonyms or "
                                        "DICOM codes: 'CR', 'MRI', 'endoscopy'); a row with an unknown or empty "
                                        "value is rejected; exclusive with the source's `modality`")
    images_dir: str = Field("", description="folder of the images, relative to the source path")
    search_subdirs: bool = Field(False, description="look bare file names up in every subfolder of images_dir "
                                 "(NIH images_00N/images/)")
    delimiter: str | None = Field(None, description="cell delimiter; null = tab for .tsv/.tab files, else comma")
    no_finding_label: str | None = Field("No Finding", description="raw value meaning 'no finding'; kept as its "
                                         "own label, never combined with a finding in one row")
    keep_no_finding: bool = Field(True, description="false: rows labelled only no_finding_label become rejects "
                                  "(stage filter)")
    extra_columns: list[str] = Field([], description="non-identifying columns copied into the record's extra")

    @model_validator(mode="after")
    def _no_identifiers(self) -> "CsvLabelsOptions":
        for col in self.extra_columns:
            # split on punctuation and on camelCase ("PatientBirthDate" -> patient, birth, date)
            spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", col)
            words = set(re.split(r"[^a-z0-9]+", spaced.lower()))
            if col == self.patient_column or words & _IDENTIFYING_WORDS:
                raise ValueError(f"extra_columns: {col!r} looks like an identifier and may not be copied")
        return self


@SOURCES.register("csv_labels")
class CsvLabelsSource(Source):
    """One unit per table row (= one image); labels from the label column."""

    task = "cls"
    Options = CsvLabelsOptions
    opts: CsvLabelsOptions

    def labels_exhaustive(self) -> bool:
        return self.opts.separator is None  # single-label tables; multi-label ones only if the recipe says so

    def _optional_column(self, header: list[str], field: str, table: str) -> int | None:
        """Index of an optional column; a default-named column may be absent, an explicitly set one not."""
        name = getattr(self.opts, field)
        if name is None:
            return None
        if name not in header and field not in self.opts.model_fields_set:
            return None
        return column_index(header, name, table)

    def _labels(self, cell: str) -> list[str]:
        sep = self.opts.separator
        raw = [cell] if sep is None else cell.split(sep)
        names = {self.cfg.label_map.get(s.strip(), s.strip()) for s in raw if s.strip()}
        return sorted(names)

    def units(self) -> Iterator[Unit | Reject]:
        table = self.opts.csv
        try:
            header, rows = read_table(self.root / table, self.opts.delimiter)
            i_img = column_index(header, self.opts.image_column, table)
            i_lab = column_index(header, self.opts.label_column, table)
            i_pat = self._optional_column(header, "patient_column", table)
            i_view = self._optional_column(header, "view_column", table)
            i_mod = self._optional_column(header, "modality_column", table)
            i_extra = {c: column_index(header, c, table) for c in self.opts.extra_columns}
        except TableError as e:
            yield self.reject(table, str(e))
            return
        resolver = ImageResolver(self, self.opts.images_dir, self.opts.search_subdirs)
        no_finding = self.opts.no_finding_label
        no_finding_name = self.cfg.label_map.get(no_finding, no_finding) if no_finding else None
        needed = max([i_img, i_lab, *(i for i in (i_pat, i_view, i_mod) if i is not None), *i_extra.values()])
        seen: dict[str, int] = {}
        for line, cells in rows:
            where = f"{table}#row{line}"
            if len(cells) <= needed:
                yield self.reject(where, f"{table} row {line}: expected at least {needed + 1} columns, "
                                         f"got {len(cells)}", stage="validate")
                continue
            key, problem = resolver.resolve(cells[i_img])
            if key is None:
                yield self.reject(where, f"{table} row {line}: {problem}")
                continue
            if key in seen:
                yield self.reject(where, f"{table} row {line}: {key} already listed in row {seen[key]}",
                                  stage="validate")
                continue
            seen[key] = line
            modality = None
            if i_mod is not None:
                modality, problem = _row_modality(cells[i_mod], self.opts.modality_column)
                if modality is None:
                    yield self.reject(where, f"{table} row {line}: {key}: {problem}", stage="validate")
                    continue
            labels = self._labels(cells[i_lab])
            if not labels:
                yield self.reject(where, f"{table} row {line}: {key} has an empty label", stage="validate")
                continue
            if no_finding_name and no_finding_name in labels and len(labels) > 1:
                yield self.reject(where, f"{table} row {line}: {key} is labelled both {no_finding!r} and "
                                         f"{', '.join(x for x in labels if x != no_finding_name)}", stage="validate")
                continue
            if no_finding_name and labels == [no_finding_name] and not self.opts.keep_no_finding:
                yield self.reject(where, f"{table} row {line}: {key} has no finding "
                                         "(options.keep_no_finding is false)", stage="filter")
                continue
            yield Unit(key=key, payload={
                "labels": labels,
                "patient": cells[i_pat].strip() or None if i_pat is not None else None,
                "view": cells[i_view].strip() or None if i_view is not None else None,
                "extra": {c: cells[i].strip() for c, i in i_extra.items()},
                "row": line,
                "modality": modality,
            })

    def load(self, unit: Unit) -> Iterator[Item | Reject]:
        try:
            array = read_raster(self.root / unit.key)
        except RasterReadError as e:
            yield self.reject(unit.key, f"{unit.key}: {e.problem}")
            return
        p = unit.payload
        yield Item(array=array, source_file=unit.key, patient_raw=p["patient"], labels=list(p["labels"]),
                   view=p["view"], extra=dict(p["extra"]), modality=p.get("modality"))


def _row_modality(cell: str, column: str | None) -> tuple[str | None, str]:
    """A row's modality cell -> (canonical taxonomy key, "") or (None, the problem)."""
    from medvl.taxonomy import MODALITIES, normalize_modality

    value = cell.strip()
    if not value:
        return None, f"empty modality in column {column!r}"
    canon = normalize_modality(value)
    if canon is None:
        return None, (f"modality {value!r} in column {column!r} is not a known modality; "
                      f"allowed: {', '.join(MODALITIES)}")
    return canon, ""
