"""Classification images sorted into one folder per class (Kvasir, CRC-100K, many Kaggle sets).

Layouts: ``root/<class>/<image>`` or ``root/<split>/<class>/<image>`` when a top-level folder is named in
``options.split_dirs`` (its name goes to ``Item.extra["source_split"]``). Images nested deeper inside a
class folder keep that class. The label is the class folder name, renamed by the recipe's ``label_map``.

Nothing is dropped silently: every file found is either a unit or a Reject. Non-image files (README.txt,
a .csv, Thumbs.db) -> "not an image file"; hidden files (.DS_Store, ._x.jpg) -> "hidden file"; a hidden
folder (.git, .ipynb_checkpoints) -> one Reject that says how many files it holds; files directly under
the root or a split folder -> "not inside a class folder"; classes in ``exclude_classes`` -> one Reject
(stage "filter") per file. Order is sorted, so runs are deterministic."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from medvl.core.records import Reject
from medvl.io.raster import RasterReadError, is_probably_image, read_raster
from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit


class ImageFolderOptions(SourceOptions):
    """Options of the ``image_folder`` source."""

    split_dirs: list[str] = ["train", "val", "valid", "validation", "test"]
    exclude_classes: list[str] = []  # raw folder names or label_map display names


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
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and entry.name.lower() in splits and not entry.name.startswith("."):
                yield from self._class_level(entry, split=entry.name)
            else:
                yield from self._class_entry(entry, split=None)

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
        yield from self._walk_class(entry, label, cls_name, split, excluded)

    def _walk_class(self, folder: Path, label: str, cls_name: str, split: str | None,
                    excluded: bool) -> Iterator[Unit | Reject]:
        for entry in sorted(folder.iterdir()):
            rel = self._relname(entry)
            if entry.name.startswith("."):
                yield from self._hidden(entry)
            elif not self.inside_root(entry):
                yield self.reject(rel, f"{rel}: path escapes the dataset folder (symlink)")
            elif entry.is_dir() and entry.is_symlink():  # would loop or read the same images under another class
                yield self.reject(rel, f"{rel}: symlinked folder not followed (it may loop or repeat images "
                                       f"under another class)")
            elif entry.is_dir():
                yield from self._walk_class(entry, label, cls_name, split, excluded)
            elif not is_probably_image(entry):
                suffix = entry.suffix or "(no extension)"
                yield self.reject(rel, f"{rel}: not an image file ({suffix})")
            elif excluded:
                yield self.reject(rel, f"{rel}: class {cls_name!r} excluded by options.exclude_classes",
                                  stage="filter")
            else:
                yield Unit(key=rel, payload={"label": label, "split": split})

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
        yield Item(array=array, source_file=unit.key, labels=[unit.payload["label"]], extra=extra)
