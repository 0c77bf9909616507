"""The DICOM source's index phase: headers read in batches (in worker processes when a pool runs it) give
exactly the units, rejects and identifying values of a one-process enumeration, on real pydicom files."""

from __future__ import annotations

import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from test_source_dicom import _write_seg, _write_series

from medvl.core.records import Reject
from medvl.sources import SOURCES
from medvl.sources.base import Unit, run_index_task
from medvl.sources.config import SourceConfig


def _copy(name: str, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(get_testdata_file(name), dst)
    return dst


def _folder(root: Path) -> None:
    """Two series (one with a SEG), single images, a multi-frame file, a SEG without its images, a DICOMDIR,
    and files that are not DICOM images: text, truncated, no Rows/Columns, a hidden file."""
    dss = _write_series(root / "study" / "ct", n=6)
    _write_series(root / "study" / "ct2", n=4, gap=2.5)
    _write_seg(dss, root / "study" / "seg.dcm", slices=(2, 3))
    _copy("liver.dcm", root / "liver.dcm")
    _copy("CT_small.dcm", root / "other" / "ct.dcm")
    _copy("MR_small.dcm", root / "other" / "mr.dcm")
    _copy("emri_small.dcm", root / "brain" / "emri.dcm")
    _copy("RG3_UNCI.dcm", root / "bone" / "rg3.dcm")
    _copy("DICOMDIR", root / "DICOMDIR")
    (root / "bone" / "notes.txt").write_text("not dicom")
    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (root / "bone" / "trunc.dcm").write_bytes(raw[:2000])
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.Rows, ds.Columns
    ds.save_as(root / "bone" / "norows.dcm")
    _copy("CT_small.dcm", root / ".cache" / "hidden.dcm")


@pytest.fixture(scope="module")
def pool():
    """Two spawned worker processes: they inherit nothing, so each rebuilds the source from its config."""
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as ex:
        yield ex


def _source(root: Path, **options):
    return SOURCES.get("dicom")(SourceConfig(name="dcm", format="dicom", path=str(root), options=options))


def _split(objs):
    units = [o for o in objs if isinstance(o, Unit)]
    return units, [o for o in objs if isinstance(o, Reject)]


@pytest.mark.parametrize("mode", ["auto", "files", "series"])
def test_index_phase_in_batches_and_in_a_pool_gives_the_units_of_one_process(tmp_path, mode, pool):
    _folder(tmp_path)
    serial = _source(tmp_path, mode=mode)
    objs = list(serial.units())
    units, rejects = _split(objs)

    # what the folder holds, whichever way it is read
    if mode == "auto":
        assert [u.key for u in units] == ["bone/rg3.dcm", "brain/emri.dcm", "other/ct.dcm", "other/mr.dcm",
                                          "study/ct", "study/ct2"]
        assert next(u for u in units if u.key == "study/ct").payload["segs"] == ["study/seg.dcm"]
    assert {r.item for r in rejects} >= {"DICOMDIR", "bone/notes.txt", "bone/trunc.dcm", "bone/norows.dcm",
                                         "liver.dcm"}
    assert not any("hidden" in r.item for r in rejects) and not any(".cache" in u.key for u in units)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    assert {str(ct.PatientID), str(ct.StudyInstanceUID)} <= serial.sensitive

    # the index phase in batches of 3, in this process: the same units, rejects (same order) and values
    batched = _source(tmp_path, mode=mode)
    batched.index_batch = 3
    tasks = list(batched.index_tasks())
    assert len(tasks) > 5 and all(len(t) <= 3 for t in tasks)
    assert batched.sensitive == set()  # listing reads no header
    assert list(batched.units_from_index(map(batched.index_task, tasks))) == objs
    assert batched.sensitive == serial.sensitive

    # ... and in worker processes that get only the source config, as the build's orchestrator runs it
    pooled = _source(tmp_path, mode=mode)
    pooled.index_batch = 3
    cfg = pooled.cfg.model_dump(mode="json")
    got = list(pooled.units_from_index(pool.map(run_index_task, ((cfg, t) for t in pooled.index_tasks()))))
    assert got == objs
    assert pooled.sensitive == serial.sensitive


def test_enumeration_order_and_rejects_are_those_of_the_sorted_walk(tmp_path):
    """Rejects of unreadable files come first, in sorted path order, then the units sorted by key."""
    _folder(tmp_path)
    objs = list(_source(tmp_path).units())
    first = [o.item for o in objs[:4]]
    assert first == ["DICOMDIR", "bone/norows.dcm", "bone/notes.txt", "bone/trunc.dcm"]
    assert all(isinstance(o, Reject) for o in objs[:4]) and "not a DICOM file" in objs[2].reason


def test_index_tasks_are_lazy(tmp_path):
    """The walk lists a folder only when it gets there: a file added to a later folder after the first task
    was taken is still found (a walk listed up front would miss it)."""
    for k in range(5):
        _copy("CT_small.dcm", tmp_path / "a" / f"{k}.dcm")
    _copy("MR_small.dcm", tmp_path / "b" / "mr.dcm")
    src = _source(tmp_path, mode="files")
    src.index_batch = 2
    tasks = src.index_tasks()
    assert next(tasks) == [("a/0.dcm", None), ("a/1.dcm", None)]
    _copy("CT_small.dcm", tmp_path / "b" / "late.dcm")
    rest = [rel for t in tasks for rel, _ in t]
    assert rest == ["a/2.dcm", "a/3.dcm", "a/4.dcm", "b/late.dcm", "b/mr.dcm"]


def test_a_malformed_header_or_an_escaping_link_is_a_reject_not_a_crash(tmp_path):
    """pydicom parses values lazily: a header whose Rows holds two values raised a TypeError out of the whole
    enumeration, and a symlink to a file outside the folder a ValueError. Each is one reject now."""
    root = tmp_path / "src"
    _copy("CT_small.dcm", root / "good.dcm")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = [128, 128]
    ds.save_as(root / "badrows.dcm")
    outside = _copy("MR_small.dcm", tmp_path / "elsewhere" / "mr.dcm")
    (root / "link.dcm").symlink_to(outside)
    units, rejects = _split(list(_source(root).units()))
    assert [u.key for u in units] == ["good.dcm"]
    assert [r.item for r in rejects] == ["badrows.dcm", "link.dcm"]
    assert "badrows.dcm: unreadable DICOM header (TypeError" in rejects[0].reason
    assert rejects[1].reason == "link.dcm: path escapes the dataset folder (symlink)"


def test_a_folder_that_cannot_be_listed_is_a_reject(tmp_path):
    """A folder that disappears (or cannot be read) between the listing of its parent and its own is named in a
    reject; the walk goes on with the next folder."""
    _copy("CT_small.dcm", tmp_path / "a" / "ct.dcm")
    _copy("MR_small.dcm", tmp_path / "b" / "mr.dcm")
    _copy("MR_small.dcm", tmp_path / "c" / "mr.dcm")
    src = _source(tmp_path, mode="files")
    src.index_batch = 1
    tasks = src.index_tasks()
    first = next(tasks)  # the root was listed: a, b, c
    shutil.rmtree(tmp_path / "b")
    units, rejects = _split(list(src.units_from_index(map(src.index_task, [first, *tasks]))))
    assert [u.key for u in units] == ["a/ct.dcm", "c/mr.dcm"]
    assert [(r.item, r.reason) for r in rejects] == [("b", "b: folder cannot be listed (No such file or directory)")]
