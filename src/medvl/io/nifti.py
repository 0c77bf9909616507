"""NIfTI reader: a volume reoriented to closest-canonical RAS, as float32 (``scl_slope``/``scl_inter``
applied by nibabel's ``get_fdata``), with its voxel spacing in mm. Errors are ``NiftiReadError`` naming
the file and the problem (missing, truncated/corrupt gzip, not NIfTI, all-NaN, bad dimensions)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np


class NiftiReadError(Exception):
    """A NIfTI file could not be read; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class NiftiVolume:
    """A 3D volume in RAS canonical voxel order (axis 0 -> Right, 1 -> Anterior, 2 -> Superior)."""

    data: np.ndarray  # float32, 3D
    spacing: tuple[float, float, float]  # mm along the three canonical axes
    channels: int  # number of channels/frames of the 4th dimension in the file (1 for 3D files)
    channel: int  # which of them ``data`` holds


def _spacing(zooms: tuple[float, ...]) -> tuple[float, float, float]:
    out = []
    for z in list(zooms[:3]) + [1.0] * (3 - len(zooms[:3])):
        z = float(z)
        out.append(z if np.isfinite(z) and z > 0 else 1.0)
    return out[0], out[1], out[2]


def _open(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise NiftiReadError(path, "file not found")
    try:
        img = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error, ValueError) as e:
        raise NiftiReadError(path, f"not a readable NIfTI file ({type(e).__name__}: {e})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiReadError(path, f"expected a NIfTI image, got {type(img).__name__}")
    return img


def load_nifti(path: str | Path, channel: int = 0, allow_nan: bool = False) -> NiftiVolume:
    """Read a NIfTI volume reoriented to RAS. A 4D file gives the volume at ``channel`` of its 4th axis
    (e.g. BraTS modalities); 2D files become one-slice volumes. All-NaN data raises unless ``allow_nan``."""
    path = Path(path)
    img = _open(path)
    shape = img.shape
    if len(shape) < 2 or len(shape) > 4 or any(s < 1 for s in shape):
        raise NiftiReadError(path, f"expected a 2D, 3D or 4D image, got shape {tuple(shape)}")
    channels = int(shape[3]) if len(shape) == 4 else 1
    if not 0 <= channel < channels:
        raise NiftiReadError(path, f"channel {channel} requested but the image has {channels} channel(s)")
    try:
        canon = nib.as_closest_canonical(img)
        if len(shape) == 4:
            data = np.asarray(canon.dataobj[..., channel], dtype=np.float32)
        else:
            data = canon.get_fdata(dtype=np.float32)
    except (EOFError, OSError, zlib.error, ValueError, MemoryError) as e:
        raise NiftiReadError(path, f"truncated or corrupt data ({type(e).__name__}: {e})") from None
    if data.ndim == 2:
        data = data[:, :, None]
    if not allow_nan and not np.isfinite(data).any():
        raise NiftiReadError(path, "volume has no finite values (all NaN)")
    return NiftiVolume(data=data, spacing=_spacing(canon.header.get_zooms()), channels=channels, channel=channel)


def load_label_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read an integer label map (RAS canonical) -> (integer array, spacing): integer files keep their
    dtype (at most 16 bits, else int32); float files must hold integers (NaN/inf or fractions raise
    ``NiftiReadError``) and come back as int32."""
    path = Path(path)
    img = _open(path)
    proxy = img.dataobj
    if (len(img.shape) == 3 and np.issubdtype(img.get_data_dtype(), np.integer)
            and getattr(proxy, "slope", 1.0) == 1.0 and getattr(proxy, "inter", 0.0) == 0.0):
        # fast path: integer storage without scaling is read as is (no float round trip, 4x less memory)
        try:
            canon = nib.as_closest_canonical(img)
            raw = np.asanyarray(canon.dataobj)
        except (EOFError, OSError, zlib.error, ValueError, MemoryError) as e:
            raise NiftiReadError(path, f"truncated or corrupt data ({type(e).__name__}: {e})") from None
        # kept in the file's (Fortran) voxel order: a C-order copy would cost a full transposing pass
        data_i = raw if raw.dtype.itemsize <= 2 else raw.astype(np.int32)
        return data_i, _spacing(canon.header.get_zooms())
    vol = load_nifti(path, allow_nan=True)
    data = vol.data
    if not np.isfinite(data).all():
        raise NiftiReadError(path, "label map contains NaN/inf values")
    rounded = np.rint(data)
    if np.abs(rounded - data).max(initial=0.0) > 1e-3:
        raise NiftiReadError(path, "label map has non-integer values")
    return rounded.astype(np.int32), vol.spacing
