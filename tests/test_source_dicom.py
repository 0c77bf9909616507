"""DICOM reader and source on real files from pydicom / pydicom-data, plus series and SEG fixtures built
from CT_small.dcm copies in tmp_path."""

from __future__ import annotations

import copy
import json
import pickle
import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medvl.io.dicom import DicomReadError, order_series, read_dataset, read_dicom, slice_geometry
from medvl.pipeline.recipe import SourceConfig
from medvl.sources import SOURCES
from source_helpers import run_source

REAL_FILES = ["CT_small.dcm", "RG1_UNCI.dcm", "RG3_UNCI.dcm", "emri_small.dcm", "US1_UNCI.dcm",
              "MR-SIEMENS-DICOM-WithOverlays.dcm", "JPEG2000.dcm", "explicit_VR-UN.dcm", "MR_small.dcm"]


def _source(root, window=None, **options):
    cfg = SourceConfig(name="dcm", format="dicom", path=str(root), window=window, options=options)
    return SOURCES.get("dicom")(cfg)


_run = run_source


def _copy(name, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(get_testdata_file(name), dst)
    return dst


# --- reader ---------------------------------------------------------------------------------------------

def test_hu_conversion_equals_slope_raw_plus_intercept(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    img = read_dicom(get_testdata_file("CT_small.dcm"))
    expect = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert img.frames.shape == (1, 128, 128) and np.allclose(img.frames[0], expect)
    assert img.modality == "CT" and img.spacing == pytest.approx((0.661468, 0.661468))
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000  # a non-trivial LUT
    ds.save_as(tmp_path / "ct2.dcm")
    img2 = read_dicom(tmp_path / "ct2.dcm")
    assert np.allclose(img2.frames[0], ds.pixel_array.astype(np.float64) * 2 - 1000)


def test_bad_files_raise_clear_errors(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 10 + b"definitely not dicom" * 50)
    with pytest.raises(DicomReadError, match="junk.dcm: not a DICOM file"):
        read_dicom(tmp_path / "junk.dcm")
    raw = open(get_testdata_file("CT_small.dcm"), "rb").read()
    (tmp_path / "trunc.dcm").write_bytes(raw[: len(raw) - 20000])
    with pytest.raises(DicomReadError, match="trunc.dcm"):
        read_dicom(tmp_path / "trunc.dcm")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(DicomReadError, match="nopix.dcm: no PixelData"):
        read_dicom(tmp_path / "nopix.dcm")


def test_jpeg2000_and_multiframe_decode():
    j2k = read_dicom(get_testdata_file("JPEG2000.dcm"))
    assert j2k.frames.shape == (1, 1024, 256) and j2k.modality == "NM" and np.ptp(j2k.frames) > 0
    emri = read_dicom(get_testdata_file("emri_small.dcm"))
    assert emri.frames.shape == (10, 64, 64) and emri.modality == "MR"
    us = read_dicom(get_testdata_file("US1_UNCI.dcm"))
    assert us.rgb and us.frames.dtype == np.uint8 and us.frames.shape == (1, 480, 640, 3)


def test_order_falls_back_to_instance_number(tmp_path):
    geoms = []
    for n, inst in enumerate([3, 1, 2]):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        del ds.ImagePositionPatient
        ds.InstanceNumber = inst
        ds.save_as(tmp_path / f"a{n}.dcm")
        geoms.append(slice_geometry(read_dataset(tmp_path / f"a{n}.dcm", header_only=True), f"a{n}.dcm"))
    assert [g.rel for g in order_series(geoms)] == ["a1.dcm", "a2.dcm", "a0.dcm"]


# --- fixtures: a CT series from CT_small copies and a SEG on it -----------------------------------------

def _write_series(folder, n=6, gap=5.0):
    """``n`` axial slices 5 mm apart; slice k (by position) has raw values + 40*k. File names and
    InstanceNumbers are deliberately in a different order from the positions."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = generate_uid()
    names = ["z_%02d.dcm" % (n - k) for k in range(n)]  # reverse file-name order
    instances = [(k * 3) % n + 1 for k in range(n)]  # shuffled instance numbers
    dss = []
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = instances[k]
        pos = [float(v) for v in base.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + gap * k]
        ds.SliceLocation = pos[2] + gap * k
        ds.PixelData = (base.pixel_array + 40 * k).astype(base.pixel_array.dtype).tobytes()
        ds.save_as(folder / names[k])
        dss.append(pydicom.dcmread(folder / names[k]))
    return dss  # in position order


def test_series_ordered_by_position_not_name(tmp_path):
    dss = _write_series(tmp_path / "study" / "ct")
    files = sorted((tmp_path / "study/ct").iterdir())
    geoms = [slice_geometry(read_dataset(p, header_only=True), p.name) for p in files]
    ordered = order_series(geoms)
    assert [g.sop_uid for g in ordered] == [str(d.SOPInstanceUID) for d in dss]
    units, items, rejects = _run(_source(tmp_path, window={"level": 500, "width": 6000}, slices_per_series=6))
    assert rejects == [] and [u.key for u in units] == ["study/ct"]
    assert [it.slice["index"] for it in items] == list(range(6))
    means = [float(it.array.mean()) for it in items]
    assert all(b > a for a, b in zip(means, means[1:]))  # values grow with position: order is by position
    for it in items:
        assert it.dimension == "3d" and it.slice["axis"] == "axial" and it.slice["of"] == 6
        assert it.array.shape == (128, 128) and it.task == "cls" and it.patient_raw == "1CT1"
    # coronal slices are resampled from 5 mm slices to 0.66 mm pixels: 6 slices -> ~45 rows (a spacing ratio of
    # 7.6, over the default slicing.max_spacing_ratio of 4: allowed explicitly here)
    _, cor, _ = _run(_source_cfg(tmp_path, ["coronal"], max_spacing_ratio=10))
    assert cor and all(it.array.shape == (int(round(6 * 5 / 0.661468)), 128) for it in cor)


def test_series_mode_bad_slice_and_fallback(tmp_path):
    _write_series(tmp_path / "ct")
    _copy("CT_small.dcm", tmp_path / "single" / "one.dcm")
    _, items, rejects = _run(_source(tmp_path, mode="series", slices_per_series=2))
    assert [r.item for r in rejects] == ["single/one.dcm"] and "stackable series" in rejects[0].reason
    assert len(items) == 2 and {it.source_file for it in items} == {"ct"}
    _, items, _ = _run(_source(tmp_path, mode="files"))
    assert len(items) == 7 and all(it.dimension == "2d" for it in items)
    # a truncated middle slice: that file is rejected, the rest come out as single images
    victim = tmp_path / "ct" / "z_03.dcm"
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) - 5000])
    _, items, rejects = _run(_source(tmp_path))
    assert [r.item for r in rejects] == ["ct/z_03.dcm"] and "ct/z_03.dcm" in rejects[0].reason
    assert sorted(it.source_file for it in items) == sorted(
        [f"ct/z_0{k}.dcm" for k in (1, 2, 4, 5, 6)] + ["single/one.dcm"])


def _source_cfg(root, axes, **slicing):
    cfg = SourceConfig(name="dcm", format="dicom", path=str(root), slicing={"axes": axes, **slicing})
    return SOURCES.get("dicom")(cfg)


def _write_seg(dss, path, slices=(2, 3)):
    mask = np.zeros((len(dss), 128, 128), dtype=np.uint8)
    for k in slices:
        mask[k, 40:60, 30:70] = 1
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure, segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=dss, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc], series_instance_uid=generate_uid(), series_number=100,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medvl-test",
        manufacturer_model_name="fixture", software_versions="0", device_serial_number="SN-4242")
    seg.save_as(path)


def test_seg_matched_to_slices_gives_boxes(tmp_path):
    dss = _write_series(tmp_path / "ct")
    _write_seg(dss, tmp_path / "seg.dcm", slices=(2, 3))
    cfg = SourceConfig(name="dcm", format="dicom", path=str(tmp_path),
                       slicing={"axes": ["axial"], "per_label": 2, "min_area": 50, "min_gap": 1})
    units, items, rejects = _run(SOURCES.get("dicom")(cfg))
    assert rejects == [] and len(units) == 1 and units[0].payload["segs"] == ["seg.dcm"]
    unit = pickle.loads(pickle.dumps(units[0]))  # units travel to worker processes
    fresh = SOURCES.get("dicom")(SourceConfig.model_validate(cfg.model_dump()))
    assert [it.slice for it in fresh.load(unit)] == [it.slice for it in items]
    assert sorted(it.slice["index"] for it in items) == [2, 3]
    for it in items:
        assert it.task == "seg" and it.labels == ["lesion"] and it.mask_values == {1: "lesion"}
        (r,) = it.regions
        # axial CT with identity orientation: the display slice is the stored pixel grid
        assert r.box == (30.0, 40.0, 70.0, 60.0) and r.area == 800
        assert "SN-4242" in it.sensitive
    # the SEG alone (its images absent) is rejected, naming the file
    shutil.rmtree(tmp_path / "ct")
    _, items, rejects = _run(SOURCES.get("dicom")(cfg))
    assert items == [] and len(rejects) == 1
    assert rejects[0].item == "seg.dcm" and "referenced images not found" in rejects[0].reason


def test_liver_seg_without_its_ct_is_rejected(tmp_path):
    _copy("liver.dcm", tmp_path / "liver.dcm")
    _copy("CT_small.dcm", tmp_path / "other" / "ct.dcm")
    _, items, rejects = _run(_source(tmp_path))
    assert [r.item for r in rejects] == ["liver.dcm"]
    assert "liver.dcm" in rejects[0].reason and "referenced images not found" in rejects[0].reason
    assert [it.source_file for it in items] == ["other/ct.dcm"]  # the SEG itself is never rendered


# --- source behaviour ---------------------------------------------------------------------------------------

def test_monochrome1_is_inverted(tmp_path):
    _copy("MR_small.dcm", tmp_path / "m2" / "mr.dcm")
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    (tmp_path / "m1").mkdir()
    ds.save_as(tmp_path / "m1" / "mr.dcm")
    _, items, rejects = _run(_source(tmp_path, window="percentile", mode="files"))
    by = {it.source_file: it.array.astype(int) for it in items}
    assert rejects == [] and np.array_equal(by["m1/mr.dcm"], 255 - by["m2/mr.dcm"])


def test_anisotropic_pixel_spacing_is_resampled(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PixelSpacing = [2.0, 1.0]  # rows 2 mm apart, columns 1 mm
    ds.save_as(tmp_path / "aniso.dcm")
    _, (item,), _ = _run(_source(tmp_path))
    assert item.array.shape == (2 * ds.Rows, ds.Columns)


def test_frames_labels_and_junk(tmp_path):
    _copy("emri_small.dcm", tmp_path / "brain" / "emri.dcm")
    _copy("RG3_UNCI.dcm", tmp_path / "bone" / "rg3.dcm")
    (tmp_path / "bone" / "notes.txt").write_text("not dicom")
    _, items, rejects = _run(_source(tmp_path, frames=3, label_from="folder"))
    assert [(r.item, r.reason) for r in rejects] == [("bone/notes.txt", "bone/notes.txt: not a DICOM file")]
    emri = [it for it in items if it.source_file == "brain/emri.dcm"]
    assert [it.slice for it in emri] == [{"frame": f, "of": 10} for f in (0, 5, 9)]
    assert all(it.labels == ["brain"] and it.modality == "MR" for it in emri)
    _, items, rejects = _run(_source(tmp_path, frames="middle", label_from="StudyDescription", label="x-ray study"))
    rg3 = [it for it in items if it.source_file == "bone/rg3.dcm"][0]
    assert rg3.labels == ["Non-ossifying fibroma of distal tibia", "x-ray study"]
    assert rg3.modality == "CR" and rg3.body_region == "EXTREMITY" and rg3.array.dtype == np.uint8
    assert any(r.item == "brain/emri.dcm" and "StudyDescription is empty" in r.reason for r in rejects)
    _, items, _ = _run(_source(tmp_path, frames="all"))
    assert len([it for it in items if it.source_file == "brain/emri.dcm"]) == 10


def _identifying(ds: pydicom.Dataset) -> list[str]:
    vals = []
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate",
               "ContentDate", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "OperatorsName",
               "AccessionNumber", "StationName", "DeviceSerialNumber", "StudyInstanceUID"):
        v = str(ds.get(kw, "") or "").strip()
        if len(v) >= 3:
            vals.append(v)
    return vals


def test_no_identifying_value_leaves_sensitive(tmp_path):
    for name in REAL_FILES:
        _copy(name, tmp_path / name)
    _, items, rejects = _run(_source(tmp_path, frames="middle", label_from="StudyDescription"))
    produced = {it.source_file for it in items}
    assert produced | {r.item for r in rejects} >= set(REAL_FILES)
    assert {"CT_small.dcm", "RG3_UNCI.dcm", "JPEG2000.dcm"} <= produced
    checked = 0
    for it in items:
        ds = pydicom.dcmread(tmp_path / it.source_file, stop_before_pixels=True)
        known = _identifying(ds)
        assert set(known) <= it.sensitive | {v.replace("^", " ") for v in it.sensitive}
        dump = json.dumps({"labels": it.labels, "extra": it.extra, "source_file": it.source_file,
                           "modality": it.modality, "body_region": it.body_region, "view": it.view,
                           "window": it.window, "slice": it.slice, "regions": [r.to_dict() for r in it.regions],
                           "mask_values": it.mask_values})
        for v in sorted(it.sensitive):
            if len(v) >= 4:
                assert v not in dump, (it.source_file, v)
                checked += 1
    assert checked > 50


def test_burned_in_text_policy(tmp_path):
    """Ultrasound without BurnedInAnnotation: cropped to its tissue region when the file defines one
    (OBXXXX1A: the date and institution band above it is gone), rejected with a reason when it does not
    (US1_UNCI shows 'BAPTIST MED CTR' in its pixels), kept only when the user says so."""
    import shutil

    from pydicom.data import get_testdata_file

    from medvl.core.records import Reject
    from medvl.pipeline.recipe import SourceConfig
    from medvl.sources import SOURCES
    from medvl.sources.base import Item

    for f in ("OBXXXX1A.dcm", "US1_UNCI.dcm"):
        shutil.copyfile(get_testdata_file(f), tmp_path / f)

    def run(policy):
        cfg = SourceConfig(name="us", format="dicom", path=str(tmp_path), options={"burned_in": policy})
        src = SOURCES.get("dicom")(cfg)
        out = {}
        for u in src.units():
            for obj in ([u] if isinstance(u, Reject) else src.load(u)):
                out.setdefault(obj.source_file if isinstance(obj, Item) else obj.item, []).append(obj)
        return out

    res = run("crop_or_reject")
    ob = res["OBXXXX1A.dcm"][0]
    assert isinstance(ob, Item) and ob.array.shape[:2] == (459, 680)  # region (120,60)-(800,518), clipped to the 800-px width
    us = res["US1_UNCI.dcm"][0]
    assert isinstance(us, Reject) and "burned-in" in us.reason and us.stage == "privacy"
    assert all(isinstance(o, Reject) for o in run("reject")["OBXXXX1A.dcm"])
    kept = run("keep")
    assert isinstance(kept["US1_UNCI.dcm"][0], Item) and kept["US1_UNCI.dcm"][0].array.shape[:2] == (480, 640)


def test_enhanced_ct_rescale_from_functional_groups():
    """eCT_Supplemental.dcm (Enhanced CT) keeps Rescale Slope/Intercept in its shared functional groups:
    stored 0..1196 with intercept -1024 -> HU -1024..172 (air outside the head is -1024 HU)."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    from medvl.io.dicom import read_dicom

    path = get_testdata_file("eCT_Supplemental.dcm")
    raw = pydicom.dcmread(path).pixel_array.astype(np.float32)
    img = read_dicom(path)
    assert np.array_equal(img.frames, raw - 1024.0)
    assert img.frames.min() == -1024.0


def test_palette_colour_scaled_by_lut_depth():
    """OBXXXX1A.dcm is PALETTE COLOR with 16-bit LUT entries and 8 bits stored: the RGB must be the LUT
    scaled from 16 bits, not clipped to white."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_color_lut

    from medvl.io.dicom import read_dicom

    path = get_testdata_file("OBXXXX1A.dcm")
    ds = pydicom.dcmread(path)
    expected = np.floor(apply_color_lut(ds.pixel_array, ds) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    img = read_dicom(path)
    assert np.array_equal(img.frames[0], expected)
    assert img.frames.mean() < 64  # mostly black background, as displayed
