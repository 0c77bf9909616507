"""What an export is, and the view of samples every export shares.

An export is a callable registered in ``EXPORTS`` by name::

    @EXPORTS.register("llava")
    def export_llava(corpus, out_dir, recipe=None, *, options=None, entries=None) -> list[ManifestEntry]

``corpus`` is a :class:`Corpus`: the build's splits and, per split, its samples as :class:`View` objects
streamed in sample-id order (a build streams them from its shards on disk, so an export never holds a
split in memory); ``options`` is that export's own option dict; ``entries`` the manifest entries written
so far (the card uses them). Adding an output format is one new module in ``medvl/export/``.

Image placeholders: sample turns hold plain text. Exports put one ``<image>`` per image at the start of the
first user turn (``"<image>\\n<image>\\n..."``); any ``<image>`` already in the text is removed first, so the
count always equals the number of images. Image paths stay relative to the output folder."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from medvl.core.records import ImageRecord, Reject, Sample
from medvl.core.registry import Registry
from medvl.export.manifest import ManifestEntry

ExportFn = Callable[..., list[ManifestEntry]]
EXPORTS: Registry[ExportFn] = Registry("export", "medvl.export")

IMAGE_TOKEN = "<image>"
ROLES = ("system", "user", "assistant")
SPLIT_ORDER = ("train", "val", "test")
META_KEYS = ("modality", "department", "clinical_task", "dataset")
_TOKEN_RE = re.compile(r"[ \t]*<image>[ \t]*\n?")


@dataclass
class View:
    """One sample as exports see it: split, turns with image placeholders, image sizes and metadata."""

    sample: Sample
    split: str
    turns: list[tuple[str, str]]  # (role, text); the first user turn starts with one <image> per image
    images: list[str]
    sizes: list[tuple[int, int]]  # (width, height) per image
    meta: dict[str, Any] = field(default_factory=dict)  # modality, department, clinical_task, dataset, record_id


class SampleError(ValueError):
    """A sample that cannot be exported (bad roles, no user turn for its image, unknown image)."""


def split_sort_key(name: str) -> tuple[int, str]:
    """train, val, test first, then other split names alphabetically."""
    return (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER), name)


def with_placeholders(turns: list[tuple[str, str]], n_images: int, sample_id: str) -> list[tuple[str, str]]:
    """Turns with ``<image>`` removed from the text and re-inserted once per image in the first user turn."""
    clean = [(role, _TOKEN_RE.sub("", text) if IMAGE_TOKEN in text else text) for role, text in turns]
    if n_images == 0:
        return clean
    for i, (role, text) in enumerate(clean):
        if role == "user":
            clean[i] = (role, (IMAGE_TOKEN + "\n") * n_images + text)
            return clean
    raise SampleError(f"sample {sample_id}: has {n_images} image(s) but no user turn to place <image> in")


def image_size(out_dir: Path, rel: str) -> tuple[int, int]:
    """(width, height) of an image under ``out_dir``, read from the file header."""
    from PIL import Image

    with Image.open(out_dir / rel) as im:
        return im.size


def build_views(records: Iterable[ImageRecord], samples: Iterable[Sample], out_dir: Path,
                ) -> tuple[dict[str, list[View]], list[str]]:
    """Group samples by split (splits in :func:`split_sort_key` order, samples sorted by id).

    Returns the views and the reasons for samples that had to be skipped (named by id)."""
    rec_by_id: dict[str, ImageRecord] = {}
    sizes: dict[str, tuple[int, int]] = {}
    rec_by_image: dict[str, ImageRecord] = {}
    for r in records:
        rec_by_id.setdefault(r.id, r)
        sizes.setdefault(r.image, (int(r.width), int(r.height)))
        rec_by_image.setdefault(r.image, r)
    groups: dict[str, list[View]] = defaultdict(list)
    skipped: list[str] = []
    order = lambda s: (s.id, s.kind, s.lang, tuple(s.images), tuple((t.role, t.text) for t in s.turns))  # noqa: E731
    for s in sorted(samples, key=order):
        try:
            groups_key, view = _view(s, rec_by_id, rec_by_image, sizes, out_dir)
        except SampleError as e:
            skipped.append(str(e))
            continue
        groups[groups_key].append(view)
    return {k: groups[k] for k in sorted(groups, key=split_sort_key)}, skipped


def _view(s: Sample, rec_by_id: dict[str, ImageRecord], rec_by_image: dict[str, ImageRecord],
          sizes: dict[str, tuple[int, int]], out_dir: Path) -> tuple[str, View]:
    turns: list[tuple[str, str]] = []
    for t in s.turns:
        if t.role not in ROLES:
            raise SampleError(f"sample {s.id}: turn role {t.role!r} is not one of {', '.join(ROLES)}")
        turns.append((t.role, str(t.text)))
    if not any(r == "assistant" for r, _ in turns):
        raise SampleError(f"sample {s.id}: has no assistant turn")
    rec = rec_by_id.get(s.record_id or "") or (rec_by_image.get(s.images[0]) if s.images else None)
    if rec is not None and rec.extra.get("image_sizes"):  # a multi-image record lists every image's size
        for p, (w, h) in zip(rec.extra.get("images") or [], rec.extra["image_sizes"]):
            sizes.setdefault(p, (int(w), int(h)))
    dims: list[tuple[int, int]] = []
    for p in s.images:
        if p.startswith("/") or ".." in p.split("/"):
            raise SampleError(f"sample {s.id}: image path {p!r} must be relative to the output folder")
        if p not in sizes:
            try:
                sizes[p] = image_size(out_dir, p)
            except OSError as e:
                raise SampleError(f"sample {s.id}: cannot read image {p} ({e})") from None
        dims.append(sizes[p])
    meta: dict[str, Any] = {}
    for k in META_KEYS:
        v = getattr(rec, k, None) if rec is not None else None
        meta[k] = v if v is not None else s.meta.get(k)
    meta["record_id"] = s.record_id or (rec.id if rec is not None else None)
    split = s.split or (rec.split if rec is not None else None) or "all"
    return split, View(sample=s, split=split, turns=with_placeholders(turns, len(s.images), s.id),
                       images=list(s.images), sizes=dims, meta=meta)


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text with "\\n" newlines through a temporary file, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    tmp.replace(path)


class TextWriter:
    """A UTF-8 text file written piece by piece through a temporary name and renamed into place on a clean
    exit (a crash or an error never leaves half a file under the real name). ``enabled=False`` writes nothing."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled
        self._f: Any = None

    def __enter__(self) -> "TextWriter":
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self.path.with_name(self.path.name + ".tmp")
            self._f = open(self._tmp, "w", encoding="utf-8", newline="\n")
        return self

    def write(self, text: str) -> None:
        if self._f is not None:
            self._f.write(text)

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self._f is None:
            return
        self._f.close()
        if exc_type is None:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes through a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def clear_outputs(folder: Path, patterns: Iterable[str]) -> None:
    """Remove this export's files from an earlier run (only files matching ``patterns``) so stale splits vanish."""
    if not folder.is_dir():
        return
    for pat in patterns:
        for p in sorted(folder.glob(pat)):
            if p.is_file():
                p.unlink()


def clear_split_outputs(folder: Path, split: str, suffix: str) -> None:
    """Remove one split's files from an earlier (or interrupted) run: names that are ``split`` followed by the
    regular expression ``suffix`` (e.g. ``-\\d{6,}\\.tar``), so another split's files, even of a split named
    ``train-1`` beside ``train``, are never touched while that split is being written."""
    if not folder.is_dir():
        return
    pattern = re.compile(re.escape(split) + suffix)
    for p in sorted(folder.iterdir()):
        if pattern.fullmatch(p.name) and p.is_file():
            p.unlink()


def dumps(obj: Any) -> str:
    """Compact, deterministic JSON for one row (keys in insertion order, non-ASCII kept)."""
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


def check_options(export: str, options: dict[str, Any] | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``options``; an unknown key is an error naming the export and the allowed keys."""
    out = dict(defaults)
    for k, v in (options or {}).items():
        if k not in defaults:
            raise ValueError(f"export {export!r}: unknown option {k!r}; allowed: {', '.join(sorted(defaults))}")
        out[k] = v
    return out


def distinct_images(views: Iterable[View]) -> int:
    return len({p for v in views for p in v.images})


def skipped_extra(skipped: list[str]) -> dict[str, Any]:
    """Manifest ``extra`` describing skipped samples (count and the first few reasons)."""
    return {"skipped": len(skipped), "skipped_examples": skipped[:5]} if skipped else {}


class Corpus:
    """What exports read: the splits, each split's views in sample-id order, counts, and the build's
    records, samples and rejects as iterators. Every method may be called any number of times."""

    skipped: list[str]  # samples that could not be exported, each named by id with the reason

    def splits(self) -> list[str]:
        """Split names that have samples, in :func:`split_sort_key` order."""
        raise NotImplementedError

    def views(self, split: str) -> Iterator[View]:
        raise NotImplementedError

    def count(self, split: str) -> int:
        raise NotImplementedError

    def images(self, split: str) -> int:
        """Distinct images the split's samples reference."""
        raise NotImplementedError

    def n_images(self) -> int:
        """Distinct images over records and samples."""
        raise NotImplementedError

    def records(self) -> Iterator[ImageRecord]:
        raise NotImplementedError

    def samples(self) -> Iterator[Sample]:
        raise NotImplementedError

    def rejects(self) -> Iterator[Reject] | None:
        """The build's rejects, or None when unknown (the card then reads ``rejects.jsonl``)."""
        return None


class MemoryCorpus(Corpus):
    """A corpus from lists in memory (tests, ``medvl bench-build``, small tools)."""

    def __init__(self, records: Iterable[ImageRecord], samples: Iterable[Sample], out_dir: Path,
                 rejects: Iterable[Reject] | None = None) -> None:
        self._records, self._samples = list(records), list(samples)
        self._rejects = list(rejects) if rejects is not None else None
        self._views, self.skipped = build_views(self._records, self._samples, Path(out_dir))

    def splits(self) -> list[str]:
        return list(self._views)

    def views(self, split: str) -> Iterator[View]:
        return iter(self._views.get(split, []))

    def count(self, split: str) -> int:
        return len(self._views.get(split, []))

    def images(self, split: str) -> int:
        return distinct_images(self._views.get(split, []))

    def n_images(self) -> int:
        return len({r.image for r in self._records} | {p for s in self._samples for p in s.images})

    def records(self) -> Iterator[ImageRecord]:
        return iter(self._records)

    def samples(self) -> Iterator[Sample]:
        return iter(self._samples)

    def rejects(self) -> Iterator[Reject] | None:
        return None if self._rejects is None else iter(self._rejects)


def run_exports(names: Iterable[str], records: Iterable[ImageRecord] | Corpus, samples: Iterable[Sample] = (),
                out_dir: str | Path = ".", recipe: Any = None, rejects: Iterable[Reject] | None = None,
                options: dict[str, dict[str, Any]] | None = None) -> list[ManifestEntry]:
    """Run the named exports (the card last, so it can describe the others) and return all manifest entries.

    ``records`` is a :class:`Corpus`, or a list of records with ``samples`` (and optionally ``rejects``)
    beside it. ``options`` maps export name -> option dict; when absent, ``recipe.export_options`` is used if
    the recipe has it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = records if isinstance(records, Corpus) else MemoryCorpus(records, samples, out_dir, rejects)
    if options is None:
        options = dict(getattr(recipe, "export_options", None) or {})
    ordered = sorted(dict.fromkeys(names), key=lambda n: (n == "card", 0))
    entries: list[ManifestEntry] = []
    for name in ordered:
        fn = EXPORTS.get(name)
        entries += fn(corpus, out_dir, recipe, options=dict(options.get(name) or {}), entries=list(entries))
    return entries
