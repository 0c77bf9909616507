"""Source images for ``train_medical_classifier.py``: real medical images that pip packages ship, natural
photographs from scikit-image / scikit-learn / matplotlib, and freshly rendered charts (what PubMedVision's
figure filter removes). Every source is a *group* (one patient scan, one photo, one rendered chart);
``train_medical_classifier.py`` splits by group, so no view of a held-out source is ever trained on.

A source yields base views (uint8 HxW or HxWx3); ``figure_variants`` turns a view into what a paper figure
shows (crops, rescales, flips, white margins, arrows, panel letters, scale bars, JPEG recompression)."""

from __future__ import annotations

import gzip
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from medvl.imaging.window import WINDOW_PRESETS, apply_window


@dataclass(frozen=True)
class Source:
    """One source image or scan: ``group`` is the split unit, ``family`` the modality / chart kind."""
    group: str
    family: str
    medical: bool
    views: Callable[[np.random.Generator], list[np.ndarray]]
    weight: int = 1  # single large images of a family with one or two sources: more (and smaller) crops


def to_uint8(a: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5, invert: bool = False) -> np.ndarray:
    """Percentile normalization of a 2D array (or pass-through of uint8 RGB)."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = np.percentile(a, [lo_pct, hi_pct])
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max()) + 1e-6
    out = np.clip((a - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def _gray_windows(a: np.ndarray, rng: np.random.Generator, n: int, invert: bool = False) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        lo, hi = rng.uniform(0.0, 3.0), rng.uniform(97.0, 100.0)
        v = to_uint8(a, lo, hi, invert)
        if rng.random() < 0.3:  # gamma as a display choice
            v = (255.0 * (v / 255.0) ** rng.uniform(0.6, 1.6) + 0.5).astype(np.uint8)
        out.append(v)
    return out


def _ct_windows(hu: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    names = ["soft_tissue", "lung", "bone", "brain", "mediastinum", "liver"]
    return [apply_window(hu, *WINDOW_PRESETS[names[int(rng.integers(len(names)))]]) for _ in range(n)]


def _slices(vol: np.ndarray, rng: np.random.Generator, n: int, min_side: int = 40) -> list[np.ndarray]:
    """2D slices along all three axes, from the middle 60% of each axis (where the anatomy is)."""
    out = []
    sides = [min(np.delete(vol.shape[:3], ax)) for ax in range(3)]
    axes = [ax for ax in range(3) if sides[ax] >= min(min_side, max(sides))]
    for i in range(n):
        ax = axes[i % len(axes)]
        k = int(rng.uniform(0.2, 0.8) * vol.shape[ax])
        s = np.take(vol, k, axis=ax)
        out.append(np.rot90(s))
    return out


def _dicom(name: str, frame: int | None = None) -> tuple[np.ndarray, object]:
    import pydicom
    from pydicom.data import get_testdata_file
    ds = pydicom.dcmread(get_testdata_file(name))
    a = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        a = apply_color_lut(a, ds)
        a = (a / 256).astype(np.uint8) if a.max() > 255 else a.astype(np.uint8)
    if frame is not None and a.ndim >= 3 and (a.ndim == 4 or a.shape[-1] != 3):
        a = a[frame]
    if ds.PhotometricInterpretation in ("MONOCHROME2", "MONOCHROME1") and hasattr(ds, "RescaleSlope"):
        a = a * float(ds.RescaleSlope) + float(getattr(ds, "RescaleIntercept", 0.0))
    return a, ds


def _ct(names: list[str]) -> Callable[[np.random.Generator], list[np.ndarray]]:
    def views(rng: np.random.Generator) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for nm in names:
            a, _ = _dicom(nm, frame=0)
            out += _ct_windows(np.asarray(a, np.float64), rng, 6)
        return out
    return views


def _gray_dicom(names: list[str], n: int = 6,
                frames: bool = False) -> Callable[[np.random.Generator], list[np.ndarray]]:
    def views(rng: np.random.Generator) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for nm in names:
            a, ds = _dicom(nm)
            inv = getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1"
            planes = [a[i] for i in range(a.shape[0])] if (frames and a.ndim == 3) else [a if a.ndim == 2 else a[0]]
            for p in planes[:: max(1, len(planes) // 4)]:
                out += _gray_windows(p, rng, max(1, n // len(planes[:: max(1, len(planes) // 4)])), inv)
        return out
    return views


def _rgb_dicom(names: list[str], frames: int = 1) -> Callable[[np.random.Generator], list[np.ndarray]]:
    def views(rng: np.random.Generator) -> list[np.ndarray]:
        out = []
        for nm in names:
            a, _ = _dicom(nm)
            if a.ndim == 4:
                out += [np.ascontiguousarray(a[int(i)]) for i in np.linspace(0, len(a) - 1, frames)]
            else:
                out.append(np.ascontiguousarray(a))
        return out
    return views


def _nifti(path: str | Path, n: int = 8, frame: int = 0) -> Callable[[np.random.Generator], list[np.ndarray]]:
    def views(rng: np.random.Generator) -> list[np.ndarray]:
        import nibabel as nib
        vol = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
        if vol.ndim == 4:
            vol = vol[..., frame]
        out = []
        for s in _slices(vol, rng, n):
            out += _gray_windows(s, rng, 1)
        return out
    return views


def _skimage(name: str, gray: bool = False) -> Callable[[np.random.Generator], list[np.ndarray]]:
    def views(rng: np.random.Generator) -> list[np.ndarray]:
        import skimage.data
        a = getattr(skimage.data, name)()
        a = np.asarray(a[0] if isinstance(a, tuple) else a)  # stereo_motorcycle: (left, right, disparity)
        if a.dtype == np.bool_:
            a = a.astype(np.uint8) * 255
        if a.ndim == 3 and a.shape[2] == 4:
            a = a[:, :, :3]
        out = [a]
        if a.ndim == 3 and gray:
            out.append((a @ np.array([0.299, 0.587, 0.114])).astype(np.uint8))
        return out
    return views


def _file_photo(path: Path) -> Callable[[np.random.Generator], list[np.ndarray]]:
    def views(rng: np.random.Generator) -> list[np.ndarray]:
        a = np.asarray(Image.open(path).convert("RGB"))
        return [a, (a @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)]
    return views


def _faces(rng: np.random.Generator) -> list[np.ndarray]:
    import skimage.data
    faces = to_uint8(skimage.data.lfw_subset()[:100], 0, 100)
    out = []
    for _ in range(4):
        idx = rng.choice(len(faces), 16, replace=False)
        rows = [np.concatenate(list(faces[idx[i * 4:(i + 1) * 4]]), axis=1) for i in range(4)]
        out.append(np.concatenate(rows, axis=0))
    return out


def _pywt(name: str) -> Callable[[np.random.Generator], list[np.ndarray]]:
    """PyWavelets' sample photographs (it comes with imagehash), read as data files: no import of pywt."""
    def views(rng: np.random.Generator) -> list[np.ndarray]:
        import importlib.util
        spec = importlib.util.find_spec("pywt")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("PyWavelets (a dependency of imagehash) is not installed")
        with np.load(Path(spec.submodule_search_locations[0]) / "data" / f"{name}.npz") as f:
            return [to_uint8(f["data"], 0, 100)]
    return views


def _optional_pngs(paths: list[Path]) -> Callable[[np.random.Generator], list[np.ndarray]]:
    def views(rng: np.random.Generator) -> list[np.ndarray]:
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths if p.is_file()]
    return views


def _terrain(name: str, key: str) -> Callable[[np.random.Generator], list[np.ndarray]]:
    def views(rng: np.random.Generator) -> list[np.ndarray]:
        import matplotlib
        from matplotlib.colors import LightSource
        with np.load(Path(matplotlib.get_data_path()) / "sample_data" / name) as f:
            z = np.asarray(f[key], np.float64)
        ls = LightSource(azdeg=315, altdeg=45)
        shade = to_uint8(ls.hillshade(z, vert_exag=0.05))
        cm = matplotlib.colormaps["terrain"]((z - z.min()) / (np.ptp(z) + 1e-9))
        return [shade, (cm[:, :, :3] * 255).astype(np.uint8)]
    return views


def _mpl_mri(rng: np.random.Generator) -> list[np.ndarray]:
    import matplotlib
    raw = gzip.open(Path(matplotlib.get_data_path()) / "sample_data" / "s1045.ima.gz").read()
    a = np.frombuffer(raw, np.uint16).reshape(256, 256)
    return _gray_windows(a, rng, 6)


def _dipy_t1(rng: np.random.Generator) -> list[np.ndarray]:
    import dipy
    a = np.load(Path(dipy.__file__).parent / "data" / "files" / "t1_coronal_slice.npy")
    return _gray_windows(a, rng, 6)


def _mni(rng: np.random.Generator) -> list[np.ndarray]:
    import nilearn
    base = Path(nilearn.__file__).parent / "datasets" / "data"
    out = []
    for f, n in [("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", 9),
                 ("mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz", 3),
                 ("mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz", 3)]:
        out += _nifti(base / f, n)(rng)
    return out + _mni_overlays(base, rng, 6)


def _mni_overlays(base: Path, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """fMRI-style figures: nilearn's statistical map (thresholded, hot / jet colours) over the MNI T1."""
    import matplotlib
    import nibabel as nib
    from scipy.ndimage import zoom
    t1 = np.asarray(nib.load(str(base / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).dataobj, np.float64)
    stat = np.asarray(nib.load(str(base / "image_10426.nii.gz")).dataobj, np.float64)
    stat = zoom(np.nan_to_num(stat), np.array(t1.shape) / np.array(stat.shape), order=1)
    out = []
    for i in range(n):
        ax = i % 3
        k = int(rng.uniform(0.35, 0.65) * t1.shape[ax])
        anat = np.rot90(to_uint8(np.take(t1, k, axis=ax))) / 255.0
        sm = np.rot90(np.take(stat, k, axis=ax))
        thr = np.percentile(np.abs(sm), rng.uniform(85, 97))
        cmap = matplotlib.colormaps[str(rng.choice(["hot", "jet", "autumn", "coolwarm"]))]
        col = cmap(np.clip(np.abs(sm) / (np.abs(sm).max() + 1e-9), 0, 1))[:, :, :3]
        rgb = np.repeat(anat[:, :, None], 3, axis=2)
        m = (np.abs(sm) > thr) & (anat > 0.15)
        rgb[m] = col[m]
        out.append((rgb * 255 + 0.5).astype(np.uint8))
    return out


def medical_sources() -> list[Source]:
    """Real medical images, one group per underlying scan (compressed re-encodings share a group)."""
    import dipy
    import nibabel
    dipy_dir = Path(dipy.__file__).parent / "data" / "files"
    nib_dir = Path(nibabel.__file__).parent / "tests" / "data"
    S = Source
    return [
        S("ct_693", "CT", True, _ct(["693_UNCI.dcm"])),
        S("ct_small", "CT", True, _ct(["CT_small.dcm"])),
        S("ct_abdomen_vrun", "CT", True, _ct(["explicit_VR-UN.dcm"])),
        S("ct_head_j2k", "CT", True, _ct(["J2K_pixelrep_mismatch.dcm"])),
        S("ct_enhanced", "CT", True, _gray_dicom(["eCT_Supplemental.dcm"], 6, frames=True)),
        S("mr_siemens_abdomen", "MR", True, _gray_dicom(["MR-SIEMENS-DICOM-WithOverlays.dcm", "examples_overlay.dcm"])),
        S("mr2_knee", "MR", True, _gray_dicom(["MR2_UNCI.dcm"])),
        S("mr_small", "MR", True, _gray_dicom(["MR_small.dcm"])),
        S("mr_emri", "MR", True, _gray_dicom(["emri_small.dcm"], 8, frames=True)),
        S("mr_s1045_mpl", "MR", True, _mpl_mri),
        S("mr_dipy_t1", "MR", True, _dipy_t1),
        S("mr_mni152", "MR", True, _mni),
        S("mr_example4d", "MR", True, _nifti(nib_dir / "example4d.nii.gz", 8)),
        S("mr_dipy_s0", "MR", True, _nifti(dipy_dir / "S0_10slices.nii.gz", 6)),
        S("mr_dipy_aniso", "MR", True, _nifti(dipy_dir / "aniso_vox.nii.gz", 6)),
        S("mr_dipy_piesno", "MR", True, _nifti(dipy_dir / "test_piesno.nii.gz", 6)),
        S("mr_nib_anat", "MR", True, _nifti(nib_dir / "anatomical.nii", 4)),
        S("xr_rg1", "X-ray", True, _gray_dicom(["RG1_UNCI.dcm"])),
        S("xr_rg3", "X-ray", True, _gray_dicom(["RG3_UNCI.dcm"])),
        S("nm_jpeg2000", "NM", True, _gray_dicom(["JPEG2000.dcm"])),
        S("us_lymph_node", "US", True, _rgb_dicom(["US1_UNCI.dcm", "examples_rgb_color.dcm"])),
        S("us_ob_palette", "US", True, _rgb_dicom(["OBXXXX1A.dcm", "examples_palette.dcm"])),
        S("us_doppler_3d", "US", True, _rgb_dicom(["color3d_jpeg_baseline.dcm"], frames=4)),
        S("us_doppler_ybr", "US", True, _rgb_dicom(["examples_ybr_color.dcm"], frames=3)),
        S("us_aloka", "US", True, _rgb_dicom(["gdcm-US-ALOKA-16.dcm"])),
        S("fundus_retina", "fundus", True, _skimage("retina"), 3),
        S("fundus_microaneurysms", "fundus", True, _skimage("microaneurysms")),
        S("path_ihc", "pathology", True, _skimage("immunohistochemistry"), 3),
        S("micro_cell", "microscopy", True, _skimage("cell"), 3),
    ]


def photo_sources() -> list[Source]:
    """Natural photographs and other non-medical rasters (documents, astronomy, terrain, textures)."""
    import matplotlib
    import importlib.util
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    spec = importlib.util.find_spec("sklearn")  # scikit-learn's two sample photographs, read as data files
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-learn (a dependency of nilearn) is not installed")
    skl = Path(spec.submodule_search_locations[0]) / "datasets" / "images"
    out = [Source(f"photo_{n}", "photo", False, _skimage(n, gray=True)) for n in
           ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "stereo_motorcycle"]]
    out += [Source(f"photo_{n}", "photo-gray", False, _skimage(n)) for n in
            ["camera", "coins", "moon", "clock", "brick", "grass", "gravel", "horse"]]
    out += [Source(f"doc_{n}", "document", False, _skimage(n)) for n in ["page", "text"]]
    out += [Source("graphic_colorwheel", "graphic", False, _skimage("colorwheel")),
            Source("graphic_logo", "graphic", False, _skimage("logo"))]
    out += [Source(f"photo_{p.stem}", "photo", False, _file_photo(p)) for p in
            [skl / "china.jpg", skl / "flower.jpg", mpl / "grace_hopper.jpg"]]
    out += [Source("photo_present_mpl", "photo", False, _file_photo(mpl / "Minduka_Present_Blue_Pack.png")),
            Source("graphic_logo_mpl", "graphic", False, _optional_pngs([mpl / "logo2.png"])),
            Source("photo_faces_lfw", "photo-gray", False, _faces)]
    out += [Source(f"photo_{n}_pywt", "photo-gray", False, _pywt(n)) for n in ["aero", "ascent"]]
    out += [Source("terrain_jacksboro", "terrain", False, _terrain("jacksboro_fault_dem.npz", "elevation")),
            Source("terrain_topobathy", "terrain", False, _terrain("topobathy.npz", "topo"))]
    return out


# ---------------------------------------------------------------------------------------------------------
# figure-style variants


def _jpeg(a: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def _annotate(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    d = ImageDraw.Draw(im)
    w, h = im.size
    colour = [(255, 255, 255), (255, 255, 0), (255, 0, 0), (0, 255, 0)][int(rng.integers(4))]
    kind = int(rng.integers(3))
    if kind == 0:  # arrow
        x, y = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        dx, dy = rng.uniform(0.06, 0.15) * w, rng.uniform(0.06, 0.15) * h
        d.line([(x + dx, y + dy), (x, y)], fill=colour, width=max(2, w // 150))
        d.polygon([(x, y), (x + dx * 0.35, y + dy * 0.1), (x + dx * 0.1, y + dy * 0.35)], fill=colour)
    elif kind == 1:  # scale bar
        y = int(h * 0.92)
        d.rectangle([int(w * 0.7), y, int(w * 0.9), y + max(2, h // 80)], fill=colour)
    else:  # panel letter
        d.text((int(w * 0.04), int(h * 0.04)), "ABCDEF"[int(rng.integers(6))], fill=colour,
               font_size=max(12, h // 10))
    return im


def figure_variants(a: np.ndarray, rng: np.random.Generator, n: int, min_crop: float = 0.6) -> list[np.ndarray]:
    """``n`` figure-like variants of one view: crop (sides ``min_crop``-1 of the view), rescale, flip,
    annotation, white margin, JPEG."""
    out = []
    for _ in range(n):
        v = a
        h, w = v.shape[:2]
        if rng.random() < 0.7 and min(h, w) >= 48:
            fh, fw = rng.uniform(min_crop, 1.0), rng.uniform(min_crop, 1.0)
            ch, cw = max(16, int(h * fh)), max(16, int(w * fw))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            v = v[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            v = v[:, ::-1]
        im = Image.fromarray(np.ascontiguousarray(v)).convert("RGB")
        side = rng.uniform(180, 720)
        scale = side / max(im.size)
        im = im.resize((max(8, int(im.size[0] * scale)), max(8, int(im.size[1] * scale))), Image.Resampling.BILINEAR)
        if rng.random() < 0.3:
            im = _annotate(im, rng)
        if rng.random() < 0.2:
            pad = int(rng.uniform(0.02, 0.12) * max(im.size))
            canvas = Image.new("RGB", (im.size[0] + 2 * pad, im.size[1] + 2 * pad), (255, 255, 255))
            canvas.paste(im, (pad, pad))
            im = canvas
        v = np.asarray(im)
        if a.ndim == 3 and rng.random() < 0.3:  # stain / white-balance variation
            v = np.clip(v * rng.uniform(0.85, 1.15, 3) + 0.5, 0, 255).astype(np.uint8)
        if rng.random() < 0.5:
            v = _jpeg(v, int(rng.integers(40, 96)))
        if a.ndim == 2 and rng.random() < 0.7:
            v = v[:, :, 0].copy()
        out.append(v)
    return out


def panel_grid(panels: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A multi-panel figure: panels side by side on white (or black), each lettered A, B, C, ..."""
    cols = 2 if len(panels) == 4 else len(panels)
    rows = int(np.ceil(len(panels) / cols))
    cell = int(rng.uniform(160, 320))
    gap = int(rng.uniform(2, 16))
    bg = (255, 255, 255) if rng.random() < 0.7 else (0, 0, 0)
    fig = Image.new("RGB", (cols * cell + (cols + 1) * gap, rows * cell + (rows + 1) * gap), bg)
    d = ImageDraw.Draw(fig)
    letter_colour = [(255, 255, 255), (0, 0, 0), (255, 255, 0)][int(rng.integers(3))]
    for i, p in enumerate(panels):
        im = Image.fromarray(np.ascontiguousarray(p)).convert("RGB").resize((cell, cell), Image.Resampling.BILINEAR)
        x, y = gap + (i % cols) * (cell + gap), gap + (i // cols) * (cell + gap)
        fig.paste(im, (x, y))
        d.text((x + 6, y + 4), "ABCDEFGH"[i], fill=letter_colour, font_size=max(14, cell // 9))
    return np.asarray(fig)


if __name__ == "__main__":  # pragma: no cover - a quick listing of the pools
    warnings.simplefilter("ignore")
    os.environ.setdefault("MPLBACKEND", "Agg")
    r = np.random.default_rng(0)
    for s in medical_sources() + photo_sources():
        vs = s.views(r)
        print(s.group, s.family, len(vs), [v.shape for v in vs[:2]])
