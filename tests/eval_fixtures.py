"""Fixture writers for the medical VQA benchmarks: each ``write_<name>(root, **kw) -> Path`` creates a small
copy of one benchmark in its published layout (file names, folders, field names, column order, image
encodings; see docs /work/shared/BENCHMARKS.md) and returns the ``data_dir`` to pass to the loader's ``load``.

Images are real medical images from installed packages (pydicom test files, pydicom-data, scikit-image,
nilearn), reduced to small fixed sizes listed in ``IMAGE_SIZES`` so tests can check that an item's image
decodes to the right size. The question/answer rows of every fixture are module-level tables, so tests can
compare loaded items with what was written. Importable by any test: ``from eval_fixtures import write_slake``.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------------- images

# name -> (width, height) of the fixture image (after reduction)
IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "ct_chest": (128, 128),  # pydicom CT_small.dcm, native size
    "mr_head": (96, 96),  # pydicom-data MR-SIEMENS-DICOM-WithOverlays.dcm
    "xray_chest": (64, 68),  # pydicom-data RG1_UNCI.dcm (1841 x 1955)
    "xray_hand": (60, 60),  # pydicom-data RG3_UNCI.dcm
    "us": (80, 60),  # pydicom-data US1_UNCI.dcm, RGB
    "ct_liver": (72, 72),  # pydicom-data liver.dcm, first frame
    "mr_small": (64, 64),  # pydicom-data emri_small.dcm, first frame, native size
    "fundus": (88, 88),  # skimage.data.retina()
    "pathology": (100, 100),  # skimage.data.immunohistochemistry()
    "microscopy": (102, 102),  # skimage.data.microaneurysms(), native size
    "mr_brain": (99, 117),  # nilearn MNI152 template (2 mm), axial mid-slice, native size
}


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Scale a grey image to uint8 between its 1st and 99th percentile."""
    a = a.astype(np.float64)
    lo, hi = np.percentile(a, 1), np.percentile(a, 99)
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def _dicom(name: str, frame: int | None = None) -> np.ndarray:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    arr = dcmread(get_testdata_file(name)).pixel_array
    if frame is not None:
        arr = arr[frame]
    return arr


def _mni_slice() -> np.ndarray:
    from nilearn.datasets import load_mni152_template

    vol = np.asarray(load_mni152_template(resolution=2).get_fdata())
    return np.flipud(vol[:, :, vol.shape[2] // 2].T)  # rows = anterior..posterior, cols = left..right


_SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "ct_chest": lambda: _dicom("CT_small.dcm"),
    "mr_head": lambda: _dicom("MR-SIEMENS-DICOM-WithOverlays.dcm"),
    "xray_chest": lambda: _dicom("RG1_UNCI.dcm"),
    "xray_hand": lambda: _dicom("RG3_UNCI.dcm"),
    "us": lambda: _dicom("US1_UNCI.dcm"),
    "ct_liver": lambda: _dicom("liver.dcm", 0),
    "mr_small": lambda: _dicom("emri_small.dcm", 0),
    "fundus": lambda: __import__("skimage.data", fromlist=["retina"]).retina(),
    "pathology": lambda: __import__("skimage.data", fromlist=["immunohistochemistry"]).immunohistochemistry(),
    "microscopy": lambda: __import__("skimage.data", fromlist=["microaneurysms"]).microaneurysms(),
    "mr_brain": _mni_slice,
}


@lru_cache(maxsize=None)
def medical_image(name: str) -> Image.Image:
    """A real medical image from an installed package, reduced to ``IMAGE_SIZES[name]`` (mode L or RGB)."""
    arr = _SOURCES[name]()
    if arr.ndim == 2 or arr.dtype != np.uint8:
        arr = _to_uint8(arr) if arr.ndim == 2 else arr.astype(np.uint8)
    img = Image.fromarray(arr)
    size = IMAGE_SIZES[name]
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    return img


def image_bytes(name: str, fmt: str = "JPEG") -> bytes:
    """Encoded bytes (JPEG or PNG) of fixture image ``name``."""
    buf = io.BytesIO()
    img = medical_image(name)
    if fmt == "JPEG":
        img.convert("RGB").save(buf, format="JPEG", quality=90)
    else:
        img.save(buf, format=fmt)
    return buf.getvalue()


def _save(path: Path, name: str, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(name, fmt))


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=4), encoding="utf-8")


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _image_struct(name: str, fmt: str, path: str | None = None) -> dict[str, Any]:
    """The Hugging Face parquet image cell: ``{"bytes": ..., "path": ...}``."""
    return {"bytes": image_bytes(name, fmt), "path": path}



def _parquet(path: Path, columns: dict[str, list[Any]], image_cols: tuple[str, ...] = ()) -> None:
    """Write a parquet file with the given column order; ``image_cols`` are struct<bytes, path> columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    img_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    arrays, fields = [], []
    for col, values in columns.items():
        typ = img_type if col in image_cols else None
        arr = pa.array(values, type=typ) if typ is not None else pa.array(values)
        arrays.append(arr)
        fields.append(pa.field(col, arr.type))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), path)


# --------------------------------------------------------------------------------------------- VQA-RAD

# (qid, image_name, image key, organ, question, answer, answer_type, question_type, phrase_type)
VQA_RAD_TEST = [
    (1, "synpic54610.jpg", "mr_head", "HEAD", "are regions of the brain infarcted?", "yes", "CLOSED", "PRES", "freeform"),
    (2, "synpic29265.jpg", "xray_chest", "CHEST", "what is the modality of this image?", "x-ray", "OPEN", "MODALITY", "freeform"),
    (3, "synpic42202.jpg", "ct_chest", "CHEST", "is there a pneumothorax?", "no", "CLOSED", "PRES", "freeform"),
    (4, "synpic31232.jpg", "ct_liver", "ABD", "which organ is abnormal?", "liver", "OPEN", "ORGAN", "para"),
    (5, "synpic29265.jpg", "xray_chest", "CHEST", "is the heart enlarged?", "no", "CLOSED", "SIZE", "para"),
    (6, "synpic100176.jpg", "mr_small", "HEAD", "what plane is this image in?", "axial", "OPEN", "PLANE", "freeform"),
    (7, "synpic42202.jpg", "ct_chest", "CHEST", "is this a ct or an mri?", "ct", "CLOSED", "MODALITY", "freeform"),
    (8, "synpic31232.jpg", "ct_liver", "ABD", "how many lesions are seen?", "2", "OPEN", "COUNT", "freeform"),
]
VQA_RAD_TRAIN = [
    (101, "synpic12345.jpg", "xray_hand", "HAND", "is there a fracture?", "no", "CLOSED", "ABN", "freeform"),
    (102, "synpic12345.jpg", "xray_hand", "HAND", "what bone is shown?", "metacarpal", "OPEN", "ORGAN", "para"),
]


def _rad_record(r: tuple, capitalise: bool = False) -> dict[str, Any]:
    qid, img, _, organ, q, a, at, qt, pt = r
    if capitalise:
        q, a = q[0].upper() + q[1:], (a[0].upper() + a[1:]) if a[0].isalpha() else a
    return {"qid": qid, "image_name": img, "answer": a, "answer_type": at, "question_type": qt,
            "question": q, "phrase_type": pt}


def write_vqa_rad(root: Path, layout: str = "mevf") -> Path:
    """VQA-RAD in one of three layouts: "mevf" (``data_RAD/testset.json`` + ``images/``), "parquet"
    (``vqa-rad/data/{train,test}-00000-of-00001-<hash>.parquet``, no answer type) or "original"
    (``VQA_RAD/VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/``; test rows are the
    ``test_freeform``/``test_para`` phrase types, answers capitalised, one numeric answer stored as a JSON int)."""
    root = Path(root)
    if layout == "mevf":
        d = root / "data_RAD"
        _write_json(d / "testset.json", [_rad_record(r) for r in VQA_RAD_TEST])
        _write_json(d / "trainset.json", [_rad_record(r) for r in VQA_RAD_TRAIN])
        for r in VQA_RAD_TEST + VQA_RAD_TRAIN:
            _save(d / "images" / r[1], r[2])
        return d
    if layout == "parquet":
        d = root / "vqa-rad"
        for split, rows, h in (("test", VQA_RAD_TEST, "e5bc3d208bb4deeb"), ("train", VQA_RAD_TRAIN, "eb8844602202be60")):
            _parquet(d / "data" / f"{split}-00000-of-00001-{h}.parquet",
                     {"image": [_image_struct(r[2], "JPEG") for r in rows],
                      "question": [r[4] for r in rows], "answer": [r[5] for r in rows]}, image_cols=("image",))
        return d
    if layout == "original":
        d = root / "VQA_RAD"
        recs = []
        for test, rows in ((False, VQA_RAD_TRAIN), (True, VQA_RAD_TEST)):
            for r in rows:
                b = _rad_record(r, capitalise=True)
                ans: Any = int(b["answer"]) if b["answer"].isdigit() else b["answer"]
                recs.append({
                    "qid": b["qid"], "phrase_type": ("test_" if test else "") + b["phrase_type"],
                    "qid_linked_id": f"{b['qid']:08x}-0000-4000-8000-000000000000",
                    "image_case_url": f"https://medpix.nlm.nih.gov/case?id={r[1][6:-4]}",
                    "image_name": r[1], "image_organ": r[3], "evaluation": "given",
                    "question": b["question"], "question_rephrase": "NULL", "question_relation": "NULL",
                    "question_frame": "NULL", "question_type": b["question_type"], "answer": ans,
                    "answer_type": b["answer_type"]})
        _write_json(d / "VQA_RAD Dataset Public.json", recs)
        for r in VQA_RAD_TEST + VQA_RAD_TRAIN:
            _save(d / "VQA_RAD Image Folder" / r[1], r[2])
        return d
    raise ValueError(f"unknown VQA-RAD layout {layout!r}")


# ----------------------------------------------------------------------------------------------- SLAKE

# (img_id, image key, question, answer, q_lang, location, modality, answer_type, content_type, base_type, qid)
SLAKE_TEST = [
    (1, "mr_brain", "What modality is used to take this image?", "MRI", "en", "Brain", "MRI", "OPEN", "Modality", "vqa", 11),
    (1, "mr_brain", "Is this a transverse section?", "Yes", "en", "Brain", "MRI", "CLOSED", "Plane", "vqa", 12),
    (2, "ct_chest", "Which is bigger in this image, left lung or right lung?", "Right Lung", "en", "Chest_lung", "CT", "CLOSED", "Size", "vqa", 13),
    (2, "ct_chest", "In which plane is this image scanned?", "Transverse Plane", "en", "Chest_lung", "CT", "OPEN", "Plane", "vqa", 14),
    (3, "xray_chest", "Does the picture contain heart?", "No", "en", "Chest_heart", "X-Ray", "CLOSED", "Organ", "vqa", 15),
    (3, "xray_chest", "What is the function of the organ on the left side of this image?", "Breathe", "en", "Chest_lung", "X-Ray", "OPEN", "KG", "kvqa", 16),
    (1, "mr_brain", "这张图片是用什么成像方式拍摄的?", "核磁共振", "zh", "脑", "MRI", "OPEN", "Modality", "vqa", 17),
    (2, "ct_chest", "这张图片包含肝脏吗?", "不包含", "zh", "胸腔_肺", "CT", "CLOSED", "Organ", "vqa", 18),
    (3, "xray_chest", "图中有肺吗?", "是的", "zh", "胸腔_肺", "X-Ray", "CLOSED", "Organ", "vqa", 19),
    (4, "ct_liver", "肝脏在图像的哪个位置?", "左上", "zh", "腹部", "CT", "OPEN", "Position", "vqa", 20),
]
SLAKE_TRAIN = [
    (4, "ct_liver", "Where is the liver?", "Left", "en", "Abdomen", "CT", "OPEN", "Position", "vqa", 1),
]
SLAKE_VALIDATE = [
    (4, "ct_liver", "Is this an abdominal CT?", "Yes", "en", "Abdomen", "CT", "CLOSED", "Modality", "vqa", 5),
]


def _slake_record(r: tuple) -> dict[str, Any]:
    img_id, _, q, a, lang, loc, mod, at, ct, bt, qid = r
    return {"img_id": img_id, "img_name": f"xmlab{img_id}/source.jpg", "question": q, "answer": a,
            "q_lang": lang, "location": loc, "modality": mod, "answer_type": at, "base_type": bt,
            "content_type": ct, "triple": ["vhead", "_", "_"], "qid": qid}


def write_slake(root: Path, layout: str = "slake1.0") -> Path:
    """SLAKE: "slake1.0" (``Slake1.0/{train,validate,test}.json`` + ``imgs/xmlab<N>/source.jpg``) or "hub"
    (``SLAKE/{train,validation,test}.json`` + ``imgs.zip`` holding ``imgs/xmlab<N>/source.jpg``)."""
    root = Path(root)
    images = {r[0]: r[1] for r in SLAKE_TEST + SLAKE_TRAIN + SLAKE_VALIDATE}
    val_name = {"slake1.0": "validate.json", "hub": "validation.json"}
    if layout not in val_name:
        raise ValueError(f"unknown SLAKE layout {layout!r}")
    d = root / ("Slake1.0" if layout == "slake1.0" else "SLAKE")
    _write_json(d / "test.json", [_slake_record(r) for r in SLAKE_TEST])
    _write_json(d / "train.json", [_slake_record(r) for r in SLAKE_TRAIN])
    _write_json(d / val_name[layout], [_slake_record(r) for r in SLAKE_VALIDATE])
    if layout == "slake1.0":
        for img_id, key in sorted(images.items()):
            _save(d / "imgs" / f"xmlab{img_id}" / "source.jpg", key)
            _write_json(d / "imgs" / f"xmlab{img_id}" / "detection.json", [])
    else:
        with zipfile.ZipFile(d / "imgs.zip", "w", zipfile.ZIP_DEFLATED) as z:
            for img_id, key in sorted(images.items()):
                z.writestr(f"imgs/xmlab{img_id}/source.jpg", image_bytes(key))
                z.writestr(f"imgs/xmlab{img_id}/detection.json", "[]")
    return d


# --------------------------------------------------------------------------------------------- PathVQA

# (image key, question, answer) per split; test is written as two shards
PATHVQA_TEST = [
    ("pathology", "is there immunohistochemical staining?", "yes"),
    ("pathology", "what does this image show?", "brown staining of tumour cells"),
    ("microscopy", "are microaneurysms present?", "yes"),
    ("microscopy", "is the retina normal?", "no"),
    ("pathology", "how are the nuclei stained?", "hematoxylin"),
    ("fundus", "what is present?", "optic disc"),
]
PATHVQA_VALIDATION = [("pathology", "is this a section of lymph node?", "no")]
PATHVQA_TRAIN = [("microscopy", "does this image show vessels?", "yes")]


def write_pathvqa(root: Path) -> Path:
    """PathVQA parquet copy: ``path-vqa/data/{split}-0000k-of-0000n.parquet``, columns image, question, answer."""
    d = Path(root) / "path-vqa"

    def shard(name: str, rows: list[tuple]) -> None:
        _parquet(d / "data" / name, {"image": [_image_struct(r[0], "JPEG") for r in rows],
                                     "question": [r[1] for r in rows], "answer": [r[2] for r in rows]},
                 image_cols=("image",))

    shard("test-00000-of-00002.parquet", PATHVQA_TEST[:3])
    shard("test-00001-of-00002.parquet", PATHVQA_TEST[3:])
    shard("validation-00000-of-00001.parquet", PATHVQA_VALIDATION)
    shard("train-00000-of-00001.parquet", PATHVQA_TRAIN)
    return d


# --------------------------------------------------------------------------------------------- PMC-VQA

# (Figure_path, image key, caption, question, [choices A..D], answer letter)
PMC_VQA_ROWS = [
    ("PMC8253867_Fig1_41.jpg", "ct_chest", "Axial CT of the chest.", "What imaging modality was used?",
     ["CT scan", "MRI", "Ultrasound", "PET"], "A"),
    ("PMC7451187_F2_12.jpg", "us", "Ultrasound of the liver.", "What does the image show?",
     ["Diffuse uptake pattern", "A hypoechoic lesion", "Normal tissue", "Calcification"], "B"),
    ("PMC6522111_fig3_7.jpg", "pathology", "IHC staining.", "Which stain was used in this section?",
     ["Hematoxylin only", "Gram stain", "Immunohistochemistry", "Silver stain"], "C"),
    ("PMC5123456_F1_3.jpg", "mr_brain", "T1 template.", "Which organ is shown?",
     ["Liver", "Kidney", "Heart", "Brain"], "D"),
]
PMC_VQA_CLEAN = (0, 1, 2)  # rows kept in test_clean.csv (test.csv has all)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_pmc_vqa(root: Path, version: str = "v1", extracted: bool = False) -> Path:
    """PMC-VQA. v1: ``test_clean.csv`` (3 rows) and ``test.csv`` (4 rows) with choices prefixed ``A:`` (the
    later ones with a leading space, `` B:``) and ``images.zip`` (``images/<Figure_path>``); v2: ``test_2.csv``
    (unnamed index, Figure_path, Caption, Question, Choice A..D, Answer letter, split) and ``images_2.zip``
    (``figures/<Figure_path>``). ``extracted=True`` writes the image folder instead of the zip."""
    d = Path(root) / "PMC-VQA"
    letters = "ABCD"
    folder = "images" if version == "v1" else "figures"
    if version == "v1":
        header = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]

        def row(r: tuple) -> list[Any]:
            ch = [f"{'' if i == 0 else ' '}{L}:{t}" for i, (L, t) in enumerate(zip(letters, r[4]))]
            return [r[0], r[3], r[4][letters.index(r[5])], *ch, r[5]]

        _write_csv(d / "test.csv", header, [row(r) for r in PMC_VQA_ROWS])
        _write_csv(d / "test_clean.csv", header, [row(PMC_VQA_ROWS[i]) for i in PMC_VQA_CLEAN])
    elif version == "v2":
        header = ["", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C", "Choice D", "Answer", "split"]
        rows = [[i, r[0], r[2], r[3], *[f"{L}:{t}" for L, t in zip(letters, r[4])], r[5], "test"]
                for i, r in enumerate(PMC_VQA_ROWS)]
        _write_csv(d / "test_2.csv", header, rows)
    else:
        raise ValueError(f"unknown PMC-VQA version {version!r}")
    if extracted:
        for r in PMC_VQA_ROWS:
            _save(d / folder / r[0], r[1])
    else:
        with zipfile.ZipFile(d / ("images.zip" if version == "v1" else "images_2.zip"), "w") as z:
            for r in PMC_VQA_ROWS:
                z.writestr(f"{folder}/{r[0]}", image_bytes(r[1]))
    return d


# ------------------------------------------------------------------------------------------ OmniMedVQA

# dataset -> (access, modality_type, rows of (file, image key, question_type, question, options, gt index))
OMNIMEDVQA = {
    "ACRIMA": ("Open-access", "Fundus Photography", [
        ("Im001_ACRIMA.png", "fundus", "Disease Diagnosis", "Is there glaucoma in this fundus image?",
         ["No, it's normal.", "Yes, glaucoma"], 1),
        ("Im002_ACRIMA.png", "fundus", "Modality Recognition", "What imaging modality is this?",
         ["CT", "Fundus photography", "X-ray", "MRI"], 1),
    ]),
    "Chest CT Scan": ("Open-access", "CT(Computed Tomography)", [
        ("test/normal/6.png", "ct_chest", "Anatomy Identification", "Which organ is shown in this image?",
         ["Lung", "Liver", "Kidney"], 0),
        ("test/normal/7.png", "ct_liver", "Disease Diagnosis", "What abnormality is seen?",
         ["Adenocarcinoma", "No abnormality", "Squamous cell carcinoma", "Large cell carcinoma"], 1),
    ]),
    "AIDA": ("Restricted-access", "Endoscopy", [
        ("img_01.png", "us", "Other Biological Attributes", "What is the tissue type?",
         ["Mucosa", "Muscle"], 0),
        ("img_02.png", "pathology", "Lesion Grading", "What grade is the lesion?",
         ["Grade 1", "Grade 2", "Grade 3", "Grade 4"], 2),
    ]),
}


def write_omnimedvqa(root: Path, restricted_images: bool = False) -> Path:
    """OmniMedVQA: ``OmniMedVQA/QA_information/{Open-access,Restricted-access}/<dataset>.json`` and
    ``Images/<dataset>/<file>``. Restricted images are not redistributed: by default only the open-access
    images are written (``restricted_images=True`` writes them too)."""
    d = Path(root) / "OmniMedVQA"

    for ds, (access, modality, rows) in OMNIMEDVQA.items():
        items = []
        for k, (fname, key, qtype, q, opts, gt) in enumerate(rows):
            rel = f"Images/{ds}/{fname}"
            item = {"dataset": ds, "question_id": f"{ds}_{k:04d}", "question_type": qtype, "question": q,
                    "gt_answer": opts[gt], "image_path": rel}
            item.update({f"option_{L}": t for L, t in zip("ABCD", opts)})
            item["modality_type"] = modality
            items.append(item)
            if access == "Open-access" or restricted_images:
                _save(d / rel, key, "PNG")

        _write_json(d / "QA_information" / access / f"{ds}.json", items)
    return d


# ---------------------------------------------------------------------------------------- GMAI-MMBench

# (index, image key or None = back-reference to the previous row, question, options, answer, task, department,
#  granularity, modality)
GMAI_ROWS = [
    (0, "ct_chest", "Which organ is highlighted in this CT image?", ["Lung", "Liver", "Heart", "Spleen"], "A",
     "Organ Recognition - Thorax", "Pulmonary Medicine", "image level", "CT"),
    (1, None, "Is the finding in this CT image normal?", ["Normal", "Pneumonia", "Nodule", "Effusion"], "A",
     "Disease Diagnosis", "Pulmonary Medicine", "image level", "CT"),
    (2, "fundus", "What is the severity grade of diabetic retinopathy in this fundus image?",
     ["No DR", "Mild", "Moderate", "Severe", "Proliferative"], "C", "Severity Grading", "Ophthalmology",
     "image level", "Fundus"),
    (3, "pathology", "Which cell type is inside the box in this pathology image?",
     ["Lymphocyte", "Tumour cell", "Stroma"], "B", "Cell Recognition", "Laboratory Medicine & Pathology",
     "box level", "Pathology"),
    (4, None, "What staining is used in this pathology image?", ["IHC", "H&E"], "A",
     "Attribute Recognition", "Laboratory Medicine & Pathology", "image level", "Pathology"),
    (5, "mr_brain", "Which structure is outlined by the contour in this MR image?",
     ["Ventricle", "Cerebellum", "Brain stem", "Thalamus"], "A", "Nervous Tissue", "Neurosurgery",
     "contour level", "MR"),
]


def _b64(key: str) -> str:
    return base64.b64encode(image_bytes(key, "PNG")).decode("ascii")


def gmai_tsv(path: Path, rows: list[tuple], with_answer: bool, header_case: str = "lower",
             with_modality: bool = True) -> None:
    """Write GMAI-MMBench-style TSV rows (also used by tests of bench-build output)."""
    groups = ["clinical vqa task", "department", "perceptual granularity"] + (["modality"] if with_modality else [])
    if header_case == "title":
        groups = [g.title().replace("Vqa", "VQA") for g in groups]
    header = ["index", "image", "question", "A", "B", "C", "D", "E"] + (["answer"] if with_answer else []) \
        + ["category"] + groups
    out, last_full = [], None
    for r in rows:
        idx, key, q, opts, ans, task, dep, gran, mod = r
        if key is not None:
            last_full = idx
        image = _b64(key) if key is not None else str(last_full)
        opt_cells = [opts[i] if i < len(opts) else "" for i in range(5)]
        out.append([str(idx), image, q, *opt_cells] + ([ans] if with_answer else []) + [task, task, dep, gran]
                   + ([mod] if with_modality else []))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:  # like pandas DataFrame.to_csv(sep="\t")
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(out)


def gmai_image_key(index: int) -> str:
    """Fixture image key actually shown by GMAI row ``index`` (resolving back-references)."""
    key = None
    for r in GMAI_ROWS:
        key = r[1] if r[1] is not None else key
        if r[0] == index:
            return key  # type: ignore[return-value]
    raise KeyError(index)


def write_gmai_mmbench(root: Path, split: str = "VAL", parts: int = 3, header_case: str = "lower") -> Path:
    """GMAI-MMBench VLMEvalKit TSVs in ``GMAI-MMBench/``: VAL = ``GMAI-MMBench_VAL.tsv`` (with answers);
    TEST = ``GMAI_mm_bench_TEST_part_<k>.tsv`` (k = 1..parts, no answer column). Images are base64 PNG;
    rows 1 and 4 carry the index of an earlier row instead of an image."""
    d = Path(root) / "GMAI-MMBench"
    if split == "VAL":
        gmai_tsv(d / "GMAI-MMBench_VAL.tsv", GMAI_ROWS, with_answer=True, header_case=header_case)
    elif split == "TEST":
        chunks = [GMAI_ROWS[0:2], GMAI_ROWS[2:5], GMAI_ROWS[5:]]
        for k in range(parts):
            rows = chunks[k] if k < len(chunks) else []
            if rows:
                gmai_tsv(d / f"GMAI_mm_bench_TEST_part_{k + 1}.tsv", rows, with_answer=False, header_case=header_case)
    else:
        raise ValueError(f"unknown GMAI-MMBench split {split!r}")
    return d


# ------------------------------------------------------------------------------------------------ MMMU

MMMU_SUBJECTS = ["Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                 "Pharmacy", "Public_Health"]
# subject -> rows of (n, question, options list or None for open, answer, question_type, image keys, img_type)
MMMU_ROWS: dict[str, list[tuple]] = {
    "Basic_Medical_Science": [
        (1, "<image 1> The tissue shown is stained with which technique?", ["H&E", "IHC", "Gram", "PAS"], "B",
         "multiple-choice", ["pathology"], "['Microscopic Images']"),
        (2, "Compare <image 1> and <image 2>. Which shows microaneurysms?",
         ["<image 1>", "<image 2>", "Both", "Neither", "Cannot tell", "Not applicable"], "F", "multiple-choice",
         ["fundus", "microscopy"], "['Medical Images']"),
    ],
    "Clinical_Medicine": [
        (1, "What is the imaging modality of <image 1>?", ["CT", "MRI", "Ultrasound"], "A", "multiple-choice",
         ["ct_chest"], "['CT scans']"),
    ],
    "Diagnostics_and_Laboratory_Medicine": [
        (1, "How many frames does the study of <image 1> contain? Give a number.", None, "10", "open",
         ["mr_small"], "['MRI']"),
    ],
    "Pharmacy": [
        (12, "Which drug class is shown in the structure <image 1>?", ["Beta blocker", "Statin"], "A",
         "multiple-choice", ["us"], "['Chemical Structures']"),
    ],
    "Public_Health": [
        (1, "In the chart <image 1>, which option is correct?", None, "B", "open", ["xray_chest"], "['Plots and Charts']"),
    ],
}
MMMU_MALICIOUS_OPTIONS = "__import__('os').system('touch MMMU_PWNED')"


def write_mmmu_med(root: Path, malicious: bool = False) -> Path:
    """MMMU Health & Medicine: ``MMMU/<Subject>/{dev,validation,test}-00000-of-00001.parquet`` with columns
    id, question, options (a string holding a Python list), explanation, image_1..image_7 (image structs,
    null when absent), img_type, answer, topic_difficulty, question_type, subfield. Test answers are "?".
    ``malicious=True`` adds a Pharmacy validation row whose ``options`` is code, not a literal."""
    d = Path(root) / "MMMU"
    for subj in MMMU_SUBJECTS:
        for split in ("dev", "validation", "test"):
            rows = MMMU_ROWS[subj] if split != "dev" else MMMU_ROWS[subj][:1]
            recs = []
            for n, q, opts, ans, qtype, keys, img_type in rows:
                recs.append({"id": f"{split}_{subj}_{n}", "question": q, "options": repr(opts or []),
                             "explanation": "", "images": keys, "img_type": img_type,
                             "answer": "?" if split == "test" else ans, "topic_difficulty": "Medium",
                             "question_type": qtype, "subfield": subj.replace("_", " ")})
            if malicious and subj == "Pharmacy" and split == "validation":
                recs.append({"id": f"validation_{subj}_99", "question": "Bad row <image 1>",
                             "options": MMMU_MALICIOUS_OPTIONS, "explanation": "", "images": ["us"],
                             "img_type": "['Other']", "answer": "A", "topic_difficulty": "Easy",
                             "question_type": "multiple-choice", "subfield": "Pharmacology"})
            cols: dict[str, list[Any]] = {c: [r[c] for r in recs] for c in ("id", "question", "options", "explanation")}
            for k in range(1, 8):
                cols[f"image_{k}"] = [_image_struct(r["images"][k - 1], "PNG", f"{r['id']}_{k}.png")
                                      if k <= len(r["images"]) else None for r in recs]
            for c in ("img_type", "answer", "topic_difficulty", "question_type", "subfield"):
                cols[c] = [r[c] for r in recs]
            _parquet(d / subj / f"{split}-00000-of-00001.parquet", cols,
                     image_cols=tuple(f"image_{k}" for k in range(1, 8)))
    return d


# ------------------------------------------------------------------------------------------ MedXpertQA

# (id, stem, options A..E, label, image keys, medical_task, body_system, question_type)
MEDXPERTQA_ROWS = [
    ("MM-1682", "A 54-year-old presents with dyspnea. What is the most likely finding on this chest CT?",
     ["Pneumothorax", "Pleural effusion", "Normal lung parenchyma", "Consolidation", "Mass"], "C",
     ["ct_chest"], "Diagnosis", "Respiratory", "Reasoning"),
    ("MM-17", "Fundus images of a diabetic patient are shown. What is the next best step?",
     ["Observation", "Laser photocoagulation", "Anti-VEGF injection", "Vitrectomy", "Steroids"], "C",
     ["fundus", "microscopy"], "Treatment", "Nervous", "Reasoning"),
    ("MM-300", "A biopsy is shown. Which marker is stained?",
     ["CD3", "CD20", "Ki-67", "HER2", "Cytokeratin"], "D", ["pathology"], "Basic Science", "Integumentary",
     "Understanding"),
]


def write_medxpertqa(root: Path) -> Path:
    """MedXpertQA multimodal: ``MedXpertQA/MM/{test,dev}.jsonl`` and ``MedXpertQA/images/<file>``; every
    question already ends with ``Answer Choices: (A) ... (E) ...``."""
    d = Path(root) / "MedXpertQA"

    def rec(r: tuple) -> dict[str, Any]:
        rid, stem, opts, label, keys, task, system, qtype = r
        choices = " ".join(f"({L}) {t}" for L, t in zip("ABCDE", opts))
        files = [f"{rid}-{chr(ord('a') + i)}.jpeg" for i in range(len(keys))]
        for f, k in zip(files, keys):
            _save(d / "images" / f, k)
        return {"id": rid, "question": f"{stem}\nAnswer Choices: {choices}", "options": dict(zip("ABCDE", opts)),
                "label": label, "images": files, "medical_task": task, "body_system": system,
                "question_type": qtype}

    _write_jsonl(d / "MM" / "test.jsonl", [rec(r) for r in MEDXPERTQA_ROWS])
    _write_jsonl(d / "MM" / "dev.jsonl", [rec(MEDXPERTQA_ROWS[0])])
    return d


# ---------------------------------------------------------------------------------------- medvl build

# (id, image key, kind, lang, split, user text, assistant text, meta)
MEDVL_SAMPLES = [
    ("2d#cls#CT#demo#img1#normal#a.png#perception_qa#en#0", "ct_chest", "perception_qa", "en", "test",
     "<image>\nWhat modality is this image?", "This is a <ref>CT</ref> image.",
     {"modality": "CT", "department": "Pulmonary Medicine", "dataset": "demo", "clinical_task": "Organ Recognition - Thorax"}),
    ("2d#det#CT#demo#img2#nodule#b.png#perception_qa#en#0", "ct_liver", "perception_qa", "en", "test",
     "<image>\nWhere is the liver in this CT image?", "<ref>liver</ref><box>[[0.10, 0.20, 0.60, 0.70]]</box>",
     {"modality": "CT", "department": "Gastroenterology & Hepatology", "dataset": "demo"}),
    ("2d#cls#fundus#demo#img3#dr#c.png#instruction_qa#en#0", "fundus", "instruction_qa", "en", "test",
     "<image>\nWhich grade of diabetic retinopathy is shown?\nA. No DR\nB. Mild\nC. Moderate\nD. Severe\n"
     "Answer with the option's letter and name.", "The answer is C. Moderate.", {"modality": "fundus", "department": "Ophthalmology", "dataset": "demo"}),
    ("2d#cls#fundus#demo#img3#dr#c.png#instruction_qa#zh#1", "fundus", "instruction_qa", "zh", "test",
     "<image>\n这张眼底图像是否正常?", "不是。这张图像的标签是中度，而不是正常。", {"modality": "fundus", "department": "Ophthalmology", "dataset": "demo"}),
    ("2d#cls#CT#demo#img1#normal#a.png#instruction_qa#en#1", "ct_chest", "instruction_qa", "en", "test",
     "<image>\nIs the lung visible in this CT image?", "Yes. The image is labelled lung.",
     {"modality": "CT", "department": "Pulmonary Medicine", "dataset": "demo"}),
    ("2d#cls#CT#demo#img4#normal#d.png#caption#en#0", "ct_chest", "caption", "en", "test",
     "<image>\nDescribe this image.", "An axial chest CT.", {"modality": "CT", "dataset": "demo"}),
    ("2d#cls#MR#demo#img5#normal#e.png#perception_qa#en#0", "mr_brain", "perception_qa", "en", "train",
     "<image>\nWhat modality is this?", "MR", {"modality": "MR", "dataset": "demo"}),
]


def write_medvl_build(root: Path) -> Path:
    """A minimal ``medvl build`` output folder: ``samples.jsonl`` (one Sample dict per line) and the PNG
    images under ``images/`` it refers to."""
    d = Path(root) / "medvl_out"
    lines = []
    for sid, key, kind, lang, split, q, a, meta in MEDVL_SAMPLES:
        rel = f"images/{key}.png"
        _save(d / rel, key, "PNG")
        lines.append({"id": sid, "images": [rel], "turns": [{"role": "user", "text": q},
                      {"role": "assistant", "text": a}], "kind": kind, "lang": lang, "record_id": sid.split("#" + kind)[0],
                      "generator": "template", "template_id": None, "split": split, "meta": meta})
    _write_jsonl(d / "samples.jsonl", lines)
    return d
