"""DICOM reader: one file -> frames in physical units (modality LUT applied, so CT is in HU), pixel
spacing, geometry for series ordering, the few free-text fields we use, and the set of identifying values
seen in the header (to be scrubbed, never stored). Series: group by SeriesInstanceUID and order slices by
ImagePositionPatient projected on the slice normal. SEG: read with highdicom and map masks to the
referenced source instances by SOPInstanceUID.

Every failure is a ``DicomReadError`` naming the file and the problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
TEXT_FIELDS = ("StudyDescription", "SeriesDescription", "BodyPartExamined")

class DicomReadError(Exception):
    """A DICOM file could not be read; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class DicomImage:
    """A decoded DICOM image: ``frames`` is (F, H, W) float32 in modality units (HU for CT) or
    (F, H, W, 3) uint8 RGB for colour data."""

    path: Path
    frames: np.ndarray
    modality: str | None
    photometric: str
    spacing: tuple[float, float] | None  # (row, column) mm; None when the file does not say (never invented)
    rgb: bool
    voi: tuple[float, float] | None  # WindowCenter/Width from the file, if any
    text: dict[str, str] = field(default_factory=dict)  # StudyDescription / SeriesDescription / BodyPartExamined
    patient_id: str | None = None
    view: str | None = None  # ViewPosition (e.g. "PA", "AP", "LL") when present
    sop_uid: str = ""
    sensitive: set[str] = field(default_factory=set)
    burned_in: str | None = None  # BurnedInAnnotation ("YES"/"NO"), None when the file does not say
    tissue_regions: list[tuple[int, int, int, int]] = field(default_factory=list)  # US regions x0, y0, x1, y1
    aspect: tuple[float, float] | None = None  # PixelAspectRatio (row, column) when spacing is unknown

    @property
    def may_have_burned_in_text(self) -> bool:
        """True when identifying text may be burned into the pixels: the file says so, or it does not say and
        the modality usually carries it (ultrasound, secondary capture, endoscopy, photographs)."""
        if self.burned_in == "YES":
            return True
        return self.burned_in is None and (self.modality or "") in BURNED_IN_MODALITIES


# Modalities whose pixels usually carry burned-in text (patient, institution, dates) when the header is silent.
BURNED_IN_MODALITIES = frozenset({"US", "IVUS", "OT", "SC", "XC", "ES", "GM"})


def tissue_regions(ds: Dataset) -> list[tuple[int, int, int, int]]:
    """Ultrasound regions holding tissue pixels (RegionDataType 1) from SequenceOfUltrasoundRegions."""
    out = []
    for r in ds.get("SequenceOfUltrasoundRegions") or []:
        try:
            if int(r.get("RegionDataType", 0)) != 1:
                continue
            box = (int(r.RegionLocationMinX0), int(r.RegionLocationMinY0), int(r.RegionLocationMaxX1) + 1,
                   int(r.RegionLocationMaxY1) + 1)
        except (AttributeError, TypeError, ValueError):
            continue
        if box[2] > box[0] and box[3] > box[1]:
            out.append(box)
    return out


@dataclass
class SliceGeometry:
    """What a series needs from one file's header to be ordered and stacked."""

    rel: str  # path relative to the source root
    series_uid: str
    sop_uid: str
    frames: int
    rows: int
    cols: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, float] | None  # None: the header gives no pixel spacing
    instance: int | None
    is_seg: bool = False


# --- reading ---------------------------------------------------------------------------------------------

def read_dataset(path: str | Path, header_only: bool = False) -> Dataset:
    """``dcmread`` with clear errors: non-DICOM junk, unreadable or truncated files raise
    ``DicomReadError``. Files without the 128-byte preamble are accepted when they parse as DICOM."""
    path = Path(path)
    if not path.is_file():
        raise DicomReadError(path, "file not found")
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=header_only)
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=header_only, force=True)
        except Exception:  # noqa: BLE001 - any parse failure means junk
            raise DicomReadError(path, "not a DICOM file") from None
        if not any(k in ds for k in ("SOPClassUID", "Modality", "PixelData", "Rows")):
            raise DicomReadError(path, "not a DICOM file")
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on truncated files
        raise DicomReadError(path, f"unreadable DICOM ({type(e).__name__}: {e})") from None
    if not header_only and "PixelData" not in ds and "FloatPixelData" not in ds:
        raise DicomReadError(path, "no PixelData (not an image)")
    return ds


def _first_float(v: Any) -> float | None:
    try:
        if isinstance(v, (list, tuple, pydicom.multival.MultiValue)):
            v = v[0]
        return float(v)
    except (TypeError, ValueError, IndexError):
        return None


def _pair(v: Any) -> tuple[float, float] | None:
    try:
        a, b = float(v[0]), float(v[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    if a > 0 and b > 0 and np.isfinite([a, b]).all():
        return a, b
    return None


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: PixelSpacing, then ImagerPixelSpacing (X-ray), then the enhanced
    functional groups; None when none of them gives a usable value (unknown: never invented as 1 mm).
    Zero or malformed values are skipped."""
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        sp = _pair(ds.get(kw))
        if sp:
            return sp
    for grp in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        try:
            sp = _pair(ds[grp][0].PixelMeasuresSequence[0].PixelSpacing)
        except (KeyError, AttributeError, IndexError):
            sp = None
        if sp:
            return sp
    return None


def pixel_aspect(ds: Dataset) -> tuple[float, float] | None:
    """PixelAspectRatio as (row, column) relative sizes (e.g. (2, 1): pixels twice as tall as wide), or
    None. It fixes the pixel shape of images without a spacing, not their size in mm."""
    return _pair(ds.get("PixelAspectRatio"))


def _text(v: Any) -> str:
    return str(v).strip() if v is not None else ""


def identifying_values(ds: Dataset) -> set[str]:
    """Identifier values of a header per DICOM PS3.15 Annex E (see :mod:`medvl.io.deid`)."""
    from medvl.io.deid import identifying_values as profile_values

    return profile_values(ds)


def _voi(ds: Dataset) -> tuple[float, float] | None:
    c, w = _first_float(ds.get("WindowCenter")), _first_float(ds.get("WindowWidth"))
    if c is None or w is None or w <= 0:
        return None
    return c, w


def _rescale_of(item: Dataset | None) -> tuple[float, float] | None:
    """(slope, intercept) from a PixelValueTransformationSequence item of an enhanced multi-frame file."""
    if item is None:
        return None
    seq = item.get("PixelValueTransformationSequence")
    if not seq:
        return None
    slope, icpt = _first_float(seq[0].get("RescaleSlope")), _first_float(seq[0].get("RescaleIntercept"))
    if slope is None or icpt is None:
        return None
    return slope, icpt


def _modality_lut(arr: np.ndarray, ds: Dataset, n_frames: int) -> np.ndarray:
    """Modality LUT (Rescale Slope/Intercept -> HU for CT). Classic files carry it at the top level; enhanced
    multi-frame files (Enhanced CT/MR) carry it per frame or shared in their functional groups."""
    from pydicom.pixels import apply_modality_lut

    if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        return apply_modality_lut(arr, ds)
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    common = _rescale_of(shared[0] if shared else None)
    frames = [_rescale_of(per_frame[i]) if per_frame and i < len(per_frame) else None for i in range(n_frames)]
    if common is None and all(f is None for f in frames):
        return arr
    out = np.asarray(arr, dtype=np.float32).copy()
    view = out if (n_frames > 1 and out.ndim == 3) else out[None]
    for i in range(view.shape[0]):
        slope, icpt = frames[i] if i < len(frames) and frames[i] is not None else common or (1.0, 0.0)
        view[i] = view[i] * slope + icpt
    return out


def read_dicom(path: str | Path) -> DicomImage:
    """Decode one DICOM image file: frames after the modality LUT (Rescale Slope/Intercept -> HU for CT),
    RGB/YBR/PALETTE COLOR converted to RGB uint8, spacing, VOI window, free text, identifying values."""
    path = Path(path)
    ds = read_dataset(path)
    if str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS:
        raise DicomReadError(path, "is a DICOM SEG (segmentation), not an image")
    photometric = _text(ds.get("PhotometricInterpretation")).upper() or "MONOCHROME2"
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - decoders raise many types
        raise DicomReadError(path, f"cannot decode pixel data ({type(e).__name__}: {e})") from None
    n_frames = int(_first_float(ds.get("NumberOfFrames")) or 1)
    samples = int(_first_float(ds.get("SamplesPerPixel")) or 1)
    rgb = samples == 3 or photometric == "PALETTE COLOR"
    try:
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
        elif not rgb:
            arr = _modality_lut(arr, ds, n_frames)
    except Exception as e:  # noqa: BLE001
        raise DicomReadError(path, f"cannot apply LUT ({type(e).__name__}: {e})") from None
    if rgb:
        if arr.dtype != np.uint8:  # 16/32-bit colour: scale to 8 bit by the stored (or palette LUT) bit depth
            bits = int(_first_float(ds.get("BitsStored")) or 8)
            if photometric == "PALETTE COLOR":
                desc = ds.get("RedPaletteColorLookupTableDescriptor")
                bits = int(desc[2]) if desc is not None and len(desc) == 3 and int(desc[2]) in (8, 16) else 16
            arr = np.clip(np.asarray(arr, dtype=np.float64) * (255.0 / (2 ** bits - 1)), 0, 255)
            arr = np.floor(arr + 0.5).astype(np.uint8)
        frames = arr if (n_frames > 1 and arr.ndim == 4) else arr[None]
    else:
        arr = np.asarray(arr, dtype=np.float32)
        frames = arr if (n_frames > 1 and arr.ndim == 3) else arr[None]
    if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise DicomReadError(path, f"empty pixel array {frames.shape}")
    pid = _text(ds.get("PatientID")) or None
    return DicomImage(
        path=path, frames=frames, modality=_text(ds.get("Modality")).upper() or None, photometric=photometric,
        spacing=pixel_spacing(ds), rgb=rgb, voi=None if rgb else _voi(ds),
        text={k: _text(ds.get(k)) for k in TEXT_FIELDS if _text(ds.get(k))}, patient_id=pid,
        view=_text(ds.get("ViewPosition")).upper() or None, sop_uid=_text(ds.get("SOPInstanceUID")),
        sensitive=identifying_values(ds), burned_in=_text(ds.get("BurnedInAnnotation")).upper() or None,
        tissue_regions=tissue_regions(ds), aspect=pixel_aspect(ds),
    )


def slice_geometry(ds: Dataset, rel: str) -> SliceGeometry:
    """Geometry fields of a header (read with ``header_only``)."""
    pos = ds.get("ImagePositionPatient")
    ori = ds.get("ImageOrientationPatient")
    try:
        position = tuple(float(v) for v in pos) if pos is not None and len(pos) == 3 else None
    except (TypeError, ValueError):
        position = None
    try:
        orientation = tuple(float(v) for v in ori) if ori is not None and len(ori) == 6 else None
    except (TypeError, ValueError):
        orientation = None
    inst = _first_float(ds.get("InstanceNumber"))
    return SliceGeometry(
        rel=rel, series_uid=_text(ds.get("SeriesInstanceUID")), sop_uid=_text(ds.get("SOPInstanceUID")),
        frames=int(_first_float(ds.get("NumberOfFrames")) or 1), rows=int(ds.get("Rows") or 0),
        cols=int(ds.get("Columns") or 0), position=position, orientation=orientation,  # type: ignore[arg-type]
        spacing=pixel_spacing(ds), instance=None if inst is None else int(inst),
        is_seg=str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS,
    )


# --- series ----------------------------------------------------------------------------------------------

def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    """Unit normal of an ImageOrientationPatient (row cosines x column cosines)."""
    r, c = np.asarray(orientation[:3], dtype=np.float64), np.asarray(orientation[3:], dtype=np.float64)
    n = np.cross(r, c)
    norm = np.linalg.norm(n)
    if norm == 0:
        raise ValueError("degenerate ImageOrientationPatient")
    return n / norm


def series_problem(geoms: list[SliceGeometry]) -> str | None:
    """Why these single-frame slices cannot be stacked into one volume (None when they can)."""
    if len(geoms) < 2:
        return "series has fewer than 2 images"
    g0 = geoms[0]
    if any(g.frames != 1 for g in geoms):
        return "series contains multi-frame files"
    if any((g.rows, g.cols) != (g0.rows, g0.cols) for g in geoms):
        return "images in the series differ in size"
    if any(g.position is None or g.orientation is None for g in geoms):
        return "ImagePositionPatient/ImageOrientationPatient missing"
    if any(not np.allclose(g.orientation, g0.orientation, atol=1e-3) for g in geoms):  # type: ignore[arg-type]
        return "images in the series have different orientations"
    if any(g.spacing is None for g in geoms):
        return "PixelSpacing missing (the in-plane pixel size is unknown, so the volume cannot be resliced)"
    if any(not np.allclose(g.spacing, g0.spacing, rtol=1e-3) for g in geoms):  # type: ignore[arg-type]
        return "images in the series have different pixel spacing"
    try:
        normal = slice_normal(g0.orientation)  # type: ignore[arg-type]
    except ValueError as e:
        return str(e)
    d = sorted(float(np.dot(normal, g.position)) for g in geoms)  # type: ignore[arg-type]
    gaps = np.diff(d)
    if gaps.min() <= 1e-4:
        return "two images share the same slice position"
    if gaps.max() > 1.5 * float(np.median(gaps)) or gaps.min() < 0.5 * float(np.median(gaps)):
        return "slice spacing is not uniform (missing slices?)"
    return None


def order_series(geoms: list[SliceGeometry]) -> list[SliceGeometry]:
    """Slices ordered by ImagePositionPatient projected on the slice normal (inferior -> superior for axial
    images); when geometry is missing, by InstanceNumber, then by file name."""
    if geoms and all(g.position is not None and g.orientation is not None for g in geoms):
        try:
            normal = slice_normal(geoms[0].orientation)  # type: ignore[arg-type]
            return sorted(geoms, key=lambda g: (float(np.dot(normal, g.position)), g.rel))  # type: ignore[arg-type]
        except ValueError:
            pass
    return sorted(geoms, key=lambda g: (g.instance is None, g.instance or 0, g.rel))


def series_affine(ordered: list[SliceGeometry]) -> np.ndarray:
    """RAS voxel->mm affine for the array ``stack.transpose(2, 1, 0)`` (column, row, slice), where
    ``stack`` is the (slice, row, column) array of the ordered slices."""
    g0 = ordered[0]
    row_dir = np.asarray(g0.orientation[:3])  # direction of increasing column index  # type: ignore[index]
    col_dir = np.asarray(g0.orientation[3:])  # direction of increasing row index  # type: ignore[index]
    normal = slice_normal(g0.orientation)  # type: ignore[arg-type]
    d = [float(np.dot(normal, g.position)) for g in ordered]  # type: ignore[arg-type]
    dz = float(np.median(np.diff(d))) if len(d) > 1 else 1.0
    if g0.spacing is None:
        raise ValueError("PixelSpacing missing: no affine for a series without pixel spacing")
    row_mm, col_mm = g0.spacing
    aff = np.eye(4)
    aff[:3, 0] = row_dir * col_mm
    aff[:3, 1] = col_dir * row_mm
    aff[:3, 2] = normal * dz
    aff[:3, 3] = g0.position  # type: ignore[assignment]
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    return lps_to_ras @ aff


def to_canonical(stack: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """(slice, row, column) stack + its RAS affine -> (RAS canonical volume, spacing, axis permutation
    info ``ornt``) so label maps can be reoriented identically with :func:`apply_canonical`."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spacing = [1.0, 1.0, 1.0]
    for i, (out_axis, _flip) in enumerate(ornt):
        spacing[int(out_axis)] = float(zooms[i])
    return apply_canonical(stack, ornt), (spacing[0], spacing[1], spacing[2]), ornt


def acquisition_axis(ornt: np.ndarray) -> int:
    """The canonical (RAS) axis the stacked slices were acquired along: 0 sagittal, 1 coronal, 2 axial
    (the axis closest to the slice normal of ImageOrientationPatient, as chosen by :func:`to_canonical`)."""
    return int(ornt[2][0])


def apply_canonical(stack: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """The same reorientation as :func:`to_canonical` for another (slice, row, column) array (label maps)."""
    import nibabel as nib

    return np.ascontiguousarray(nib.orientations.apply_orientation(stack.transpose(2, 1, 0), ornt))


# --- SEG -------------------------------------------------------------------------------------------------

def seg_references(ds: Dataset) -> list[str]:
    """SOPInstanceUIDs a SEG references (ReferencedSeriesSequence, per-frame DerivationImageSequence and
    SourceImageSequence), sorted and unique."""
    uids: set[str] = set()
    for s in ds.get("ReferencedSeriesSequence", []) or []:
        for r in s.get("ReferencedInstanceSequence", []) or []:
            uids.add(_text(r.get("ReferencedSOPInstanceUID")))
    for fg in ds.get("PerFrameFunctionalGroupsSequence", []) or []:
        for der in fg.get("DerivationImageSequence", []) or []:
            for src in der.get("SourceImageSequence", []) or []:
                uids.add(_text(src.get("ReferencedSOPInstanceUID")))
    for src in ds.get("SourceImageSequence", []) or []:
        uids.add(_text(src.get("ReferencedSOPInstanceUID")))
    uids.discard("")
    return sorted(uids)


@dataclass
class SegMasks:
    """A DICOM SEG opened for some of its referenced source instances (``uids``, in the caller's order).
    Segments may overlap: :meth:`layers` decodes one segment at a time as boolean masks, so a SEG with
    many segments never needs all of them in memory at once."""

    path: Path
    segments: dict[int, str]  # segment number -> SegmentLabel (or property type meaning)
    sensitive: set[str]
    uids: list[str]
    seg: Any = None  # the highdicom Segmentation

    def layers(self) -> Iterator[tuple[int, str, dict[str, np.ndarray]]]:
        """(segment number, label, {sop_uid: (H, W) bool mask}) per segment, by segment number. Fractional
        segments count as present at >= 0.5. Decoding failures raise ``DicomReadError``."""
        for num in sorted(self.segments):
            try:
                px = self.seg.get_pixels_by_source_instance(
                    self.uids, segment_numbers=[num], combine_segments=False, ignore_spatial_locations=True,
                    skip_overlap_checks=True)
            except Exception as e:  # noqa: BLE001
                raise DicomReadError(self.path, f"cannot decode SEG frames ({type(e).__name__}: {e})") from None
            px = np.asarray(px)[..., 0]
            binary = px >= 0.5 if px.dtype.kind == "f" else px > 0
            yield num, self.segments[num], dict(zip(self.uids, binary))


def read_seg(path: str | Path, source_uids: list[str]) -> SegMasks:
    """Open a SEG with highdicom for those of ``source_uids`` it references (their masks come from
    :meth:`SegMasks.layers`). Raises ``DicomReadError`` when it cannot be read or references none of them."""
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(str(path))
    except Exception as e:  # noqa: BLE001
        raise DicomReadError(path, f"cannot read DICOM SEG ({type(e).__name__}: {e})") from None
    segments: dict[int, str] = {}
    for d in seg.SegmentSequence:
        label = _text(d.get("SegmentLabel"))
        if not label:
            try:
                label = _text(d.SegmentedPropertyTypeCodeSequence[0].CodeMeaning)
            except (AttributeError, IndexError):
                label = f"segment {int(d.SegmentNumber)}"
        segments[int(d.SegmentNumber)] = label
    referenced = set(seg_references(seg))
    wanted = [u for u in source_uids if u in referenced]
    if not wanted:
        raise DicomReadError(path, "referenced images not found")
    return SegMasks(path=path, segments=segments, sensitive=identifying_values(seg), uids=wanted, seg=seg)
