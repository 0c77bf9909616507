"""Classification images sorted into one folder per class (Kvasir, CRC-100K, many Kaggle sets).

Layouts: ``root/<class>/<image>`` or ``root/<split>/<class>/<image>`` when a top-level folder is named in
``options.split_dirs`` (its name goes to ``Item.extra["source_split"]``). Images nested deeper inside a
class folder keep that class. The label is the class folder name, renamed by the recipe's ``label_map``.

Nothing is dropped silently: every file found is either a unit or a Reject. Non-image files (README.txt,
a .csv, Thumbs.db) -> "not an image file"; hidden files (.DS_Store, ._x.jpg) -> "hidden file"; a hidden
folder (.git, .ipynb_checkpoints) -> one Reject that says how many files it holds; files directly under
the root or a split folder -> "not inside a class folder"; classes in ``exclude_classes`` -> one Reject
(stage "filter") per file. Order is sorted, so runs are deterministic.

Modality: the recipe's ``modality`` for the whole folder, or, for folders that mix modalities (Kvasir-style
sets with endoscopy and pathology classes), ``options.class_modality`` per class (the two are exclusive;
``Item.modality`` carries the class's modality, normalized by the taxonomy). With ``class_modality`` set, a
class it does not list is rejected file by file, and a listed name that matches no class folder is a note."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Iterator

from pydantic import Field, field_validator

from medvl.core.records import Reject
from medvl.io.raster import RasterReadError, is_probably_image, read_raster
from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit


class ImageFolderOptions(SourceOptions):
    """Options of the ``image_folder`` source."""

    modality_options: ClassVar[tuple[str, ...]] = ("class_modality",)  # exclusive with the recipe's `modality`

    split_dirs: list[str] = Field(["train", "val", "valid", "validation", "test"],
                                  description="top-level folders read as split folders (root/<split>/<class>/...)")
    exclude_classes: list[str] = Field([], description="classes to skip (raw folder names or label_map names); "
                                       "their files are listed as rejects")
    class_modality: dict[str, str] = Field(
        {}, description="modality per class (raw folder name or label_map name -> modality), for folders that mix "
        "modalities; every class must be listed; exclusive with the source's `modality`")

    @field_validator("class_modality")
    @classmethod
    def _modalities(cls, v: dict[str, str]) -> dict[str, str]:
        from medvl.taxonomy import MODALITIES, normalize_modality

        out = {}
        for folder, name in v.items():
            canon = normalize_modality(name)
            if canon is None:
                raise ValueError(f"class_modality[{folder!r}]: {name!r} is not a known modality; "
                                 f"allowed: {', '.join(MODALITIES)}")
            out[folder] = canon
        return out


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


@SOURCES.register("image_folder")
class ImageFolderSource(Source):
    """One image per unit; label = class folder name."""

    task = "cls"
    Options = ImageFolderOptions

    def labels_exhaustive(self) -> bool:
        return True  # one class folder per image: the other classes are absent
    opts: ImageFolderOptions

    def _label(self, folder_name: str) -> str:
        return self.cfg.label_map.get(folder_name, folder_name)

    def units(self) -> Iterator[Unit | Reject]:
        if not self.root.is_dir():
            yield self.reject(".", f"{self.root}: dataset folder not found")
            return
        splits = {s.lower() for s in self.opts.split_dirs}
        self._mapped: set[str] = set()
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and entry.name.lower() in splits and not entry.name.startswith("."):
                yield from self._class_level(entry, split=entry.name)
            else:
                yield from self._class_entry(entry, split=None)
        unused = sorted(set(self.opts.class_modality) - self._mapped)
        if unused:
            self.notes.append(f"options.class_modality names {', '.join(map(repr, unused))}, which match no class "
                              f"folder (nor a label_map name of one)")

    def _class_level(self, folder: Path, split: str | None) -> Iterator[Unit | Reject]:
        for entry in sorted(folder.iterdir()):
            yield from self._class_entry(entry, split)

    def _class_entry(self, entry: Path, split: str | None) -> Iterator[Unit | Reject]:
        """``entry`` sits where a class folder is expected."""
        rel = self._relname(entry)
        if entry.name.startswith("."):
            yield from self._hidden(entry)
            return
        if not self.inside_root(entry):
            yield self.reject(rel, f"{rel}: path escapes the dataset folder (symlink)")
            return
        if not entry.is_dir():
            what = "image" if is_probably_image(entry) else "file"
            yield self.reject(rel, f"{rel}: {what} is not inside a class folder, so it has no label")
            return
        cls_name = entry.name
        label = self._label(cls_name)
        excluded = cls_name in self.opts.exclude_classes or label in self.opts.exclude_classes
        yield from self._walk_class(entry, label, cls_name, split, excluded, self._modality(cls_name, label))

    def _modality(self, cls_name: str, label: str) -> str | None:
        """The class's modality from ``options.class_modality`` (raw folder name first, then label name)."""
        cm = self.opts.class_modality
        for k in (cls_name, label):
            if k in cm:
                self._mapped.add(k)
                return cm[k]
        return None

    def _walk_class(self, folder: Path, label: str, cls_name: str, split: str | None,
                    excluded: bool, modality: str | None) -> Iterator[Unit | Reject]:
        """Units of a class folder already known to lie inside the root (checked by the caller), walked in name
        order. Only a symlinked entry can lead outside the root, so only symlinks are resolved (``os.scandir``
        tells them apart without a system call per file: listing 5.5M images must not cost a path resolution
        each)."""
        with os.scandir(folder) as it:
            found = sorted(it, key=lambda d: d.name)
        base = self._relname(folder)
        for d in found:
            entry, rel = folder / d.name, f"{base}/{d.name}"
            if d.name.startswith("."):
                yield from self._hidden(entry)
            elif d.is_symlink() and not self.inside_root(entry):
                yield self.reject(rel, f"{rel}: path escapes the dataset folder (symlink)")
            elif d.is_dir() and d.is_symlink():  # would loop or read the same images under another class
                yield self.reject(rel, f"{rel}: symlinked folder not followed (it may loop or repeat images "
                                       f"under another class)")
            elif d.is_dir():
                yield from self._walk_class(entry, label, cls_name, split, excluded, modality)
            elif not is_probably_image(entry):
                suffix = entry.suffix or "(no extension)"
                yield self.reject(rel, f"{rel}: not an image file ({suffix})")
            elif excluded:
                yield self.reject(rel, f"{rel}: class {cls_name!r} excluded by options.exclude_classes",
                                  stage="filter")
            elif self.opts.class_modality and modality is None:
                yield self.reject(rel, f"{rel}: class {cls_name!r} has no modality in options.class_modality "
                                       f"(listed: {', '.join(sorted(self.opts.class_modality))})")
            else:
                yield Unit(key=rel, payload={"label": label, "split": split, "modality": modality})

    def _relname(self, entry: Path) -> str:
        """Path relative to the root as listed (symlinks not resolved)."""
        return entry.relative_to(self.root).as_posix()

    def _hidden(self, entry: Path) -> Iterator[Reject]:
        rel = self._relname(entry)
        if entry.is_dir() and not entry.is_symlink():
            n = _count_files(entry)
            yield self.reject(rel, f"{rel}: hidden folder skipped ({n} file{'s' if n != 1 else ''} inside)")
        else:
            yield self.reject(rel, f"{rel}: hidden file skipped (not a dataset image)")

    def load(self, unit: Unit) -> Iterator[Item | Reject]:
        try:
            array = read_raster(self.root / unit.key)
        except RasterReadError as e:
            yield self.reject(unit.key, f"{unit.key}: {e.problem}")
            return
        extra = {"source_split": unit.payload["split"]} if unit.payload.get("split") else {}
        yield Item(array=array, source_file=unit.key, labels=[unit.payload["label"]], extra=extra,
                   modality=unit.payload.get("modality"))
