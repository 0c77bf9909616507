"""Lay out a small, real medical corpus in real source formats from images shipped in pip packages.

Where every label comes from (nothing is invented):
- ``dicom/``: real DICOM files from pydicom / pydicom-data (CT, MR, CR, US, NM); modality and body part come
  from their headers. ``dicom/mr_lesion/`` adds a DICOM SEG written with highdicom whose mask is the closed
  contour a reader drew around a liver lesion in that MR file's own overlay plane (the overlay's other marks,
  the "Tra" text and the "F" box, lie outside the patient and are left out).
  Images that may carry burned-in text are cropped to their ultrasound tissue region or rejected
  (US1_UNCI.dcm shows the institution's name in its pixels and is rejected with that reason).
- ``xray_csv/``: the tibia radiograph rendered to PNG with an NIH ``Data_Entry_2017.csv``-layout table whose
  finding is the one its StudyDescription names ("Non-ossifying fibroma of distal tibia").
- ``mni152/``: a Medical Segmentation Decathlon layout built from nilearn's MNI152 T1 template; its label map is
  the template's own grey- and white-matter probability maps (tissue with probability > 0.5 inside the brain mask).
- ``ihc_tiles/``: an image-folder classification of tiles of scikit-image's immunohistochemistry image (colonic
  glands, FHL2 revealed with DAB); a tile's class is its measured DAB-stained area fraction (colour deconvolution,
  Otsu threshold on DAB optical density): ``FHL2 high expression`` if at least half the tile is DAB-positive,
  else ``FHL2 low expression``.
- ``ihc_coco/``: COCO boxes around the DAB-positive regions of the same image (connected components of that
  stain mask, at least 400 pixels).
- ``retina_seg/``: 2D segmentation tiles of scikit-image's fundus photograph; masks are its vessels measured with a
  Sato ridge filter on the green channel (Otsu threshold inside the field of view), label ``retinal vessels``.
A ``README.txt`` left in ``ihc_tiles/`` shows how junk is rejected with a reason.

The IHC and fundus labels are measurements of the images (stain deconvolution, a ridge filter), not an
expert's annotation: they are stated as such here and in the README. Tiles cut from one slide or one
photograph are one "patient" for splitting (``patient_pattern``; the IHC tiles and COCO crops share a
``patient_namespace``), so no slide lands in two splits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DICOM_FILES = {
    # file -> subfolder (one folder per study)
    "CT_small.dcm": "ct_small", "693_UNCI.dcm": "ct_head", "explicit_VR-UN.dcm": "ct_pancreas",
    "eCT_Supplemental.dcm": "ct_perfusion", "emri_small.dcm": "mr_head", "MR2_UNCI.dcm": "mr_shoulder",
    "MR-SIEMENS-DICOM-WithOverlays.dcm": "mr_lesion", "RG1_UNCI.dcm": "cr_chest", "US1_UNCI.dcm": "us_1",
    "OBXXXX1A.dcm": "us_ob", "JPEG2000.dcm": "nm_bone",
}


def _testfile(name: str) -> Path:
    from pydicom.data import get_testdata_file

    p = get_testdata_file(name)
    if p is None:
        raise FileNotFoundError(f"{name}: not found in pydicom / pydicom-data; install medvl[samples]")
    return Path(p)


def _u8(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return (np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1) * 255).round().astype(np.uint8)


def lesion_mask_from_overlay(ds) -> np.ndarray:
    """Fill the closed overlay contour that lies inside the patient (see module docstring)."""
    from scipy import ndimage

    ov = ds.overlay_array(0x6000).astype(bool)
    img = ds.pixel_array.astype(np.float64)
    body = img > np.percentile(img, 60)
    comps, n = ndimage.label(ov, structure=np.ones((3, 3)))
    best, best_area = None, 0
    for i in range(1, n + 1):
        filled = ndimage.binary_fill_holes(comps == i)
        inner = filled & ~(comps == i)
        if inner.sum() < 50:  # not a closed contour (text strokes)
            continue
        if body[inner].mean() < 0.5:  # encloses background: the "F" box outside the patient
            continue
        if inner.sum() > best_area:
            best, best_area = filled, int(inner.sum())
    if best is None:
        raise ValueError("no closed lesion contour found in the overlay")
    return best


def write_dicom(root: Path) -> None:
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    for name, sub in DICOM_FILES.items():
        d = root / "dicom" / sub
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_testfile(name), d / name)

    mr = pydicom.dcmread(_testfile("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    mask = lesion_mask_from_overlay(mr)
    seg_desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="liver lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=[mr], pixel_array=mask[None].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[seg_desc],
        series_instance_uid=hd.UID("1.2.826.0.1.3680043.10.1234.1"), series_number=99,
        sop_instance_uid=hd.UID("1.2.826.0.1.3680043.10.1234.2"), instance_number=1,
        manufacturer="medvl", manufacturer_model_name="medvl demo", software_versions="0.1",
        device_serial_number="0", content_label="LESION", content_description="lesion from overlay contour",
    )
    seg.save_as(root / "dicom" / "mr_lesion" / "lesion_seg.dcm")


NIH_COLUMNS = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
               "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]


def write_xray_csv(root: Path) -> None:
    """The tibia radiograph rendered to PNG with a labels table in NIH ``Data_Entry_2017.csv`` layout; its
    finding is the one its StudyDescription names. Age and sex are left empty (not needed, not copied)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    d = root / "xray_csv"
    (d / "images").mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(_testfile("RG3_UNCI.dcm"))
    a = _u8(apply_modality_lut(ds.pixel_array, ds))
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = 255 - a
    Image.fromarray(a).resize((a.shape[1] // 2, a.shape[0] // 2), Image.Resampling.LANCZOS).save(
        d / "images" / "00000001_000.png")
    finding = str(ds.StudyDescription).split(" of ")[0]  # "Non-ossifying fibroma of distal tibia"
    row = ["00000001_000.png", finding, "0", "1", "", "", "AP", str(a.shape[1] // 2), str(a.shape[0] // 2), "", ""]
    with (d / "Data_Entry_2017.csv").open("w", encoding="utf-8") as f:
        f.write(",".join(NIH_COLUMNS) + "\n" + ",".join(row) + "\n")


def mni152_tissue() -> tuple[Any, np.ndarray, np.ndarray]:
    """nilearn's MNI152 T1 template (a NIfTI image), its tissue label map (1 grey matter, 2 white matter: the
    larger of the two probability maps where it is above 0.5, inside the brain mask) and the brain mask."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata()
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0
    label = np.zeros(gm.shape, dtype=np.uint8)
    label[(gm > 0.5) & (gm >= wm) & brain] = 1
    label[(wm > 0.5) & (wm > gm) & brain] = 2
    return t1, label, brain


def write_mni_decathlon(root: Path) -> None:
    import nibabel as nib

    d = root / "mni152"
    (d / "imagesTr").mkdir(parents=True, exist_ok=True)
    (d / "labelsTr").mkdir(parents=True, exist_ok=True)
    t1, label, _ = mni152_tissue()
    img = nib.Nifti1Image(np.asarray(t1.get_fdata(), dtype=np.float32), t1.affine)
    nib.save(img, d / "imagesTr" / "mni152_001.nii.gz")
    nib.save(nib.Nifti1Image(label, t1.affine), d / "labelsTr" / "mni152_001.nii.gz")
    meta = {
        "name": "MNI152-tissue", "description": "MNI152 T1 template with its grey/white-matter maps (p > 0.5)",
        "reference": "nilearn MNI152 template", "licence": "see nilearn", "tensorImageSize": "3D",
        "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "grey matter", "2": "white matter"},
        "numTraining": 1, "numTest": 0,
        "training": [{"image": "./imagesTr/mni152_001.nii.gz", "label": "./labelsTr/mni152_001.nii.gz"}],
        "test": [],
    }
    (d / "dataset.json").write_text(json.dumps(meta, indent=4), encoding="utf-8")


def _dab_mask(ihc: np.ndarray) -> np.ndarray:
    from skimage import color, filters

    dab = color.rgb2hed(ihc)[..., 2]
    return dab > filters.threshold_otsu(dab)


def write_ihc(root: Path, tile: int = 128, stride: int = 48) -> None:
    from scipy import ndimage
    from skimage import data

    ihc = data.immunohistochemistry()
    pos = _dab_mask(ihc)
    d = root / "ihc_tiles"
    for y in range(0, ihc.shape[0] - tile + 1, stride):
        for x in range(0, ihc.shape[1] - tile + 1, stride):
            frac = float(pos[y:y + tile, x:x + tile].mean())
            cls = "FHL2_high_expression" if frac >= 0.5 else "FHL2_low_expression"
            (d / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(ihc[y:y + tile, x:x + tile]).save(d / cls / f"ihc_y{y:03d}_x{x:03d}.png")
    (d / "README.txt").write_text("Tiles of scikit-image's immunohistochemistry sample.\n", encoding="utf-8")

    c = root / "ihc_coco"
    (c / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, (y, x, s) in enumerate([(0, 0, 512), (0, 0, 256), (256, 256, 256), (0, 256, 256), (256, 0, 256)], 1):
        crop = ihc[y:y + s, x:x + s]
        Image.fromarray(crop).save(c / "images" / f"ihc_{i:03d}.png")
        images.append({"id": i, "file_name": f"ihc_{i:03d}.png", "width": s, "height": s})
        comps, n = ndimage.label(pos[y:y + s, x:x + s])
        for j, sl in enumerate(ndimage.find_objects(comps), 1):
            area = int((comps[sl] == j).sum())
            if area < 400:
                continue
            ys, xs = sl
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0, "area": area,
                         "bbox": [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start]})
    coco = {"info": {"description": "DAB-positive regions of the scikit-image IHC sample"}, "images": images,
            "annotations": anns, "categories": [{"id": 1, "name": "DAB-positive region", "supercategory": "stain"}]}
    (c / "annotations.json").write_text(json.dumps(coco, indent=1), encoding="utf-8")


def write_retina(root: Path, tile: int = 320, stride: int = 160) -> None:
    from skimage import data, filters

    rgb = data.retina()
    green = rgb[..., 1].astype(np.float64) / 255.0
    fov = rgb.max(axis=2) > 20
    ves = filters.sato(green, sigmas=[2, 4], black_ridges=True)
    ves[~fov] = 0
    mask = (ves > filters.threshold_otsu(ves[fov])) & fov
    d = root / "retina_seg"
    (d / "images").mkdir(parents=True, exist_ok=True)
    (d / "masks").mkdir(parents=True, exist_ok=True)
    H, W = mask.shape
    for y in range(0, H - tile + 1, stride):
        for x in range(0, W - tile + 1, stride):
            if fov[y:y + tile, x:x + tile].mean() < 0.5:
                continue
            name = f"retina_y{y:04d}_x{x:04d}"
            Image.fromarray(rgb[y:y + tile, x:x + tile]).save(d / "images" / f"{name}.png")
            Image.fromarray(mask[y:y + tile, x:x + tile].astype(np.uint8)).save(d / "masks" / f"{name}.png")


def layout(root: Path) -> dict[str, Any]:
    """Write every demo source under ``root`` and return the recipe dict that builds them."""
    root.mkdir(parents=True, exist_ok=True)
    write_dicom(root)
    write_xray_csv(root)
    write_mni_decathlon(root)
    write_ihc(root)
    write_retina(root)
    return demo_recipe()


def demo_recipe() -> dict[str, Any]:
    return {
        "name": "medvl-demo",
        "seed": 0,
        "salt": "medvl-demo-salt",
        "workers": 1,
        "sources": [
            {"name": "dicom_studies", "format": "dicom", "path": "corpus/dicom",
             "options": {"seg": True}},
            {"name": "xray_csv", "format": "csv_labels", "path": "corpus/xray_csv", "modality": "X-ray",
             "department": "Orthopedic Surgery", "clinical_task": "Disease Diagnosis", "body_region": "lower limb",
             "options": {"images_dir": "images"}},
            {"name": "mni152", "format": "decathlon", "path": "corpus/mni152", "department": "Neurosurgery",
             "body_region": "brain", "clinical_task": "Nervous Tissue",
             "slicing": {"axes": ["axial", "coronal", "sagittal"], "per_label": 40, "min_area": 200, "min_gap": 2}},
            {"name": "ihc_tiles", "format": "image_folder", "path": "corpus/ihc_tiles", "modality": "pathology",
             "patient_namespace": "skimage-ihc-slide", "patient_pattern": "(ihc)_",
             "department": "Laboratory Medicine & Pathology", "clinical_task": "Attribute Recognition",
             "body_region": "gastrointestinal tract"},
            {"name": "ihc_coco", "format": "coco", "path": "corpus/ihc_coco", "modality": "pathology",
             "patient_namespace": "skimage-ihc-slide", "patient_pattern": "(ihc)_",
             "department": "Laboratory Medicine & Pathology", "clinical_task": "Cell Recognition",
             "options": {"annotations": "annotations.json", "images_dir": "images"}},
            {"name": "retina_seg", "format": "seg2d", "path": "corpus/retina_seg", "modality": "fundus",
             "patient_pattern": "(retina)_",
             "department": "Ophthalmology", "clinical_task": "Blood Vessels Recognition", "body_region": "eye",
             "label_map": {"1": "retinal vessels"},
             "options": {"images_dir": "images", "masks_dir": "masks", "min_region_size": 64}},
        ],
        "generation": {"kinds": {"caption": 1, "region_caption": 1, "perception_qa": 2, "instruction_qa": 2,
                                 "conversation": 1}, "languages": ["en", "zh"], "zh_share": 0.3,
                       "label_zh": {"FHL2 high expression": "FHL2高表达", "FHL2 low expression": "FHL2低表达"},
                       "options": {"max_regions": 4}},
        "curation": {"splits": {"train": 0.8, "val": 0.1, "test": 0.1}, "dedup": True},
        "exports": ["llava", "messages", "parquet", "mixture", "card"],
    }
