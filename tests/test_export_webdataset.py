"""The WebDataset export: tar shards of {key}.png + {key}.json read back with the ``webdataset`` package and
with plain ``tarfile``, shard limits, byte-identical reruns, text-only samples and unreadable images, on the
real medical images of tests/test_export.py (fundus, histology, CT written as content-addressed PNGs)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_export import build_corpus

from medvl.core.records import Sample, Turn
from medvl.export import run_exports, write_manifest
from medvl.export.base import Corpus, MemoryCorpus
from medvl.export.webdataset import export_webdataset

wds = pytest.importorskip("webdataset")
braceexpand = pytest.importorskip("braceexpand")


@pytest.fixture()
def corpus(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    recs, samples, _ = build_corpus(out)
    return out, recs, samples


def _shards(out: Path, split: str) -> list[Path]:
    return sorted((out / "webdataset").glob(f"{split}-*.tar"))


def _read_wds(out: Path, entries, split: str) -> list[dict]:
    """Every sample of a split through ``wds.WebDataset(<brace pattern from the manifest>).decode("pil")``."""
    patterns = {e.extra["pattern"] for e in entries if e.format == "webdataset-tar" and e.split == split}
    assert len(patterns) == 1
    ds = wds.WebDataset(str(out / patterns.pop()), shardshuffle=False).decode("pil")
    return list(ds)


def _llava_ids(out: Path, split: str) -> list[str]:
    return [item["id"] for item in json.loads((out / "llava" / f"{split}.json").read_text(encoding="utf-8"))]


def test_read_back_with_webdataset(corpus):
    out, recs, samples = corpus
    entries = run_exports(["llava", "webdataset"], recs, samples, out, options={"webdataset": {"max_samples": 2}})
    by_id = {s.id: s for s in samples}
    for split in ("train", "test"):
        got = _read_wds(out, entries, split)
        assert [g["json"]["id"] for g in got] == _llava_ids(out, split)  # same samples, same order
        for g in got:
            meta = g["json"]
            s = by_id[meta["id"]]
            assert "." not in g["__key__"] and "#" not in g["__key__"]
            assert meta["images"] == s.images and meta["kind"] == s.kind and meta["lang"] == s.lang
            assert meta["members"] == (["png"] + [f"{i}.png" for i in range(1, len(s.images))] if s.images else [])
            first_user = next(c["value"] for c in meta["conversations"] if c["from"] == "human")
            assert first_user.startswith("<image>\n" * len(s.images))
            assert sum(c["value"].count("<image>") for c in meta["conversations"]) == len(s.images)
            assert [c["from"] for c in meta["conversations"]] == [
                {"user": "human", "assistant": "gpt"}[t.role] for t in s.turns]
            for member, rel in zip(meta["members"], s.images):
                img = g[member]
                assert isinstance(img, Image.Image)
                with Image.open(out / rel) as ref:
                    assert np.array_equal(np.asarray(img.convert(ref.mode)), np.asarray(ref))
                    assert list(img.size) == meta["sizes"][meta["members"].index(member)]
            if s.images:
                assert (meta["width"], meta["height"]) == g["png"].size
            else:
                assert not any(k.endswith("png") for k in g) and meta["width"] is None
    multi = next(g for g in _read_wds(out, entries, "train") if len(g["json"]["images"]) == 2)
    assert multi["png"].size == (192, 192) and multi["1.png"].size == (200, 160)  # fundus, then histology
    ct = [g for g in _read_wds(out, entries, "test")]
    assert {g["json"]["meta"]["modality"] for g in ct} == {"CT"}
    assert {g["json"]["meta"]["dataset"] for g in ct} == {"ct_demo"}


def test_read_back_with_tarfile(corpus):
    out, recs, samples = corpus
    entries = run_exports(["webdataset"], recs, samples, out)
    seen = []
    for e in entries:
        with tarfile.open(out / e.path) as tf:
            members = tf.getmembers()
            for m in members:
                assert m.isfile() and m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o444
                assert m.uname == "" and m.gname == "" and not m.pax_headers  # one header block per member
            jsons = [m for m in members if m.name.endswith(".json")]
            assert e.samples == len(jsons)
            for m in jsons:
                key = m.name[:-len(".json")]
                meta = json.loads(tf.extractfile(m).read().decode("utf-8"))
                seen.append(meta["id"])
                for member, rel in zip(meta["members"], meta["images"]):
                    data = tf.extractfile(f"{key}.{member}").read()
                    # the member holds the PNG file itself: its SHA-256 is the content address in the path
                    assert hashlib.sha256(data).hexdigest() == Path(rel).stem
                    assert data == (out / rel).read_bytes()
                names = {m.name for m in members if m.name.startswith(key + ".")}
                assert names == {f"{key}.json"} | {f"{key}.{x}" for x in meta["members"]}
    assert sorted(seen) == sorted(s.id for s in samples)


def test_shard_count_limit(corpus):
    out, recs, samples = corpus
    for per in (1, 2, 3, 10):
        entries = run_exports(["webdataset"], recs, samples, out, options={"webdataset": {"max_samples": per}})
        for split in ("train", "test"):
            n = sum(1 for s in samples if s.split == split)
            files = _shards(out, split)
            assert len(files) == math.ceil(n / per)  # stale shards of the previous (smaller) run are gone
            mine = [e for e in entries if e.split == split]
            assert [e.path for e in mine] == [f"webdataset/{f.name}" for f in files]
            assert [e.extra["shard"] for e in mine] == list(range(len(files)))
            assert {e.extra["shards"] for e in mine} == {len(files)}
            assert all(e.samples <= per for e in mine) and sum(e.samples for e in mine) == n
            expanded = list(braceexpand.braceexpand(mine[0].extra["pattern"]))
            assert expanded == [e.path for e in mine]
        assert not list((out / "webdataset").glob("*.tmp"))


def test_shard_byte_limit(corpus):
    out, recs, samples = corpus
    run_exports(["webdataset"], recs, samples, out, options={"webdataset": {"max_samples": 1}})
    alone = max(p.stat().st_size for p in (out / "webdataset").glob("*.tar"))  # the largest one-sample shard
    for max_bytes in (alone, 2 * alone, 4 * alone, 10**9):
        entries = run_exports(["webdataset"], recs, samples, out, options={"webdataset": {"max_bytes": max_bytes}})
        for e in entries:
            assert (out / e.path).stat().st_size <= max_bytes and "oversize" not in e.extra
        assert sum(e.samples for e in entries) == len(samples)
        if max_bytes == 10**9:
            assert [e.path for e in entries] == ["webdataset/train-000000.tar", "webdataset/test-000000.tar"]
        elif max_bytes == alone:  # the largest sample fills a shard alone: train needs more than one
            assert len(entries) > 2
    # a limit below one sample: each sample gets its own shard, flagged, and none is lost
    entries = run_exports(["webdataset"], recs, samples, out, options={"webdataset": {"max_bytes": 512}})
    assert len(entries) == len(samples) and all(e.samples == 1 for e in entries)
    assert all(e.extra.get("oversize") for e in entries)


def test_byte_identical_reruns(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        out.mkdir()
        recs, samples, _ = build_corpus(out)
        t0 = int(time.time())
        while int(time.time()) == t0:  # let the wall clock change second, so a stamped mtime would differ
            time.sleep(0.05)
        run_exports(["webdataset"], recs, samples, out, options={"webdataset": {"max_samples": 3}})
        runs.append({p.name: p.read_bytes() for p in sorted((out / "webdataset").glob("*.tar"))})
    assert runs[0] == runs[1] and len(runs[0]) == 3


def _tarwriter_copy(path: Path) -> bytes:
    """The shard at ``path`` written again by ``webdataset.TarWriter`` from its own members, grouped by key."""
    groups: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            key, ext = m.name.split(".", 1)
            groups.setdefault(key, {"__key__": key})[ext] = tf.extractfile(m).read()
    buf = io.BytesIO()
    writer = wds.TarWriter(buf, user="", group="", mode=0o444, mtime=0, encoder=False)
    for obj in groups.values():
        writer.write(obj)
    writer.close()
    return buf.getvalue()


def test_shards_are_byte_identical_to_tarwriters(corpus, tmp_path):
    """The tar files written directly equal what webdataset.TarWriter writes for the same members: multi-image
    and text-only samples, several shards, and a split whose every sample was skipped (an empty shard)."""
    out, recs, samples = corpus
    text = Sample("text#medqa#en#0", [], [Turn("user", "What does HU stand for?"), Turn("assistant", "Hounsfield.")],
                  "text", "en", None, split="train")
    entries = run_exports(["webdataset"], recs, samples + [text], out, options={"webdataset": {"max_samples": 2}})
    files = [out / e.path for e in entries]
    assert len(files) == 4
    for f in files:
        assert f.read_bytes() == _tarwriter_copy(f), f.name
    members = [m.name for f in files for m in tarfile.open(f).getmembers()]
    assert any(n.endswith(".1.png") for n in members) and any(n.startswith(tuple("0123456789")) for n in members)
    (out / recs[2].image).unlink()  # the CT image: every test sample is skipped
    entries = run_exports(["webdataset"], recs, samples, out)
    (empty,) = [out / e.path for e in entries if e.split == "test"]
    assert empty.read_bytes() == _tarwriter_copy(empty) and empty.stat().st_size == 10240


def test_text_only_split(tmp_path):
    out = tmp_path / "out"
    samples = [Sample(f"text#medqa#en#{i}", [], [Turn("user", f"What does HU stand for? ({i})"),
                                                 Turn("assistant", "Hounsfield units.")], "text", "en", None,
                      split="val") for i in range(3)]
    entries = run_exports(["webdataset"], [], samples, out)
    assert [(e.path, e.samples, e.images) for e in entries] == [("webdataset/val-000000.tar", 3, 0)]
    got = _read_wds(out, entries, "val")
    assert [g["json"]["id"] for g in got] == [s.id for s in samples]
    assert all({k for k in g if not k.startswith("__")} == {"json"} for g in got)
    assert all(g["json"]["conversations"][0]["value"].startswith("What") for g in got)


def test_unreadable_images_skip_their_samples(corpus):
    out, recs, samples = corpus
    fundus, histo, _ = recs
    (out / fundus.image).unlink()  # missing file: the fundus caption and the fundus+histo sample
    (out / histo.image).write_bytes(b"GIF89a not a png")  # wrong bytes: the histology sample
    entries = run_exports(["webdataset"], recs, samples, out)
    ok = [s.id for s in samples if fundus.image not in s.images and histo.image not in s.images]
    got = [g["json"]["id"] for split in ("train", "test") for g in _read_wds(out, entries, split)]
    assert sorted(got) == sorted(ok) and len(ok) == 3
    reasons = {r for e in entries for r in e.extra.get("skipped_examples", [])}
    assert all(e.extra["skipped"] == 3 for e in entries if e.split == "train")
    bad = {s.id for s in samples} - set(ok)
    for sid in bad:
        (reason,) = [r for r in reasons if r.startswith(f"sample {sid}:")]
        assert (fundus.image in reason and "No such file" in reason) or (histo.image in reason and "not a PNG" in reason)


def test_split_with_every_sample_skipped_keeps_one_empty_shard(corpus):
    out, recs, samples = corpus
    (out / recs[2].image).unlink()  # the CT image: both test samples
    entries = run_exports(["webdataset"], recs, samples, out)
    (test,) = [e for e in entries if e.split == "test"]
    assert (test.path, test.samples, test.images, test.extra["skipped"]) == ("webdataset/test-000000.tar", 0, 0, 2)
    with tarfile.open(out / test.path) as tf:
        assert tf.getmembers() == []
    assert sum(e.samples for e in entries if e.split == "train") == 4


def test_manifest_checksums(corpus):
    out, recs, samples = corpus
    entries = run_exports(["webdataset"], recs, samples, out, options={"webdataset": {"max_samples": 2}})
    doc = json.loads(write_manifest(out, entries).read_text(encoding="utf-8"))
    files = [f for f in doc["files"] if f["format"] == "webdataset-tar"]
    assert len(files) == 3
    for f in files:
        data = (out / f["path"]).read_bytes()
        assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["samples_by_format_and_split"]["webdataset-tar"] == {"train": 4, "test": 2}
    # the digest computed while writing is not trusted once the file changed: a rewritten shard is re-read
    changed = out / files[0]["path"]
    changed.write_bytes(changed.read_bytes()[:-512] + b"x" * 512)
    redone = json.loads(write_manifest(out, entries).read_text(encoding="utf-8"))
    (now,) = [f for f in redone["files"] if f["path"] == files[0]["path"]]
    assert now["sha256"] == hashlib.sha256(changed.read_bytes()).hexdigest() != files[0]["sha256"]


class _FailingCorpus(Corpus):
    """A streamed corpus whose second split breaks after one sample (a damaged shard on disk)."""

    def __init__(self, inner: MemoryCorpus):
        self.inner, self.skipped = inner, inner.skipped

    def splits(self):
        return self.inner.splits()

    def views(self, split):
        for i, v in enumerate(self.inner.views(split)):
            if split == "test" and i == 1:
                raise OSError("sample shard 3 is truncated")
            yield v


def test_failure_leaves_no_half_shard(corpus):
    out, recs, samples = corpus
    with pytest.raises(OSError, match="truncated"):
        export_webdataset(_FailingCorpus(MemoryCorpus(recs, samples, out)), out, options={"max_samples": 10})
    assert [p.name for p in sorted((out / "webdataset").iterdir())] == ["train-000000.tar"]


@pytest.mark.parametrize("options, match", [({"max_sample": 5}, "unknown option 'max_sample'.*max_bytes, max_samples"),
                                            ({"max_samples": 0}, "max_samples=0"),
                                            ({"max_bytes": "1GB"}, "max_bytes='1GB'")])
def test_bad_options(corpus, options, match):
    out, recs, samples = corpus
    with pytest.raises(ValueError, match=match):
        run_exports(["webdataset"], recs, samples, out, options={"webdataset": options})


def test_templated_headers_equal_tarfiles():
    """member_header (a template with name, size and checksum filled in) gives tarfile's own header bytes for any
    short ASCII name and plain-header size, and tarfile's error otherwise."""
    import random
    import string

    from medvl.export.webdataset import member_header, tobuf_header

    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "._-/"
    names = ["a", "x" * 100, "000000000_3fa2b4c5d6e7f809.json", "000000001_3fa2b4c5d6e7f809.1.png"]
    names += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 100))) for _ in range(3000)]
    for name in names:
        for size in (rng.choice([0, 1, 511, 512, 513, 8 ** 11 - 1]), rng.randint(0, 8 ** 11 - 1)):
            assert member_header(name, size) == tobuf_header(name, size), (name, size)
    for name, size in (("x" * 101, 5), ("é.png", 5), ("a.png", 8 ** 11)):
        with pytest.raises(ValueError, match="needs a PAX header"):
            member_header(name, size)
