"""medvl.io.raster on real medical images (skimage retina / IHC / microaneurysms, dipy T1 slice) written
in the formats datasets ship: PNG, JPEG, TIFF (16-bit), palette, RGBA/LA, EXIF-rotated JPEG, .npy."""

from __future__ import annotations

import numpy as np
import pytest
from dipy.data import get_fnames
from PIL import Image
from skimage import data

from medvl.io.raster import (RasterReadError, colors_to_labels, is_probably_image, parse_color,
                             percentile_to_uint8, read_mask, read_raster)


@pytest.fixture(scope="module")
def ihc() -> np.ndarray:
    return data.immunohistochemistry()[:160, :200]  # pathology tile, RGB uint8


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    return np.load(get_fnames(name="t1_coronal_slice"))  # MR slice, float64 in [0, 1]


def test_png_rgb_and_gray_roundtrip(tmp_path, ihc):
    Image.fromarray(ihc).save(tmp_path / "tile.png")
    out = read_raster(tmp_path / "tile.png")
    assert out.dtype == np.uint8 and out.shape == ihc.shape
    assert np.array_equal(out, ihc)
    micro = data.microaneurysms()
    Image.fromarray(micro).save(tmp_path / "micro.png")
    assert np.array_equal(read_raster(tmp_path / "micro.png"), micro)


def test_jpeg_close_to_source(tmp_path, ihc):
    Image.fromarray(ihc).save(tmp_path / "tile.jpg", quality=95)
    out = read_raster(tmp_path / "tile.jpg")
    assert out.shape == ihc.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - ihc.astype(int)).mean() < 4


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_is_percentile_normalized(tmp_path, t1, ext):
    raw = np.rint(t1 * 4000 + 100).astype(np.uint16)  # MR-like 16-bit range
    Image.fromarray(raw).save(tmp_path / f"t1{ext}")
    with Image.open(tmp_path / f"t1{ext}") as check:
        assert check.mode.startswith("I")
    out = read_raster(tmp_path / f"t1{ext}")
    assert out.dtype == np.uint8 and out.shape == raw.shape
    assert out.min() == 0 and out.max() == 255
    # monotone: brighter input never gives darker output
    order = np.argsort(raw.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)
    # only the brightest ~0.5 % saturate; the brain (non-background) keeps its grey levels
    assert (out == 255).mean() < 0.01
    brain = raw > 100
    assert ((out[brain] > 0) & (out[brain] < 255)).mean() > 0.9


def test_palette_rgba_la_and_bilevel(tmp_path, ihc):
    pal = Image.fromarray(ihc).quantize(colors=16)
    pal.save(tmp_path / "pal.png")
    out = read_raster(tmp_path / "pal.png")
    assert out.shape == ihc.shape and np.array_equal(out, np.asarray(pal.convert("RGB")))
    rgba = np.dstack([ihc, np.full(ihc.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_raster(tmp_path / "rgba.png"), ihc)  # alpha dropped, colours kept
    micro = data.microaneurysms()
    Image.fromarray(np.dstack([micro, micro]), "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_raster(tmp_path / "la.png"), micro)
    Image.fromarray(micro).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp_path / "gp.png")
    gray_pal = read_raster(tmp_path / "gp.png")  # an all-gray palette reads as L, not RGB
    assert gray_pal.ndim == 2 and np.abs(gray_pal.astype(int) - micro.astype(int)).max() <= 2
    Image.fromarray(micro > 128).save(tmp_path / "bw.png")
    assert set(np.unique(read_raster(tmp_path / "bw.png")).tolist()) == {0, 255}


def test_exif_orientation_applied(tmp_path, ihc):
    img = Image.fromarray(ihc)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = read_raster(tmp_path / "rot.jpg")
    assert out.shape == (ihc.shape[1], ihc.shape[0], 3)
    expected = np.rot90(ihc, k=-1)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 4


def test_multipage_tiff_gives_first_frame(tmp_path, ihc):
    frames = [Image.fromarray(ihc), Image.fromarray(ihc[::-1].copy())]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / "stack.tif") as check:
        assert check.n_frames == 2
    assert np.array_equal(read_raster(tmp_path / "stack.tif"), ihc)


def test_npy_arrays(tmp_path, t1):
    np.save(tmp_path / "t1.npy", t1)
    out = read_raster(tmp_path / "t1.npy")
    assert out.dtype == np.uint8 and out.shape == t1.shape and out.max() == 255
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    with pytest.raises(RasterReadError, match=r"empty\.npy: zero-size"):
        read_raster(tmp_path / "empty.npy")
    np.save(tmp_path / "vol.npy", np.zeros((4, 5, 6)))
    with pytest.raises(RasterReadError, match=r"vol\.npy: unsupported array shape"):
        read_raster(tmp_path / "vol.npy")


def test_truncated_png_names_file(tmp_path, ihc):
    Image.fromarray(ihc).save(tmp_path / "cut.png")
    blob = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RasterReadError) as err:
        read_raster(tmp_path / "cut.png")
    assert "cut.png" in str(err.value) and "truncated" in err.value.problem


def test_bad_files_name_file_and_problem(tmp_path):
    (tmp_path / "notes.png").write_text("this is not a picture")
    with pytest.raises(RasterReadError, match=r"notes\.png: not an image"):
        read_raster(tmp_path / "notes.png")
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(RasterReadError, match=r"zero\.png: empty file"):
        read_raster(tmp_path / "zero.png")
    with pytest.raises(RasterReadError, match=r"missing\.png: file not found"):
        read_raster(tmp_path / "missing.png")


def test_read_mask_keeps_values(tmp_path):
    micro = data.microaneurysms()
    labels = np.zeros(micro.shape, np.uint8)
    labels[micro < 80] = 1  # dark lesions / vessels
    labels[micro > 110] = 2  # bright background
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    pal = Image.fromarray(labels, "P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "pal.png")
    assert np.array_equal(read_mask(tmp_path / "pal.png"), labels)  # indices, not colours
    big = labels.astype(np.uint16) * 1000
    Image.fromarray(big).save(tmp_path / "m16.png")
    assert np.array_equal(read_mask(tmp_path / "m16.png"), big)
    rgb = np.asarray(pal.convert("RGB"))
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    read = read_mask(tmp_path / "rgb.png")
    assert read.shape == (*labels.shape, 3)
    mapped, unknown = colors_to_labels(read, {parse_color("#ff0000"): 1, parse_color("0,255,0"): 2})
    assert unknown == [] and np.array_equal(mapped, labels)
    mapped, unknown = colors_to_labels(read, {(255, 0, 0): 1})
    assert unknown == [(0, 255, 0)] and not np.any(mapped == 2)


def test_helpers():
    assert is_probably_image("a/B.JPG") and is_probably_image("x.npy") and not is_probably_image("README.txt")
    assert percentile_to_uint8(np.full((3, 3), 7.0)).max() == 0
    with pytest.raises(ValueError):
        parse_color("red")


# ---------------------------------------------------------------------------------- plain PNGs decoded by libspng
def _insert_before_idat(png: bytes, chunk: bytes) -> bytes:
    at = png.index(b"IDAT") - 4
    return png[:at] + chunk + png[at:]


def _pillow_pixels(blob: bytes) -> np.ndarray:
    import io

    from PIL import ImageOps

    with Image.open(io.BytesIO(blob)) as im:
        im.load()
        return np.asarray(ImageOps.exif_transpose(im))


def _real_images() -> dict[str, np.ndarray]:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    xray = dcmread(get_testdata_file("RG1_UNCI.dcm")).pixel_array[::4, ::4]  # chest X-ray, 12-bit
    return {"fundus": data.retina()[300:700, 300:800], "pathology": data.immunohistochemistry()[:300, :257],
            "microaneurysms": data.microaneurysms(), "chest x-ray": percentile_to_uint8(xray)}


@pytest.mark.parametrize("writer", ["pillow-0", "pillow-1", "pillow-6", "pillow-9", "pillow-optimize", "medvl-1",
                                    "medvl-3", "libpng"])
def test_plain_pngs_decode_to_pillows_pixels(tmp_path, writer):
    """8-bit grey / RGB PNGs of real medical images, written by Pillow (every zlib level, its per-row filter choice,
    optimize), by medvl's own encoder (Up filter, libdeflate) and by libpng: libspng's pixels are Pillow's, bit for
    bit, and read_raster gives them."""
    import io

    import imagecodecs

    from medvl.io.raster import plain_png
    from medvl.sources.read import encode_png

    for name, arr in _real_images().items():
        if writer.startswith("pillow"):
            buf = io.BytesIO()
            opts = {"optimize": True} if writer == "pillow-optimize" else {"compress_level": int(writer[-1])}
            Image.fromarray(arr).save(buf, format="PNG", **opts)
            blob = buf.getvalue()
        elif writer.startswith("medvl"):
            blob = encode_png(arr, int(writer[-1]))
        else:
            blob = imagecodecs.png_encode(arr)
        fast = plain_png(blob)
        assert fast is not None, (writer, name)
        assert fast.dtype == np.uint8 and fast.shape == arr.shape, (writer, name)
        assert np.array_equal(fast, _pillow_pixels(blob)) and np.array_equal(fast, arr), (writer, name)
        (tmp_path / "f.png").write_bytes(blob)
        assert np.array_equal(read_raster(tmp_path / "f.png"), arr)


def test_pngs_that_are_not_plain_go_through_pillow(tmp_path, ihc):
    """Whatever makes Pillow's reading differ from the stored pixels, or what libspng would let pass where Pillow
    refuses, is left to Pillow: orientation (eXIf chunk, XMP or raw-EXIF text), transparency, 16-bit, palette,
    interlacing, a damaged chunk. read_raster's result is Pillow's in each case."""
    import io

    from PIL.PngImagePlugin import PngInfo

    from medvl.io.raster import plain_png
    from medvl.sources.read import _png_chunk as _chunk

    def png(img: Image.Image, **opts) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format="PNG", **opts)
        return buf.getvalue()

    base = png(Image.fromarray(ihc))
    assert plain_png(base) is not None
    exif = Image.fromarray(ihc).getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    xmp = PngInfo()
    xmp.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/'
                 '1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
                 'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    raw_exif = PngInfo()
    raw_exif.add_text("Raw profile type exif", "\nexif\n      0\n")
    rotated = np.rot90(ihc, k=-1)
    header = bytearray(base[:33])
    header[28] = 1  # interlace method: Adam7
    cases = {
        "exif": (png(Image.fromarray(ihc), exif=exif), rotated),
        "xmp": (png(Image.fromarray(ihc), pnginfo=xmp), rotated),
        "raw exif text": (png(Image.fromarray(ihc), pnginfo=raw_exif), None),
        "transparency": (png(Image.fromarray(ihc), transparency=(0, 0, 0)), ihc),
        "16-bit": (png(Image.fromarray((ihc[:, :, 0].astype(np.uint16) * 257))), None),
        "palette": (png(Image.fromarray(ihc).convert("P")), None),
        "interlaced": (bytes(base[:8]) + _chunk(b"IHDR", bytes(header[16:29])) + base[33:], None),
    }
    for name, (blob, expected) in cases.items():
        assert plain_png(blob) is None, name
        if name == "interlaced":
            continue  # its rows were not written interlaced: only the gate is tested
        (tmp_path / "n.png").write_bytes(blob)
        out = read_raster(tmp_path / "n.png")
        if expected is not None:
            assert np.array_equal(out, expected), name
        else:
            assert out.shape[:2] == ihc.shape[:2], name

    # a damaged ancillary chunk: libspng reads past it, Pillow refuses the file, and so does read_raster
    text = _chunk(b"tEXt", b"Software\0medvl test")
    damaged = _insert_before_idat(base, text[:-1] + bytes([text[-1] ^ 1]))
    assert plain_png(_insert_before_idat(base, text)) is not None and plain_png(damaged) is None
    (tmp_path / "bad.png").write_bytes(damaged)
    with pytest.raises(RasterReadError, match=r"bad\.png: "):
        read_raster(tmp_path / "bad.png")
    # a damaged IDAT checksum: libspng refuses, Pillow (which does not check it) reads the pixels
    at = base.index(b"IDAT") - 4
    n = int.from_bytes(base[at:at + 4], "big")
    crc_at = at + 8 + n
    (tmp_path / "crc.png").write_bytes(base[:crc_at] + bytes([base[crc_at] ^ 1]) + base[crc_at + 1:])
    assert np.array_equal(read_raster(tmp_path / "crc.png"), ihc)
    # too many pixels for Pillow: Pillow's decompression-bomb error, not a silent decode
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = ihc.shape[0] * ihc.shape[1] // 3
        assert plain_png(base) is None
        (tmp_path / "big.png").write_bytes(base)
        with pytest.raises(RasterReadError, match=r"big\.png: image too large"):
            read_raster(tmp_path / "big.png")
    finally:
        Image.MAX_IMAGE_PIXELS = limit
