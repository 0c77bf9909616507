"""Declared dependency floors (pyproject.toml) against what the code needs, and the installed versions against
the declared ones.

``NEEDS`` is the evidence table: each row is a version some use in this project requires, with the reason and,
where the use can be seen in the code, a regex that finds it. A row applies while its regex matches some file of
the project (rows without a regex always apply), and then the floor pyproject.toml declares for that package
must be at least the row's version. So lowering a floor below a known need fails here, and a new use of an API
that needs a newer release fails once its row is added. Each row was checked by installing the release below
(it fails) and the floor (the test suite passes): see /work/notes/deps.md."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
CODE_DIRS = ("src", "tests", "benchmarks", "tools")


@dataclass(frozen=True)
class Need:
    """``dist`` must be at least ``version`` because of ``why``; ``uses`` finds the use in the code."""

    dist: str
    version: str
    why: str
    uses: str | None = None


NEEDS = [
    Need("pydicom", "3.0", "pydicom.pixels (apply_modality_lut, apply_color_lut) is new in pydicom 3.0",
         r"\bpydicom\.pixels\b"),
    Need("pydicom", "3.0.1", "highdicom >= 0.23 (the first for pydicom 3) requires pydicom >= 3.0.1",
         r"\bimport highdicom\b"),
    Need("highdicom", "0.23", "0.22 imports pydicom._storage_sopclass_uids, which pydicom 3 removed",
         r"\bimport highdicom\b"),
    Need("numpy", "2.0", "np.bitwise_count (Hamming distances of perceptual hashes) is new in NumPy 2.0",
         r"\bnp\.bitwise_count\b"),
    Need("pillow", "9.1", "the Image.Resampling / Image.Palette enums are new in Pillow 9.1",
         r"\bImage\.(Resampling|Palette)\."),
    Need("pillow", "10.0", "pydicom 3 decodes JPEG / JPEG 2000 pixel data with Pillow only from Pillow 10.0",
         r"\.pixel_array\b"),
    Need("pillow", "10.1", "ImageOps.exif_transpose raises on multi-page TIFFs before Pillow 10.1",
         r"\bexif_transpose\("),
    Need("pillow", "10.3", "16-bit greyscale PNGs (label maps above 255 labels) open as uint16 I;16 from 10.3 "
         "(python-pillow PR 7849), int32 before", r"\b_encode_label_png\b"),
    Need("imagehash", "4.3.1", "4.3.0 imports `six` without declaring it (fails in a clean environment)",
         r"\bimport imagehash\b"),
    Need("threadpoolctl", "3.0", "ThreadpoolController (limits BLAS threads around the hashes' matrix products) is "
         "new in threadpoolctl 3.0", r"\bThreadpoolController\b"),
    # NumPy 2 changed the C ABI: compiled packages built against NumPy 1 fail to import or refuse NumPy 2
    Need("scipy", "1.13", "first SciPy for NumPy 2 (1.12 requires numpy < 2)", r"\bfrom scipy\b"),
    Need("pyarrow", "16", "first pyarrow for NumPy 2 (15 requires numpy < 2)", r"\bimport pyarrow\b"),
    Need("matplotlib", "3.8.4", "first matplotlib for NumPy 2 (3.8.3 requires numpy < 2)", r"\bmatplotlib\b"),
    Need("imagecodecs", "2024.6.1", "first imagecodecs for NumPy 2 (2023.9.18's _spng fails to import: numpy.dtype "
         "size changed)", r"\bimport imagecodecs\b"),
    Need("nibabel", "5.2", "nibabel 5.0/5.1 use np.sctypes, removed in NumPy 2", r"\bimport nibabel\b"),
    Need("scikit-image", "0.23", "0.22 was built for NumPy 1 and fails to import under NumPy 2",
         r"\bfrom skimage\b"),
    Need("dipy", "1.10", "1.9 was built for NumPy 1 and fails to import under NumPy 2", r"\bfrom dipy\b"),
    Need("transformers", "4.56", "from_pretrained(dtype=...) is new in 4.56 (torch_dtype before; 4.55 raises)",
         r"from_pretrained\([^)]*\bdtype="),
    Need("transformers", "5.18", "LlavaForConditionalGeneration takes precomputed image features as "
         "mm_encoder_outputs from 5.18 (5.17 has no such argument; the feature cache hands them over this way)",
         r"mm_encoder_outputs"),
    Need("transformers", "5.23", "TrainingArguments(activation_checkpointing=...) is new in 5.23 (5.22 calls it "
         "gradient_checkpointing)", r"activation_checkpointing="),
]

# third-party modules imported by the code that no extra declares on purpose
UNDECLARED_OK = {
    "openpyxl": "optional: gmai_mmbench reads .xlsx only when it is installed (guarded import)",
    "tokenizers": "installed by transformers; tests/tiny_vlm.py builds the tiny model's tokenizer with it",
    "wordfreq": "tool-only: tools/make_medical_vocabulary.py regenerates the shipped medical vocabulary",
    "sklearn": "benchmark-only: benchmarks/train_medical_classifier.py fits the shipped classifier (scikit-learn "
               "comes with nilearn, in the samples extra); inference needs only numpy",
}
IMPORT_NAMES = {"PIL": "pillow", "yaml": "pyyaml", "skimage": "scikit-image"}


def _requirements() -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra if not r.startswith(PROJECT["name"] + "[")]
    return reqs


def _floor(dist: str) -> Version | None:
    """The lowest version pyproject.toml allows for ``dist`` (>=, == or ~= specifiers), None if unbounded."""
    floors = [Version(s.version) for r in _requirements() if canonicalize_name(r.name) == canonicalize_name(dist)
              for s in r.specifier if s.operator in (">=", "==", "~=", "===")]
    return max(floors) if floors else None


def _code_files() -> list[Path]:
    return sorted(p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))


def _used(pattern: str) -> list[str]:
    """Files (other than this one, whose table names every pattern) that match ``pattern``."""
    rx = re.compile(pattern)
    return [str(p.relative_to(ROOT)) for p in _code_files()
            if p.resolve() != Path(__file__).resolve() and rx.search(p.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("need", NEEDS, ids=lambda n: f"{n.dist}>={n.version}")
def test_declared_floor_covers_what_the_code_needs(need: Need):
    if need.uses is not None and not _used(need.uses):
        pytest.skip(f"no code uses {need.uses!r} any more")
    floor = _floor(need.dist)
    assert floor is not None, f"{need.dist} is used ({need.why}) but pyproject.toml declares no floor for it"
    assert floor >= Version(need.version), (
        f"pyproject.toml allows {need.dist} {floor}, but the code needs >= {need.version}: {need.why}")


def test_every_row_still_matches_the_code():
    """A row whose use has gone is stale: drop it (and maybe the floor) rather than keep a false reason."""
    stale = [f"{n.dist}>={n.version}: {n.uses}" for n in NEEDS if n.uses is not None and not _used(n.uses)]
    assert not stale, f"NEEDS rows no code matches any more: {stale}"


def test_installed_versions_meet_the_declared_specifiers():
    """What is installed satisfies pyproject.toml (extras that are not installed are skipped)."""
    bad = []
    for req in _requirements():
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue
        if not req.specifier.contains(Version(installed), prereleases=True):
            bad.append(f"{req.name} {installed} does not satisfy {req.specifier}")
    assert not bad, bad


def _third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    local = {p.stem for d in ("tests", "benchmarks") for p in (ROOT / d).glob("*.py")} | {"medvl", "conftest"}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


def test_every_imported_package_is_declared():
    """Each third-party module the code imports belongs to a package pyproject.toml declares."""
    declared = {canonicalize_name(r.name) for r in _requirements()}
    dists = metadata.packages_distributions()
    missing = {}
    for path in _code_files():
        for mod in _third_party_imports(path):
            if mod in UNDECLARED_OK:
                continue
            candidates = {canonicalize_name(d) for d in dists.get(mod, [IMPORT_NAMES.get(mod, mod)])}
            if not candidates & declared:
                missing.setdefault(mod, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
