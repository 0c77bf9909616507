"""Test helpers for the figure_caption source: real figure images from installed packages, written in the three
published layouts, and a small real medical-vs-chart classifier usable as ``image_classifier:
figure_helpers:white_background_classifier``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# captions in the style of the published files (LLaVA-Med's few-shot examples, PMC-OA sub-captions)
CT_CAPTION = ("Contrast-enhanced CT scan of the chest. A large cavitating lesion was identified in the right upper "
              "lobe with pleural involvement and hilar lymphadenopathy, suggesting a primary malignant tumor.")
MR_CAPTION = ("Axial T2-weighted MRI of the brain shows a hyperintense lesion in the left temporal lobe with "
              "perilesional edema, consistent with glioma.")
RETINA_CAPTION = ("Fundus photograph of the right eye showing optic disc edema, retinal hemorrhages and macular "
                  "exudates in a patient with hypertensive retinopathy.")
IHC_CAPTION = ("Immunohistochemical staining of breast carcinoma tissue showing microvessel density and "
               "lymphocytes infiltrating the stroma (hematoxylin counterstain, magnification x200).")
PANELS_CAPTION = ("(A) Fundus photograph with optic disc edema and retinal hemorrhages. (B) Immunohistochemical "
                  "staining of the retinal biopsy showing lymphocytes and macrophages. (C) Bar chart of visual "
                  "acuity.")
CHART_CAPTION = "Bar chart of the number of survey responses per year, grouped by region and age group."


def white_background_classifier(array: np.ndarray) -> float:
    """P(medical) from the share of pure-white pixels: plots and charts are drawn on white paper, medical images
    (radiographs, fundus photographs, stained slides) almost never are. Deterministic, numpy only."""
    a = np.asarray(array)
    white = (a >= 250).all(axis=-1) if a.ndim == 3 else a >= 250
    return float(np.clip(1.0 - 2.0 * white.mean(), 0.0, 1.0))


def _dicom_png(name: str, side: int) -> np.ndarray:
    import pydicom
    from pydicom.data import get_testdata_file

    from medvl.io.raster import percentile_to_uint8

    ds = pydicom.dcmread(get_testdata_file(name))
    arr = percentile_to_uint8(ds.pixel_array.astype(np.float32))
    return np.asarray(Image.fromarray(arr).resize((side, side), Image.Resampling.BILINEAR))


def chart() -> np.ndarray:
    """A matplotlib bar chart, 480x360 RGB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.6), dpi=100)
    ax.bar(["2019", "2020", "2021", "2022"], [12, 30, 21, 40], color="tab:blue")
    ax.set_ylabel("responses")
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(fig)
    return rgb


def write_images(folder: Path) -> dict[str, str]:
    """Real medical images (pydicom CT and MR test files rendered at >= 336 px, skimage's retina and
    immunohistochemistry), a chart and a too small image; returns name -> file name."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    ihc = data.immunohistochemistry()
    images = {
        "ct": ("ct.png", _dicom_png("693_UNCI.dcm", 384)),
        "mr": ("mr.jpg", _dicom_png("MR_small.dcm", 352)),
        "retina": ("retina.jpg", np.asarray(Image.fromarray(data.retina()).resize((400, 400)))),
        "ihc": ("ihc.png", ihc),
        "small": ("small.png", ihc[:200, :300]),
        "chart": ("chart.png", chart()),
    }
    for fname, arr in images.values():
        Image.fromarray(arr).save(folder / fname, quality=92) if fname.endswith(".jpg") else \
            Image.fromarray(arr).save(folder / fname)
    return {k: v[0] for k, v in images.items()}


def write_jsonl(path: Path, rows: list) -> None:
    """One JSON value per line; a ``str`` row is written as it is (a malformed line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
