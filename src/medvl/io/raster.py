"""Raster (2D) image reading: PNG, JPEG, TIFF, BMP, GIF, WebP and ``.npy`` arrays -> uint8 arrays.

``read_raster`` gives what a record image needs: uint8 ``(H, W)`` or ``(H, W, 3)`` with EXIF orientation
applied (read-only for decoded files: callers copy before changing pixels); palette / RGBA / LA / CMYK are
converted to RGB or L (L for an all-gray palette; alpha is dropped, not composited); 16-bit and float data
are percentile-normalized (0.5-99.5). Multi-frame files (multi-page TIFF, animated GIF) give their first frame.
``read_mask`` gives an integer label map, keeping stored values (palette indices, 8/16-bit gray levels) or, for
colour masks, the ``(H, W, 3)`` colours for the caller to map.

Plain 8-bit grey / RGB PNGs are decoded by libspng (:func:`plain_png`: the same pixels, 1.5-2x faster than Pillow on
RGB photographs); every other file, and any PNG that check or libspng does not take, is read by Pillow.

Every failure is a :class:`RasterReadError` that names the file and the problem. Truncated files are
detected (``Image.open`` + ``load()``; ``LOAD_TRUNCATED_IMAGES`` is never set)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".npy",
)

_RGB_MODES = {"RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBa"}
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


class RasterReadError(ValueError):
    """A raster file that cannot be read as an image; ``str()`` is ``"<file>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def is_probably_image(path: str | Path) -> bool:
    """True when the file name has a raster image extension (case-insensitive); content is not checked."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def percentile_to_uint8(arr: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Scale a numeric array to uint8 between its ``lower`` and ``upper`` percentiles (of finite values),
    clipping outside. A constant image becomes all zeros. Non-finite values become 0."""
    data = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.uint8)
    lo, hi = np.percentile(data[finite], [lower, upper])
    if hi <= lo:  # (nearly) constant: fall back to the full range, else zeros
        lo, hi = float(data[finite].min()), float(data[finite].max())
        if hi <= lo:
            return np.zeros(data.shape, dtype=np.uint8)
    scaled = (np.where(finite, data, lo) - lo) / (hi - lo) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _open_loaded(path: Path) -> Image.Image:
    """Open and fully decode the first frame; raise RasterReadError for every decoding problem."""
    if not path.is_file():
        raise RasterReadError(path, "file not found")
    if path.stat().st_size == 0:
        raise RasterReadError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as opened:
            opened.load()
            if opened.width <= 0 or opened.height <= 0:
                raise RasterReadError(path, f"zero-size image ({opened.width}x{opened.height})")
            try:  # in place: no copy of the pixels (the loaded image stays usable after the file is closed)
                ImageOps.exif_transpose(opened, in_place=True)
            except Exception as e:  # a malformed EXIF block is a problem of this file, not of the run
                raise RasterReadError(path, f"bad EXIF orientation data ({e})") from None
            img = opened
    except RasterReadError:
        raise
    except UnidentifiedImageError:
        raise RasterReadError(path, "not an image (unrecognized file content)") from None
    except Image.DecompressionBombError as e:
        raise RasterReadError(path, f"image too large ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        text = str(e)
        if "truncated" in text.lower() or isinstance(e, EOFError):
            detail = text or "unexpected end of file"
            raise RasterReadError(path, f"truncated or corrupt image data ({detail})") from None
        raise RasterReadError(path, f"cannot decode image ({text or type(e).__name__})") from None
    return img


def _gray_palette(img: Image.Image) -> bool:
    """True when every palette entry is a gray level (R == G == B)."""
    pal = img.getpalette("RGB") or []
    return bool(pal) and all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise RasterReadError(path, f"not a readable .npy array ({e})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise RasterReadError(path, f"unsupported .npy content (dtype {getattr(arr, 'dtype', type(arr))})")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.size == 0:
        raise RasterReadError(path, f"zero-size array {arr.shape}")
    return arr


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ORIENTATION_TEXT = (b"Raw profile type exif\0", b"XML:com.adobe.xmp\0")  # text chunks Pillow takes an orientation from


def plain_png(data: bytes) -> np.ndarray | None:
    """The pixels of a plain PNG file's bytes, decoded by libspng (``imagecodecs.spng_decode``), or None.

    Plain: 8-bit greyscale or RGB, not interlaced, within Pillow's ``Image.MAX_IMAGE_PIXELS``, every chunk present
    up to IEND with a correct checksum (IDAT's are libspng's to check), and nothing that makes Pillow's reading
    differ from the stored pixels: no transparency (tRNS) and no orientation (an eXIf chunk, or a text chunk holding
    EXIF or XMP, which ``exif_transpose`` would apply). For such a file libspng gives exactly the pixels Pillow
    gives (tested on real images written by Pillow at several zlib levels, by medvl and by libpng), 1.5-2x faster
    on photographs' RGB rows (a 512 px fundus tile: 4.1 against 6.7-8.2 ms). Anything else (other colour types and depths, any chunk
    libspng or this check rejects, imagecodecs missing) gives None, and Pillow reads the file and names its
    problem exactly as before."""
    if len(data) < 45 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    limit = Image.MAX_IMAGE_PIXELS
    if depth != 8 or colour not in (0, 2) or interlace or not width or not height or (
            limit is not None and width * height > limit):
        return None
    view, pos, end = memoryview(data), 8, len(data)
    while True:  # walk the chunks (a few dozen headers)
        if pos + 12 > end:
            return None  # no IEND: truncated, or a writer's quirk Pillow tolerates
        n = int.from_bytes(view[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8])
        if pos + 12 + n > end:
            return None
        if kind != b"IDAT":
            if kind in (b"tRNS", b"eXIf") or (kind in (b"tEXt", b"zTXt", b"iTXt")
                                               and data.startswith(_ORIENTATION_TEXT, pos + 8)):
                return None
            if zlib.crc32(view[pos + 4:pos + 8 + n]) != int.from_bytes(view[pos + 8 + n:pos + 12 + n], "big"):
                return None  # Pillow refuses a damaged chunk (libspng lets ancillary ones pass)
        if kind == b"IEND":
            break
        pos += 12 + n
    try:
        import imagecodecs

        arr = imagecodecs.spng_decode(data)
    except Exception:  # noqa: BLE001 - any problem: Pillow reads the file and says what is wrong
        return None
    shape = (height, width) if colour == 0 else (height, width, 3)
    return arr if arr.dtype == np.uint8 and arr.shape == shape else None


def read_raster(path: str | Path) -> np.ndarray:
    """Read a 2D image file as uint8 ``(H, W)`` or ``(H, W, 3)`` (see module docstring for conversions)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        try:
            arr = plain_png(path.read_bytes())
        except OSError:  # missing, a folder, unreadable: Pillow's path below names the problem
            arr = None
        if arr is not None:
            return arr
    if path.suffix.lower() == ".npy":
        arr = _load_npy(path)
        if arr.ndim == 2:
            if arr.dtype == np.uint8:
                return np.ascontiguousarray(arr)
            if arr.dtype == np.bool_:
                return arr.astype(np.uint8) * 255
            return percentile_to_uint8(arr)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            rgb = arr[..., :3]
            return np.ascontiguousarray(rgb) if rgb.dtype == np.uint8 else percentile_to_uint8(rgb)
        raise RasterReadError(path, f"unsupported array shape {arr.shape} (expected (H, W) or (H, W, 3))")
    img = _open_loaded(path)
    mode = img.mode
    # each array is a read-only view of the bytes Pillow packs the pixels into (copying them again to make the array
    # writable cost 0.5 ms per 512 px RGB image)
    if mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("1", "LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if mode in ("P", "PA") and _gray_palette(img):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode in _RGB_MODES:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    if mode in _HIGH_DEPTH_MODES:
        return percentile_to_uint8(np.asarray(img))
    raise RasterReadError(path, f"unsupported image mode {mode!r}")


def read_mask(path: str | Path) -> np.ndarray:
    """Read a segmentation mask: a 2D integer label map (int32) with stored values kept (palette PNG
    indices, 8/16-bit gray levels, mode "1" as 0/1), or uint8 ``(H, W, 3)`` for colour (RGB/RGBA) masks."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        arr = _load_npy(path)
        if arr.ndim != 2:
            raise RasterReadError(path, f"mask array must be 2D, got shape {arr.shape}")
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise RasterReadError(path, "mask array holds non-integer values")
        return arr.astype(np.int32)
    img = _open_loaded(path)
    mode = img.mode
    if mode == "1":
        return (np.asarray(img) > 0).astype(np.int32)
    if mode in ("L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(img).astype(np.int32)
    if mode in ("LA", "La"):
        return np.asarray(img.getchannel(0)).astype(np.int32)
    if mode == "PA":
        return np.asarray(img.getchannel(0)).astype(np.int32)
    if mode == "F":
        arr = np.asarray(img)
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise RasterReadError(path, "float mask holds non-integer values")
        return arr.astype(np.int32)
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    raise RasterReadError(path, f"unsupported mask mode {mode!r}")


def parse_color(text: str) -> tuple[int, int, int]:
    """``"#ff0000"``, ``"255,0,0"`` or ``"255 0 0"`` -> ``(255, 0, 0)``; ValueError otherwise."""
    s = str(text).strip()
    if s.startswith("#") and len(s) == 7:
        return tuple(int(s[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    parts = [p for p in s.replace(",", " ").split() if p]
    if len(parts) == 3 and all(p.isdigit() and int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)  # type: ignore[return-value]
    raise ValueError(f"{text!r} is not a colour; expected '#rrggbb' or 'R,G,B' with values 0-255")


def colors_to_labels(rgb: np.ndarray, colors: dict[tuple[int, int, int], int]
                     ) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Map an ``(H, W, 3)`` colour mask to an int32 label map. Black is 0 unless listed. Returns the map
    and the sorted colours that are neither black nor in ``colors`` (those pixels are left 0)."""
    flat = rgb.reshape(-1, 3).astype(np.int64)
    codes = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inverse = np.unique(codes, return_inverse=True)
    lut = np.zeros(len(uniq), dtype=np.int32)
    unknown: list[tuple[int, int, int]] = []
    for i, code in enumerate(uniq.tolist()):
        col = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
        if col in colors:
            lut[i] = colors[col]
        elif col != (0, 0, 0):
            unknown.append(col)
    return lut[inverse].reshape(rgb.shape[:2]), sorted(unknown)
