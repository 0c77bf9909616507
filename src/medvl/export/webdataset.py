"""WebDataset shards: ``webdataset/<split>-000000.tar``, ``<split>-000001.tar``, ... (plain POSIX tar, the layout
the ``webdataset`` package reads). Each sample is a group of tar members sharing one key::

    000000000_3fa2b4c5d6e7f809.json    {"id", "split", "kind", "lang", "conversations", "images", "members", ...}
    000000000_3fa2b4c5d6e7f809.png     first image (bytes of images/..../<sha256>.png, not re-encoded)
    000000000_3fa2b4c5d6e7f809.1.png   second image of a multi-image sample, then .2.png, ...

WebDataset takes everything up to the first dot of a member's basename as the key, so the key is the
sample's position in its split (9 digits) and the first 16 hex digits of the SHA-256 of its id: no dots,
slashes or ``#``, unique, and the same for the same corpus. The real id is in the JSON. The image extension
after the key is ``png`` for the first image and ``<i>.png`` for image i >= 1; ``decode("pil")`` decodes
both (it dispatches on the last extension). Text-only samples have only the JSON member.

Shards hold at most ``max_samples`` samples and at most ``max_bytes`` bytes of tar file (headers, padding
and the end-of-archive record counted; a single sample larger than ``max_bytes`` gets a shard of its own).
The tar files are written here directly, byte for byte what ``webdataset.TarWriter(user="", group="",
mode=0o444, mtime=0, encoder=False)`` writes (a test compares them): members of a sample in sorted extension
order, headers as :meth:`tarfile.TarInfo.tobuf` writes them (filled into a template of its bytes) with mtime 0,
uid/gid 0, empty user/group names and mode 0444, data padded to 512 bytes, the end-of-archive blocks and padding
to tarfile's 10240-byte record. Equal inputs give byte-identical shards, and every header is one plain ustar
block (no PAX records), so shard sizes are known before writing. Writing this way needs neither the
``webdataset`` package (whose import loads torch) nor tarfile's 16 KiB copy loop, and each shard's SHA-256 is
computed while it is written, so the manifest does not read it again. Each shard is written to ``<name>.tmp``
(through :class:`~medvl.core.writeback.WriteBehindFile`: the shards are five times the images' bytes and the
build never reads them again, so they are handed to the disk as they grow instead of filling the page cache)
and renamed. A sample whose image cannot be read, or is not a PNG/JPEG file, is skipped and listed in the
manifest entries' ``skipped`` reasons."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from medvl.core.config import StrictModel
from medvl.core.hashing import remember_digest
from medvl.core.writeback import WriteBehindFile
from medvl.export.base import (EXPORTS, View, check_options, clear_outputs, clear_split_outputs, dumps,
                               skipped_extra)
from medvl.export.manifest import ManifestEntry

FOLDER = "webdataset"
FORMAT = "webdataset-tar"
FROM = {"user": "human", "assistant": "gpt", "system": "system"}
BLOCK = 512  # tar block
RECORD = 20 * BLOCK  # tarfile pads the archive to a multiple of its record size (RECORDSIZE)
END = 2 * BLOCK  # end-of-archive marker
MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpg"}


class WebDatasetOptions(StrictModel):
    """Options of the ``webdataset`` export (recipe ``export_options: {webdataset: {...}}``)."""

    max_bytes: int = Field(1 << 30, ge=BLOCK, strict=True)  # tar file bytes per shard (1 GiB)
    max_samples: int = Field(10_000, ge=1, strict=True)  # samples per shard


DEFAULTS: dict[str, Any] = WebDatasetOptions().model_dump()


def parse_options(options: dict[str, Any] | None) -> WebDatasetOptions:
    """Typed options; an unknown key or a bad value is an error naming the key and what is allowed."""
    opts = check_options("webdataset", options, DEFAULTS)
    try:
        return WebDatasetOptions(**opts)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        raise ValueError(f"export 'webdataset': option {key}={opts.get(key)!r}: {err['msg']}") from None


def sample_key(index: int, sample_id: str) -> str:
    """The WebDataset key of the ``index``-th sample of a split: position plus an id digest, no dots."""
    return f"{index:09d}_{hashlib.sha256(sample_id.encode('utf-8')).hexdigest()[:16]}"


def member_bytes(size: int) -> int:
    """Bytes one tar member of ``size`` bytes takes: its header block plus the data padded to 512."""
    return BLOCK + -(-size // BLOCK) * BLOCK


def tar_bytes(members: int) -> int:
    """Size of a finished tar file whose members take ``members`` bytes (end marker, record padding)."""
    return -(-(members + END) // RECORD) * RECORD


def sample_json(v: View, members: list[str]) -> dict[str, Any]:
    """The JSON member of one sample (stable key order); ``members`` are the image extensions in order."""
    w, h = v.sizes[0] if v.sizes else (None, None)
    return {"id": v.sample.id, "split": v.split, "kind": v.sample.kind, "lang": v.sample.lang,
            "conversations": [{"from": FROM[r], "value": t} for r, t in v.turns],
            "images": list(v.images), "members": members, "width": w, "height": h,
            "sizes": [[int(a), int(b)] for a, b in v.sizes], "meta": dict(v.meta)}


def encode_sample(v: View, key: str, out_dir: Path, cache: dict[str, bytes]) -> dict[str, Any]:
    """The ``{"__key__", "json", "png", "1.png", ...}`` dict TarWriter writes; OSError/ValueError for a bad image."""
    obj: dict[str, Any] = {"__key__": key}
    members: list[str] = []
    for i, p in enumerate(v.images):
        if p not in cache:
            if len(cache) > 8:
                cache.clear()  # samples are sorted by id, so an image's samples are mostly adjacent
            cache[p] = (out_dir / p).read_bytes()
        data = cache[p]
        ext = next((e for m, e in MAGIC.items() if data.startswith(m)), None)
        if ext is None:
            raise ValueError(f"image {p} is not a PNG or JPEG file")
        name = ext if i == 0 else f"{i}.{ext}"
        obj[name] = data
        members.append(name)
    obj["json"] = dumps(sample_json(v, members)).encode("utf-8")
    return obj


def tobuf_header(name: str, size: int) -> bytes:
    """The header block ``tarfile`` writes for TarWriter's member ``name`` of ``size`` bytes (format PAX, which is
    one plain ustar block when nothing needs a PAX record, as with these ASCII names and integer fields)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = size, 0, 0o444, "", ""
    header = info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
    if len(header) != BLOCK:
        raise ValueError(f"tar member {name!r} needs a PAX header; WebDataset keys must be short ASCII")
    return header


_TEMPLATE = tobuf_header("", 0)  # this Python's header of an empty member; name, size and checksum vary
_SIZE, _CHKSUM = slice(124, 136), slice(148, 156)  # ustar field offsets (the name is bytes 0-99)
_TEMPLATE_SUM = sum(_TEMPLATE) - sum(_TEMPLATE[_CHKSUM]) - sum(_TEMPLATE[_SIZE]) + 8 * 32  # checksum: field as spaces
_ZEROS = bytes(BLOCK)


def member_header(name: str, size: int) -> bytes:
    """:func:`tobuf_header`'s bytes, built from a template: only the name, size and checksum fields differ between
    members (12,000 headers cost 0.5 s through ``TarInfo.tobuf``). Names that are not short ASCII, and sizes
    beyond the 11 octal digits of a plain header, take ``tobuf`` itself (and its error)."""
    raw = name.encode("ascii", "surrogateescape") if name.isascii() else b""
    if not raw or len(raw) > 100 or size >= 8 ** 11:
        return tobuf_header(name, size)
    buf = bytearray(_TEMPLATE)
    buf[:len(raw)] = raw
    field = b"%011o\0" % size
    buf[_SIZE] = field
    buf[_CHKSUM] = b"%06o\0 " % (_TEMPLATE_SUM + sum(raw) + sum(field))
    return bytes(buf)


class TarFile:
    """One tar file written as ``webdataset.TarWriter(..., user="", group="", mode=0o444, mtime=0)`` writes it
    (see the module docstring), hashed with SHA-256 as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: WriteBehindFile | None = WriteBehindFile(path, sha256=True)

    @property
    def offset(self) -> int:
        """Bytes written so far."""
        assert self.file is not None
        return self.file.tell()

    def _write(self, data: bytes) -> None:
        assert self.file is not None
        self.file.write(data)

    def add(self, name: str, data: bytes) -> None:
        """One member ``name`` holding ``data``."""
        self._write(member_header(name, len(data)))
        self._write(data)
        if pad := -len(data) % BLOCK:
            self._write(_ZEROS[:pad])

    def close(self) -> str:
        """Write the end-of-archive blocks and record padding, close; the file's SHA-256."""
        self._write(b"\0" * END)
        if pad := -self.offset % RECORD:
            self._write(b"\0" * pad)
        assert self.file is not None
        self.file.close()
        digest, self.file = self.file.hexdigest(), None
        return digest

    def discard(self) -> None:
        """Close and delete an unfinished file (called while an error is raised: that error is the one to
        report, so a failing close, e.g. a full disk refusing the buffered tail, does not replace it)."""
        file, self.file = self.file, None
        try:
            if file is not None:
                file.close()
        except OSError:
            pass
        finally:
            self.path.unlink(missing_ok=True)


class _Shards:
    """Rolls ``<split>-NNNNNN.tar`` shards by sample count and exact tar size; each written to .tmp, renamed."""

    def __init__(self, folder: Path, split: str, opts: WebDatasetOptions):
        self.folder, self.split, self.opts = folder, split, opts
        self.done: list[tuple[str, int, int, bool]] = []  # name, samples, distinct images, oversize
        self.tar: TarFile | None = None

    def write(self, obj: dict[str, Any], images: list[str]) -> None:
        size = sum(member_bytes(len(v)) for k, v in obj.items() if k != "__key__")
        if self.tar is not None and (self.count >= self.opts.max_samples
                                     or tar_bytes(self.tar.offset + size) > self.opts.max_bytes):
            self.close()
        if self.tar is None:
            self.open()
        assert self.tar is not None
        key = obj["__key__"]
        for ext in sorted(k for k in obj if k != "__key__"):  # TarWriter's member order
            self.tar.add(f"{key}.{ext}", obj[ext])
        self.count += 1
        self.images.update(images)

    def open(self) -> None:
        """Start the next shard under its temporary name."""
        self.name = f"{self.split}-{len(self.done):06d}.tar"
        self.tar = TarFile(self.folder / (self.name + ".tmp"))
        self.count, self.images = 0, set()

    def close(self) -> None:
        """Finish the open shard (if any), move it to its final name and record its digest."""
        if self.tar is None:
            return
        oversize = tar_bytes(self.tar.offset) > self.opts.max_bytes  # members so far: the finished file's size
        digest = self.tar.close()
        final = self.folder / self.name
        os.replace(self.tar.path, final)
        remember_digest(final, digest)
        self.done.append((self.name, self.count, len(self.images), oversize))
        self.tar = None

    def abort(self) -> None:
        """Drop the open shard's temporary file (a failed run never leaves a half shard under a final name)."""
        if self.tar is not None:
            self.tar.discard()
        self.tar = None


def shard_pattern(split: str, n: int) -> str:
    """The brace pattern ``wds.WebDataset`` expands to every shard of a split (relative to the output folder)."""
    return f"{FOLDER}/{split}-000000.tar" if n == 1 else f"{FOLDER}/{split}-{{000000..{n - 1:06d}}}.tar"


@EXPORTS.register("webdataset")
def export_webdataset(corpus, out_dir: Path, recipe=None, *, options=None, entries=None,
                      split: str | None = None) -> list[ManifestEntry]:
    """Write the WebDataset shards of every split of ``corpus`` (or of ``split`` only, replacing only that split's
    shards, so the splits of one build can be written side by side); return one manifest entry per shard."""
    opts = parse_options(options)
    out_dir = Path(out_dir)
    folder = out_dir / FOLDER
    if split is None:
        clear_outputs(folder, ["*.tar", "*.tar.tmp"])
    else:
        clear_split_outputs(folder, split, r"-\d{6,}\.tar(\.tmp)?")
    folder.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, list[tuple[str, int, int, bool]], list[str]]] = []
    for split in corpus.splits() if split is None else [split]:
        shards, bad = _Shards(folder, split, opts), []
        cache: dict[str, bytes] = {}
        try:
            for i, v in enumerate(corpus.views(split)):
                try:
                    obj = encode_sample(v, sample_key(i, v.sample.id), out_dir, cache)
                except (OSError, ValueError) as e:
                    bad.append(f"sample {v.sample.id}: cannot export to webdataset ({e})")
                    continue
                shards.write(obj, v.images)
            if not shards.done and shards.tar is None:
                shards.open()  # every sample of the split was skipped: one empty shard keeps the split listed
            shards.close()
        except BaseException:
            shards.abort()
            raise
        written.append((split, shards.done, bad))
    skipped = list(corpus.skipped)  # read after the views: a streamed corpus knows its skips once read
    out: list[ManifestEntry] = []
    for split, done, bad in written:
        for k, (name, count, images, oversize) in enumerate(done):
            extra = skipped_extra(skipped + bad)
            extra.update(shard=k, shards=len(done), pattern=shard_pattern(split, len(done)))
            if oversize:
                extra["oversize"] = True  # one sample larger than max_bytes
            out.append(ManifestEntry(f"{FOLDER}/{name}", FORMAT, split, count, images, extra))
    return out
