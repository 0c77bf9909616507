"""Build outputs on shared or object storage: a build runs in a local staging folder, then is *published*.

A build always writes to a local (or shared POSIX) folder. When the output is a URL (``s3://bucket/prefix``,
``gs://``, ``memory://``, ``file://``, any fsspec protocol), the build runs in :func:`staging_dir` (stable per
URL, so ``--resume`` finds it again) and :func:`publish` copies the finished build to the URL:

- every file except hidden paths (``.medvl-work/``, ``.*.tmp``) and ``*.tmp``, in parallel threads, by
  listing unit: the root, each top folder's own files, and each second-level subtree (``images/ab/``,
  listed recursively); one paged remote listing per unit decides what is already there;
- a remote object is reused when its size matches and its content is known to match: content-addressed
  files (``images/ab/cd/<sha256>.png``) by their name, other files by a sha256 *recorded* remotely: the
  previous ``manifest.json`` there, or the receipts (``.medvl-publish/receipt-*.json``) that publish writes
  while it uploads, so a re-run after an interrupted upload re-sends only what is missing or different
  (``deep=True`` reads remote objects back and hashes them instead of trusting the records);
- ``manifest.json`` last, after every other file's size was checked against a fresh remote listing: a
  reader that sees the manifest sees every file it lists. A different remote manifest is deleted first, so
  while a new build replaces an old one no manifest is visible; its checksums are kept in a receipt.

Messages never hold credentials: values of ``key``/``secret``/``token``-like storage options and the
user:password part of URLs are replaced by ``***``."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medvl.core.hashing import file_digest

MANIFEST = "manifest.json"
STATE_DIR = ".medvl-publish"  # receipts of an unfinished publish, removed once the manifest is up
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")
_CONTENT_NAME = re.compile(r"^([0-9a-f]{64})\.[A-Za-z0-9]+$")  # images/<..>/<sha256>.png: name = hash of bytes
_SECRET_KEY = re.compile(r"key|secret|token|password|passwd|credential|sas|session", re.IGNORECASE)
_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY",
               "AZURE_STORAGE_SAS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS")


class PublishError(RuntimeError):
    """Publishing failed; ``report`` says what was done before (manifest.json is then NOT uploaded)."""

    def __init__(self, message: str, report: PublishReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class PublishReport:
    """What one :func:`publish` call did. ``files`` counts every file of the build, manifest.json included."""

    url: str  # credentials stripped
    files: int = 0
    uploaded: int = 0
    skipped: int = 0  # already present remotely with the same size and checksum
    bytes_uploaded: int = 0
    bytes_skipped: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # "<file> -> <remote path>: <problem>"
    warnings: list[str] = field(default_factory=list)  # e.g. receipts that could not be removed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_url(path: str | os.PathLike) -> bool:
    """True for ``proto://...`` (and fsspec chains such as ``simplecache::s3://...``); False for local paths."""
    if not isinstance(path, str):
        return False
    return any(_URL.match(part) for part in path.split("::"))


def display_url(url: str) -> str:
    """``url`` without a ``user:password@`` part, for messages."""
    return re.sub(r"(://)[^/@]*@", r"\1", url)


def safe_options(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` with the values of credential-like keys replaced by ``***`` (nested dicts too)."""
    out: dict[str, Any] = {}
    for k, v in (storage_options or {}).items():
        if isinstance(v, dict):
            out[k] = safe_options(v)
        else:
            out[k] = "***" if _SECRET_KEY.search(str(k)) and v not in (None, False, True) else v
    return out


def _secrets(storage_options: dict[str, Any] | None, url: str) -> list[str]:
    found: list[str] = []

    def walk(d: dict[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            elif isinstance(v, str) and _SECRET_KEY.search(str(k)):
                found.append(v)

    walk(storage_options or {})
    found += [os.environ[n] for n in _SECRET_ENV if os.environ.get(n)]
    m = re.search(r"://([^/@]*)@", url)
    if m:
        found += [p for p in m.group(1).split(":")]
    return sorted({s for s in found if len(s) >= 6}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return display_url(text)


def parse_storage_options(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["k=v", "client_kwargs.region_name=eu-west-1"]`` (repeated ``--storage-option``) -> a nested dict.
    Values ``true``/``false``/``null`` and numbers are converted (JSON); anything else stays a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
            raise ValueError(f"storage option {pair.split('=')[0]!r}: expected KEY=VALUE (KEY may be dotted, "
                             "e.g. client_kwargs.region_name=eu-west-1)")
        value = json.loads(raw) if raw in ("true", "false", "null") or re.fullmatch(r"-?\d+(\.\d+)?", raw) else raw
        *parents, leaf = key.strip().split(".")
        d = out
        for p in parents:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):  # a user input error, reported like the others
                raise ValueError(f"storage option {key!r}: {p!r} is already set to a value")  # noqa: TRY004
        d[leaf] = value
    return out


def staging_dir(url: str, base: Path | None = None) -> Path:
    """The local folder a build for ``url`` runs in: ``<base>/<sha256(url)[:16]>``, base defaulting to
    ``$MEDVL_CACHE/staging`` or ``~/.cache/medvl/staging``. Stable per URL (trailing "/" and credentials
    ignored), so a resumed build finds its staging folder."""
    if base is None:
        env = os.environ.get("MEDVL_CACHE")
        base = (Path(env).expanduser() if env else Path.home() / ".cache" / "medvl") / "staging"
    key = display_url(url).rstrip("/")
    return Path(base).expanduser() / hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def open_filesystem(url: str, storage_options: dict[str, Any] | None = None, filesystem: Any = None):
    """``(fsspec filesystem, root path)`` for ``url``. ``filesystem`` may be an fsspec filesystem or a
    ``pyarrow.fs.FileSystem`` (wrapped); without one, fsspec resolves the URL, and pyarrow's own filesystems
    (``pyarrow.fs.FileSystem.from_uri``) are tried when fsspec has no (installed) implementation."""
    from fsspec.core import split_protocol, url_to_fs
    from fsspec.implementations.arrow import ArrowFSWrapper

    opts = dict(storage_options or {})
    if filesystem is not None:
        import pyarrow.fs as pafs

        proto, path = split_protocol(url)
        if isinstance(filesystem, pafs.FileSystem):
            return ArrowFSWrapper(filesystem), path.rstrip("/")
        return filesystem, filesystem._strip_protocol(url).rstrip("/")
    if split_protocol(url)[0] in ("file", "local"):
        opts.setdefault("auto_mkdir", True)
    try:
        fs, root = url_to_fs(url, **opts)
        return fs, root.rstrip("/")
    except (ImportError, ValueError) as e:
        first = e
    try:
        import pyarrow.fs as pafs

        pa_fs, path = pafs.FileSystem.from_uri(url)
        return ArrowFSWrapper(pa_fs), path.rstrip("/")
    except Exception as e:  # noqa: BLE001 - report both resolvers' reasons
        proto = split_protocol(url)[0]
        raise PublishError(f"{display_url(url)}: no filesystem for protocol {proto!r} (fsspec: {first}; "
                           f"pyarrow: {e}); install its fsspec package (s3fs, gcsfs, adlfs, ...) "
                           f"with storage options {safe_options(storage_options)}") from None


def _unit(reldir: str) -> str:
    """The listing unit of a directory: its first two levels. ``images/ab/cd`` -> ``images/ab`` (one
    recursive listing covers the subtree); ``""``, ``card``, ``parquet`` hold only their own files."""
    return "/".join(reldir.split("/")[:2]) if reldir else ""


def _recursive(unit: str) -> bool:
    return unit.count("/") == 1


def _walk(top: Path, local_dir: Path):
    """(relative dir, wanted file names) under ``top``, hidden folders pruned, in sorted order."""
    for here, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(here).relative_to(local_dir).as_posix()
        rel = "" if rel == "." else rel
        yield rel, sorted(f for f in filenames if _wanted(rel, f))


def _local_units(local_dir: Path) -> list[tuple[str, int]]:
    """(listing unit, files) for every unit holding files, sorted; the root manifest excluded."""
    counts: dict[str, int] = {}
    for rel, names in _walk(local_dir, local_dir):
        if names:
            counts[_unit(rel)] = counts.get(_unit(rel), 0) + len(names)
    return sorted(counts.items())


def _wanted(reldir: str, name: str) -> bool:
    return not (name.startswith(".") or name.endswith(".tmp") or (reldir == "" and name == MANIFEST))


def _join(*parts: str) -> str:
    return posixpath.join(*[p for p in parts if p])


def _remote_sizes(fs, rdir: str, recursive: bool = False) -> dict[str, int]:
    """Path below ``rdir`` -> size of the remote files directly in it (or, ``recursive``, anywhere under
    it), listed afresh; empty when it does not exist. One paged listing on object stores."""
    fs.invalidate_cache(rdir)
    try:
        entries = list(fs.find(rdir, detail=True).values()) if recursive else fs.ls(rdir, detail=True)
    except FileNotFoundError:
        return {}
    prefix = rdir.rstrip("/") + "/"
    out = {}
    for e in entries:
        name = e["name"].rstrip("/")
        if e.get("type") == "file" and e.get("size") is not None and name.startswith(prefix):
            out[name[len(prefix):]] = int(e["size"])
    return out


def _remote_sha(fs, rpath: str) -> str:
    h = hashlib.sha256()
    with fs.open(rpath, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class _Publisher:
    """One publish run: what is recorded remotely, per-unit decisions, uploads, verification and receipts."""

    def __init__(self, local_dir: Path, fs, root: str, url: str, secrets: list[str], deep: bool):
        from fsspec.implementations.arrow import ArrowFSWrapper

        self.local, self.fs, self.root, self.url, self.secrets, self.deep = local_dir, fs, root, url, secrets, deep
        self.arrow = isinstance(fs, ArrowFSWrapper)
        self.expected: dict[str, tuple[int, str]] = {}  # manifest: path -> (bytes, sha256)
        self.recorded: dict[str, tuple[int, str]] = {}  # remote: path -> (bytes, sha256) known uploaded
        self.pending_receipt: dict[str, list] = {}
        self.last_flush = time.monotonic()

    def where(self, rel: str) -> str:
        return display_url(self.fs.unstrip_protocol(_join(self.root, rel)))

    def problem(self, rel: str, err: BaseException | str) -> str:
        return redact(f"{rel} -> {self.where(rel)}: {err}", self.secrets)

    def load_remote_state(self, manifest_bytes: bytes) -> None:
        """Read receipts and the remote manifest into ``recorded``; remove a remote manifest that differs."""
        state = _join(self.root, STATE_DIR)
        try:
            names = sorted(e for e in self.fs.ls(state, detail=False) if posixpath.basename(e).startswith("receipt-"))
        except FileNotFoundError:
            names = []
        remote_manifest = _join(self.root, MANIFEST)
        try:
            old = self.fs.cat_file(remote_manifest)
        except FileNotFoundError:
            old = None
        for name in names:  # oldest first: a later upload of a path overrides an earlier record
            for k, v in json.loads(self.fs.cat_file(name))["files"].items():
                self.recorded[k] = tuple(v)
        if old is not None:  # a complete publish: its checksums describe what is there now
            listed = {f["path"]: [f["bytes"], f["sha256"]] for f in json.loads(old)["files"] if f.get("sha256")}
            self.recorded.update({k: tuple(v) for k, v in listed.items()})
            if old != manifest_bytes:  # another build: keep its checksums, hide it while files change
                self.pending_receipt.update(listed)
                self.flush(force=True)
                self.fs.rm_file(remote_manifest)

    def flush(self, force: bool = False) -> None:
        """Write the checksums of files uploaded since the last receipt (every 500 files or 15 s)."""
        if not self.pending_receipt or not (force or len(self.pending_receipt) >= 500
                                            or time.monotonic() - self.last_flush >= 15):
            return
        name = f"receipt-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        body = json.dumps({"files": dict(sorted(self.pending_receipt.items()))}, indent=0).encode("utf-8")
        self.fs.pipe_file(_join(self.root, STATE_DIR, name), body)
        self.pending_receipt = {}
        self.last_flush = time.monotonic()

    def _unit_files(self, unit: str) -> list[tuple[str, int]]:
        top = self.local / unit if unit else self.local
        if _recursive(unit):
            return [(_join(rel, n), os.stat(self.local / rel / n).st_size) for rel, names in _walk(top, self.local)
                    for n in names]
        with os.scandir(top) as it:
            return sorted((_join(unit, e.name), e.stat().st_size) for e in it if e.is_file() and _wanted(unit, e.name))

    def scan(self, unit: str) -> tuple[list[tuple[str, int]], list[tuple[str, int, str | None]], list[str]]:
        """Decide for each file of one listing unit: (skipped (rel, size), to upload (rel, size, sha), problems)."""
        remote = _remote_sizes(self.fs, _join(self.root, unit), _recursive(unit))
        skipped, todo, problems = [], [], []
        cut = len(unit) + 1 if unit else 0
        for rel, size in self._unit_files(unit):
            name = rel[cut:]
            m = _CONTENT_NAME.match(posixpath.basename(rel))
            sha = self.expected[rel][1] if rel in self.expected else (m.group(1) if m else None)
            if rel in self.expected and self.expected[rel][0] != size:
                problems.append(self.problem(rel, f"local size {size} differs from manifest.json "
                                                  f"({self.expected[rel][0]}): the build changed after its manifest"))
                continue
            if remote.get(name) == size and self._same(rel, size, sha, bool(m)):
                skipped.append((rel, size))
            else:
                todo.append((rel, size, sha))
        return skipped, todo, problems

    def _same(self, rel: str, size: int, sha: str | None, content_named: bool) -> bool:
        if sha is None:
            sha = file_digest(self.local / rel)
        if self.deep:
            return _remote_sha(self.fs, _join(self.root, rel)) == sha
        return content_named or self.recorded.get(rel) == (size, sha)

    def upload(self, rel: str, size: int, sha: str | None) -> tuple[str, int, str | None]:
        if sha is None and not _CONTENT_NAME.match(posixpath.basename(rel)):
            sha = file_digest(self.local / rel)
        if self.arrow:  # stream: put_file would leave "directory" marker objects
            with open(self.local / rel, "rb") as src, self.fs.open(_join(self.root, rel), "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
        else:
            self.fs.put_file(str(self.local / rel), _join(self.root, rel))
        return rel, size, sha

    def verify(self, unit: str, sent: dict[str, int]) -> list[str]:
        """Sizes of the files just uploaded to ``unit`` (paths below it), against a fresh listing."""
        remote = _remote_sizes(self.fs, _join(self.root, unit), _recursive(unit))
        return [self.problem(_join(unit, n), f"remote size {remote.get(n, 'missing')} after upload, "
                                             f"local {s}") for n, s in sorted(sent.items()) if remote.get(n) != s]

    def run(self, dirs: list[tuple[str, int]], report: PublishReport, workers: int, max_errors: int,
            progress: Callable[[int, int], None] | None) -> None:
        """Scan directories, upload what is missing and verify each directory, ``workers`` threads at once
        with a bounded number of tasks in flight; failures go to ``report.errors``."""
        pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="medvl-publish")
        self.running: dict[Future, tuple[str, Any]] = {}
        self.queue: deque[tuple[str, int, str | None]] = deque()
        self.outstanding: dict[str, list] = {}  # unit -> [uploads not finished, {path below unit: size}]
        self.done = 0
        dir_iter, limit = iter(dirs), 4 * max(1, workers)
        try:
            while True:
                stop = len(report.errors) >= max_errors
                while not stop and len(self.running) < limit and self.queue:
                    item = self.queue.popleft()
                    self.running[pool.submit(self.upload, *item)] = ("upload", item)
                while not stop and len(self.running) < limit and not self.queue and \
                        sum(k == "scan" for k, _ in self.running.values()) < 2:  # bounds the upload queue
                    nxt = next(dir_iter, None)
                    if nxt is None:
                        break
                    self.running[pool.submit(self.scan, nxt[0])] = ("scan", nxt)
                if not self.running:
                    break
                finished, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    kind, item = self.running.pop(fut)
                    self.settle(pool, fut, kind, item, report)
                    if progress is not None and kind != "verify":
                        progress(self.done, report.files)
        except BaseException:  # interrupted (Ctrl-C, a failing callback): record the uploads that did finish
            for fut in self.running:
                fut.cancel()
            wait(list(self.running))
            for fut, (kind, _) in self.running.items():
                if kind == "upload" and not fut.cancelled() and fut.exception() is None:
                    self.record(*fut.result())
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            try:
                self.flush(force=True)
            except Exception as e:  # noqa: BLE001 - the uploads' own outcome matters more
                report.errors.append(redact(f"{STATE_DIR}/ receipt not written: {e}", self.secrets))

    def record(self, rel: str, size: int, sha: str | None) -> None:
        if sha is not None and not _CONTENT_NAME.match(posixpath.basename(rel)):
            self.pending_receipt[rel] = [size, sha]

    def settle(self, pool: ThreadPoolExecutor, fut: Future, kind: str, item: Any, report: PublishReport) -> None:
        """Account for one finished task: skips and uploads queued (scan), counts and receipts (upload),
        size mismatches (verify)."""
        err = fut.exception()
        if kind == "scan":
            unit, n = item
            if err is not None:
                report.errors.append(self.problem(unit + "/", f"listing failed: {err}"))
                self.done += n
                return
            skipped, todo, problems = fut.result()
            report.errors += problems
            report.skipped += len(skipped)
            report.bytes_skipped += sum(size for _, size in skipped)
            self.done += len(skipped) + len(problems)
            if todo:
                self.outstanding[unit] = [len(todo), {}]
                self.queue.extend(todo)
        elif kind == "upload":
            rel, size, _ = item
            unit = _unit(posixpath.dirname(rel))
            slot = self.outstanding[unit]
            slot[0] -= 1
            self.done += 1
            if err is not None:
                report.errors.append(self.problem(rel, err))
            else:
                report.uploaded += 1
                report.bytes_uploaded += size
                slot[1][rel[len(unit) + 1:] if unit else rel] = size
                self.record(*fut.result())
                self.flush()
            if slot[0] == 0:
                del self.outstanding[unit]
                if slot[1]:
                    self.running[pool.submit(self.verify, unit, slot[1])] = ("verify", unit)
        else:
            report.errors += [self.problem(item + "/", f"listing failed: {err}")] if err is not None else fut.result()

    def finish(self, manifest_bytes: bytes, report: PublishReport) -> None:
        """Upload manifest.json (unless the same bytes are there), check its size, remove the receipts."""
        if _remote_sizes(self.fs, self.root).get(MANIFEST) == len(manifest_bytes) and \
                self.fs.cat_file(_join(self.root, MANIFEST)) == manifest_bytes:
            report.skipped += 1
            report.bytes_skipped += len(manifest_bytes)
        else:
            self.upload(MANIFEST, len(manifest_bytes), None)
            report.uploaded += 1
            report.bytes_uploaded += len(manifest_bytes)
            size = _remote_sizes(self.fs, self.root).get(MANIFEST)
            if size != len(manifest_bytes):
                raise OSError(f"remote size {size} after upload, local {len(manifest_bytes)}")
        try:
            self.fs.rm(_join(self.root, STATE_DIR), recursive=True)
        except FileNotFoundError:
            pass  # no receipt was written (nothing uploaded besides the manifest)
        except Exception as e:  # noqa: BLE001 - leftover receipts are harmless: the manifest's checksums win
            report.warnings.append(redact(f"{self.where(STATE_DIR)}/ not removed: {e}", self.secrets))


def publish(local_dir: Path, url: str, *, storage_options: dict[str, Any] | None = None, workers: int = 8,
            progress: Callable[[int, int], None] | None = None, deep: bool = False, filesystem: Any = None,
            max_errors: int = 20) -> PublishReport:
    """Upload the finished build in ``local_dir`` to ``url`` (see the module docstring) and return counts.

    ``workers`` threads upload in parallel; ``progress(done, total)`` is called as files are decided;
    ``deep`` hashes remote objects before trusting them; ``filesystem`` (fsspec or pyarrow) overrides URL
    resolution. Raises :class:`PublishError` naming each failed file and its remote path (at most
    ``max_errors`` before stopping); the manifest is then not uploaded and a re-run resumes."""
    t0 = time.monotonic()
    local_dir = Path(local_dir)
    secrets = _secrets(storage_options, url)
    report = PublishReport(url=display_url(url))
    manifest_path = local_dir / MANIFEST
    if not manifest_path.is_file():
        raise PublishError(f"{local_dir}: no {MANIFEST}, so not a finished build; nothing published to "
                           f"{report.url}")
    manifest_bytes = manifest_path.read_bytes()
    files = json.loads(manifest_bytes)["files"]
    missing = [f["path"] for f in files if not f["path"].endswith("/") and not (local_dir / f["path"]).is_file()]
    if missing:
        raise PublishError(f"{local_dir}: files listed in {MANIFEST} are missing: {', '.join(missing[:10])}")
    try:
        fs, root = open_filesystem(url, storage_options, filesystem)
    except PublishError:
        raise
    except Exception as e:  # noqa: BLE001 - bad options, unreachable endpoint, ...
        raise PublishError(redact(f"{report.url}: cannot open (storage options {safe_options(storage_options)}): "
                                  f"{e}", secrets)) from None
    pub = _Publisher(local_dir, fs, root, url, secrets, deep)
    pub.expected = {f["path"]: (f["bytes"], f["sha256"]) for f in files if f.get("sha256")}
    dirs = _local_units(local_dir)
    report.files = sum(n for _, n in dirs) + 1
    try:
        pub.load_remote_state(manifest_bytes)
    except Exception as e:  # noqa: BLE001
        raise PublishError(redact(f"{report.url}: cannot read the remote state ({MANIFEST}, {STATE_DIR}/): {e}",
                                  secrets), report) from None
    pub.run(dirs, report, workers, max_errors, progress)
    report.seconds = time.monotonic() - t0
    if report.errors:
        shown = "\n  ".join(report.errors[:10])
        more = f"\n  ... and {len(report.errors) - 10} more" if len(report.errors) > 10 else ""
        raise PublishError(f"publishing {local_dir} to {report.url} failed for {len(report.errors)} file(s) "
                           f"({MANIFEST} not uploaded; re-run to resume):\n  {shown}{more}", report)
    try:
        pub.finish(manifest_bytes, report)
    except Exception as e:  # noqa: BLE001
        report.errors.append(pub.problem(MANIFEST, e))
        raise PublishError(f"publishing to {report.url}: {report.errors[-1]}", report) from None
    if progress is not None:
        progress(report.files, report.files)
    report.seconds = time.monotonic() - t0
    return report
