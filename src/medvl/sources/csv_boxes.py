"""Detection boxes from a CSV table, one row per box, e.g. NIH ChestX-ray14 ``BBox_List_2017.csv``.

The NIH header is literally ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` so the columns come out as
"Image Index", "Finding Label", "Bbox [x", "y", "w", "h]" plus empty-named trailing columns; those are
the defaults. Other tables: set ``image_column``, ``label_column``, ``box_columns`` and ``box_format``
(``xywh`` or ``xyxy``, pixels). Rows are grouped by image (one unit per image, boxes in the payload);
validation is the same as for COCO (bad box -> Reject ``file#row<n>``, image kept with its good boxes).

NIH file names start with the patient number (``00013118_008.png``): ``patient_pattern: '^(\\d+)_'``
recovers it so patient-level splits stay correct."""

from __future__ import annotations

import math
import re
from typing import Any, Iterator, Literal

from pydantic import Field, field_validator

from medvl.core.patterns import one_group_pattern
from medvl.core.records import Reject
from medvl.io.raster import RasterReadError, read_raster
from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit
from medvl.sources.coco import boxes_item
from medvl.sources.csv_labels import ImageResolver, TableError, column_index, read_table


class CsvBoxesOptions(SourceOptions):
    """Options of the ``csv_boxes`` source (defaults follow NIH ``BBox_List_2017.csv``)."""

    csv: str = Field("BBox_List_2017.csv", description="the box table, relative to the source path")
    image_column: str = Field("Image Index", description="column with the image file name or relative path")
    label_column: str = Field("Finding Label", description="column with the box's label")
    box_columns: list[str] = Field(["Bbox [x", "y", "w", "h]"], description="the four box columns (NIH's header "
                                   "'Bbox [x,y,w,h]' splits into these names)")
    box_format: Literal["xywh", "xyxy"] = Field("xywh", description="x, y, width, height or x1, y1, x2, y2 (pixels)")
    images_dir: str = Field("", description="folder of the images, relative to the source path")
    search_subdirs: bool = Field(False, description="look bare file names up in every subfolder of images_dir "
                                 "(NIH images_00N/images/)")
    delimiter: str | None = Field(None, description="cell delimiter; null = tab for .tsv/.tab files, else comma")
    patient_pattern: str | None = Field(None, description="regex with one group taking the patient id from the "
                                        "image file name (the recipe-level patient_pattern does the same on the path)")

    @field_validator("box_columns")
    @classmethod
    def _four(cls, v: list[str]) -> list[str]:
        if len(v) != 4:
            raise ValueError(f"expected 4 column names (x, y, w, h or x1, y1, x2, y2), got {len(v)}")
        return v

    @field_validator("patient_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        return one_group_pattern(v)


@SOURCES.register("csv_boxes")
class CsvBoxesSource(Source):
    """One unit per image named in the table; regions = its valid boxes."""

    task = "det"
    Options = CsvBoxesOptions
    opts: CsvBoxesOptions

    def units(self) -> Iterator[Unit | Reject]:
        table = self.opts.csv
        try:
            header, rows = read_table(self.root / table, self.opts.delimiter)
            i_img = column_index(header, self.opts.image_column, table)
            i_lab = column_index(header, self.opts.label_column, table)
            i_box = [column_index(header, c, table) for c in self.opts.box_columns]
        except TableError as e:
            yield self.reject(table, str(e))
            return
        resolver = ImageResolver(self, self.opts.images_dir, self.opts.search_subdirs)
        needed = max(i_img, i_lab, *i_box)
        groups: dict[str, list[dict[str, Any]]] = {}
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
            label = cells[i_lab].strip()
            label = self.cfg.label_map.get(label, label)
            try:
                vals = [float(cells[i]) for i in i_box]
            except ValueError:
                groups.setdefault(key, []).append(
                    {"n": line, "problem": f"box values {[cells[i] for i in i_box]} are not numbers"})
                continue
            if not label:
                groups.setdefault(key, []).append({"n": line, "problem": "empty label"})
                continue
            if not all(math.isfinite(v) for v in vals):
                groups.setdefault(key, []).append({"n": line, "problem": f"box values {vals} are not finite"})
                continue
            if self.opts.box_format == "xywh":
                x, y, w, h = vals
                vals = [x, y, x + w, y + h]
            groups.setdefault(key, []).append({"n": line, "label": label, "xyxy": vals})
        pattern = re.compile(self.opts.patient_pattern) if self.opts.patient_pattern else None
        for key in sorted(groups):
            patient = None
            if pattern is not None:
                m = pattern.search(key.rsplit("/", 1)[-1])
                patient = m.group(1) if m else None
            yield Unit(key=key, payload={"boxes": groups[key], "patient": patient})

    def load(self, unit: Unit) -> Iterator[Item | Reject]:
        key = unit.key
        try:
            array = read_raster(self.root / key)
        except RasterReadError as e:
            yield self.reject(key, f"{key}: {e.problem}")
            return
        for out in boxes_item(self, key, array, list(unit.payload["boxes"]), tag="row"):
            if isinstance(out, Item):
                out.patient_raw = unit.payload.get("patient")
            yield out
