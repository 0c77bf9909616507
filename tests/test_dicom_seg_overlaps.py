"""Several DICOM SEGs on one image, and overlapping segments inside one SEG (issue 6, item 8).

Real files: pydicom's ``liver.dcm`` (a QIICR liver SEG on three 512 x 512 CT slices) over a three-slice CT
series built from pydicom-data's ``693_UNCI.dcm`` pixels with the SOP Instance UIDs and positions that
``liver.dcm`` references, plus a "lesion" SEG written with highdicom over the same slices (segment number 1
in both files); and a SEG with two overlapping segments over ``CT_small.dcm`` (single file and series).
Every segment must stay distinct: the pixels of each label (all mask values whose ``mask_values`` entry
names it) equal that segment's own mask, and its box is the box of its own full mask."""

from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medvl.core.records import ImageRecord
from medvl.imaging.boxes import mask_box
from medvl.pipeline.recipe import SourceConfig
from medvl.sources import SOURCES
from source_helpers import run_source

LESION_ROWS, LESION_COLS = slice(120, 170), slice(180, 230)  # straddles the top edge of the liver


def _source(root, **kw):
    options = kw.pop("options", {})
    options = {"per_component": False, "min_region_size": 1, **options}
    cfg = SourceConfig(name="seg", format="dicom", path=str(root), options=options, **kw)
    return SOURCES.get("dicom")(cfg)


def _desc(number, label):
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)


def _write_seg(dss, pixel_array, labels, path):
    seg = hd.seg.Segmentation(
        source_images=dss, pixel_array=pixel_array, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_desc(n + 1, lb) for n, lb in enumerate(labels)], series_instance_uid=generate_uid(),
        series_number=100, sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medvl-test",
        manufacturer_model_name="fixture", software_versions="0", device_serial_number="SN-1")
    seg.save_as(path)


def _liver_case(root):
    """Copy liver.dcm, write its three source CT slices (693_UNCI pixels) and a lesion SEG on them.
    Returns {sop_uid: (z position, liver mask, lesion mask)} in the stored pixel grid."""
    liver = pydicom.dcmread(get_testdata_file("liver.dcm"))
    base = pydicom.dcmread(get_testdata_file("693_UNCI.dcm"))
    (root / "ct").mkdir(parents=True)
    liver.save_as(root / "liver.dcm")
    truth, dss = {}, []
    frames = liver.pixel_array
    for k, fg in enumerate(liver.PerFrameFunctionalGroupsSequence):
        uid = str(fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SeriesInstanceUID = liver.ReferencedSeriesSequence[0].SeriesInstanceUID
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = liver.StudyInstanceUID, liver.FrameOfReferenceUID
        ds.ImagePositionPatient = list(fg.PlanePositionSequence[0].ImagePositionPatient)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = list(liver.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing)
        ds.InstanceNumber = k + 1
        ds.save_as(root / "ct" / f"slice{k}.dcm")
        dss.append(pydicom.dcmread(root / "ct" / f"slice{k}.dcm"))
        lesion = np.zeros((512, 512), dtype=np.uint8)
        lesion[LESION_ROWS, LESION_COLS] = 1
        truth[uid] = (float(ds.ImagePositionPatient[2]), frames[k] > 0, lesion > 0)
    _write_seg(dss, np.stack([truth[str(d.SOPInstanceUID)][2] for d in dss]).astype(np.uint8), ["lesion"],
               root / "lesion_seg.dcm")
    return truth


def _label_pixels(item, label):
    """Pixels of one label in an item's label map: every value whose mask_values entry names it."""
    values = [v for v, names in item.mask_values.items()
              if names == label or (isinstance(names, list) and label in names)]
    return np.isin(item.mask, values)


def _check_distinct(item, truth_by_label):
    """Each label's pixels equal its segment's own mask; its region is that mask's box; labels complete."""
    for label, truth in truth_by_label.items():
        assert np.array_equal(_label_pixels(item, label), truth), label
        (region,) = [r for r in item.regions if r.label == label]
        assert region.box == mask_box(truth) and region.area == int(truth.sum())
    assert item.labels == sorted(truth_by_label)
    for value, names in item.mask_values.items():  # single values name one label, overlap values a sorted list
        assert isinstance(names, str) or (names == sorted(names) and len(names) >= 2)
    # the record's helper finds the same values as the item's map
    rec = ImageRecord(image="x", sha256="x", width=1, height=1, modality="CT", dataset="d", source_format="dicom",
                      task="seg", dimension="3d", source_file="x", patient_key="p",
                      mask_values={str(k): v for k, v in item.mask_values.items()})
    for label in truth_by_label:
        assert np.array_equal(np.isin(item.mask, rec.mask_values_for(label)), truth_by_label[label])


@pytest.mark.parametrize("mode", ["auto", "files"])
def test_two_segs_on_one_image_keep_both_labels_and_their_overlap(tmp_path, mode):
    """liver.dcm (segment 1 "Liver") and lesion_seg.dcm (segment 1 "lesion") on the same slices: before,
    the second SEG's segment 1 replaced the first's, so the lesion region was named "Liver" (or the reverse)."""
    truth = _liver_case(tmp_path)
    src = _source(tmp_path, slicing={"axes": ["axial"], "per_label": 3, "min_area": 1, "min_gap": 1},
                  options={"mode": mode})
    units, items, rejects = run_source(src)
    assert rejects == []
    assert len(items) == 3
    by_position = sorted(truth, key=lambda u: truth[u][0])  # axial index k = k-th slice from inferior
    overlap_seen = False
    for it in items:
        # identity orientation: the axial display slice is the stored pixel grid (no resampling: square pixels)
        if mode == "files":
            uid = str(pydicom.dcmread(tmp_path / it.source_file, stop_before_pixels=True).SOPInstanceUID)
        else:
            uid = by_position[it.slice["index"]]
        _, liver, lesion = truth[uid]
        assert (liver & lesion).any() and (lesion & ~liver).any()  # the fixture really overlaps
        _check_distinct(it, {"Liver": liver, "lesion": lesion})
        overlap_seen |= any(isinstance(v, list) for v in it.mask_values.values())
        assert it.task == "seg"
    assert overlap_seen


def _overlap_masks():
    tumour = np.zeros((128, 128), dtype=bool)
    tumour[30:70, 30:70] = True
    necrosis = np.zeros((128, 128), dtype=bool)
    necrosis[50:90, 55:95] = True  # covers the tumour's lower right corner and more
    return tumour, necrosis


def test_overlapping_segments_of_one_seg_single_file(tmp_path):
    """Two segments of one SEG overlap: before, "higher number wins" cut the overlap out of segment 1, so its
    mask and its box (from the remaining pixels) were wrong."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.save_as(tmp_path / "ct.dcm")
    tumour, necrosis = _overlap_masks()
    px = np.stack([tumour, necrosis], axis=-1)[None].astype(np.uint8)
    _write_seg([pydicom.dcmread(tmp_path / "ct.dcm")], px, ["tumour", "necrosis"], tmp_path / "seg.dcm")
    _, (item,), rejects = run_source(_source(tmp_path))
    assert rejects == []
    _check_distinct(item, {"tumour": tumour, "necrosis": necrosis})
    assert sorted(v for v in item.mask_values.values() if isinstance(v, list)) == [["necrosis", "tumour"]]


def _ct_series(folder, n: int) -> list:
    """``n`` copies of CT_small.dcm as one series, 2 mm apart, saved under ``folder`` and read back."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series, dss = generate_uid(), []
    folder.mkdir()
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        pos = [float(v) for v in base.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 2.0 * k]
        ds.save_as(folder / f"{k}.dcm")
        dss.append(pydicom.dcmread(folder / f"{k}.dcm"))
    return dss


def _series_with_overlapping_seg(tmp_path, n_slices):
    """A CT series of ``n_slices`` and one SEG whose overlapping tumour and necrosis cover slices 1 and 2."""
    dss = _ct_series(tmp_path / "ct", n_slices)
    tumour, necrosis = _overlap_masks()
    px = np.zeros((n_slices, 128, 128, 2), dtype=np.uint8)
    px[1:3, ..., 0] = tumour
    px[1:3, ..., 1] = necrosis
    _write_seg(dss, px, ["tumour", "necrosis"], tmp_path / "seg.dcm")
    return tumour, necrosis


def test_overlapping_segments_of_one_seg_on_a_series(tmp_path):
    tumour, necrosis = _series_with_overlapping_seg(tmp_path, 4)
    src = _source(tmp_path, slicing={"axes": ["axial"], "per_label": 2, "min_area": 1, "min_gap": 1})
    _, items, rejects = run_source(src)
    assert rejects == [] and sorted(it.slice["index"] for it in items) == [1, 2]
    for it in items:
        _check_distinct(it, {"tumour": tumour, "necrosis": necrosis})


def test_seg_on_a_series_that_cannot_be_stacked_still_reaches_its_slices(tmp_path):
    """A slice of the series turns out unreadable, so the rest (now with a gap) are read one by one. Before,
    the series' SEG was then dropped without a word; now each slice gets the SEGs that reference it."""
    tumour, necrosis = _series_with_overlapping_seg(tmp_path, 5)
    victim = tmp_path / "ct" / "3.dcm"  # truncated pixel data: found as part of the series, unreadable at load,
    victim.write_bytes(victim.read_bytes()[:-5000])  # so slices at 0, 2, 4, 8 mm remain: not a volume
    _, items, rejects = run_source(_source(tmp_path))
    assert [r.item for r in rejects] == ["ct/3.dcm"]
    by = {it.source_file: it for it in items}
    assert sorted(by) == ["ct/0.dcm", "ct/1.dcm", "ct/2.dcm", "ct/4.dcm"]
    for name in ("ct/1.dcm", "ct/2.dcm"):
        assert by[name].dimension == "2d" and by[name].task == "seg"
        _check_distinct(by[name], {"tumour": tumour, "necrosis": necrosis})
    assert by["ct/0.dcm"].regions == [] and by["ct/0.dcm"].labels == []


def test_label_map_values_per_label_and_case_insensitive():
    """Whatever order the masks come in, each label's values cover exactly its mask; "Liver" and "liver " are one
    label; a label seen only inside an overlap keeps its own number; single labels are numbered 1..L."""
    from medvl.imaging.labelmap import OverlapLabelMap, values_of

    liver = pydicom.dcmread(get_testdata_file("liver.dcm")).pixel_array[1] > 0
    lesion = np.zeros_like(liver)
    lesion[LESION_ROWS, LESION_COLS] = True
    inner = liver & lesion  # only ever overlaps
    for order in ([("Liver", liver), ("lesion", lesion), ("core", inner)],
                  [("core", inner), ("lesion", lesion), ("Liver", liver)]):
        b = OverlapLabelMap(liver.shape)
        for name, m in order:
            b.add(name, m)
        b.add("liver ", liver & lesion)  # same label, another spelling: no new label, no new pixels
        lab, names = b.finish()
        assert [names[v] for v in (1, 2, 3)] == [name for name, _ in order]
        assert ["Liver", "core", "lesion"] in names.values()
        for label, truth in (("Liver", liver), ("lesion", lesion), ("core", inner)):
            assert np.array_equal(np.isin(lab, values_of(names, label)), truth)
