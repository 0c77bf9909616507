"""Medical-vs-non-medical image classifier for PubMedVision-style figure filtering.

PubMedVision drops figures that are not medical images (charts, plots, diagrams, tables, photographs of
things) with an image classifier. medvl ships a small one that runs offline on numpy + Pillow only:
73 hand-made image statistics (intensity and colour histograms, saturation, hues, palette size, gradient
and straight-line statistics, flat areas, white/black background, border, FFT band energies) fed to a
logistic regression or a gradient-boosted tree ensemble (whichever wins a cross-validation over source
groups), exported to JSON by ``benchmarks/train_medical_classifier.py``.

``load_classifier(spec)`` accepts ``"builtin"`` (the shipped weights), a path to a weights file written
by that script, or ``"package.module:callable"`` (any callable ``array -> P(medical)``, e.g. a wrapper
around a CLIP probe). Every classifier has ``prob_medical(array)``, ``prob_medical_batch(arrays)``,
``name`` and ``version`` (for provenance). Inference is deterministic."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

FEATURE_SIZE = 128  # every image is resized to FEATURE_SIZE x FEATURE_SIZE before the statistics
FORMAT = "medvl-medclass-gbt"  # gradient-boosted trees
LINEAR_FORMAT = "medvl-medclass-linear"  # standardized features -> logistic regression
BUILTIN_PATH = Path(__file__).parent / "data" / "medclass.json"


class ClassifierSpecError(ValueError):
    """A classifier spec that names no usable classifier (missing file, bad JSON, bad import path)."""


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Non-uint8 input (16-bit PNG, float): floats within [0, 1] times 255, anything else its 0.5-99.5
    percentile range stretched to 0-255 (one range for all channels)."""
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"image must be a numeric array (uint8 HxW or HxWx3), got dtype {a.dtype}")
    f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if np.issubdtype(a.dtype, np.floating) and f.size and f.min() >= 0.0 and f.max() <= 1.0:
        return (f * 255.0 + 0.5).astype(np.uint8)
    lo, hi = np.percentile(f, [0.5, 99.5]) if f.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = float(f.min()), float(f.max()) if f.max() > f.min() else float(f.min()) + 1.0
    return (np.clip((f - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _check(array: np.ndarray) -> np.ndarray:
    """Check the input: HxW, HxWx1, HxWx3 or HxWx4 (alpha dropped); uint8 (other numeric types are scaled
    by ``_to_uint8``, bool is 0/255). Returns uint8 HxW or HxWx3."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ValueError(f"image must be HxW or HxWx3 (or HxWx4), got shape {a.shape}")
    if a.shape[0] < 2 or a.shape[1] < 2:
        raise ValueError(f"image is too small to classify: shape {a.shape}")
    a = a[:, :, :3] if a.ndim == 3 else a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    return a if a.dtype == np.uint8 else _to_uint8(a)


def _resize(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The R, G, B planes (float32, FEATURE_SIZE square) of a checked image; a gray image gives one plane
    three times. Very large inputs are first subsampled by an integer stride (to at least 2x the target
    size), so a 2000-pixel X-ray costs about as much as a 512-pixel figure."""
    step = max(1, min(a.shape[0], a.shape[1]) // (2 * FEATURE_SIZE))
    a = np.ascontiguousarray(a[::step, ::step])
    im = Image.fromarray(a, "L" if a.ndim == 2 else "RGB")
    im = im.resize((FEATURE_SIZE, FEATURE_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    x = np.asarray(im, dtype=np.float32)
    if x.ndim == 2:
        return x, x, x
    r, g, b = np.ascontiguousarray(x.transpose(2, 0, 1))
    return r, g, b


def _spectrum_consts() -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    n = FEATURE_SIZE
    win = np.hanning(n).astype(np.float32)
    r = np.sqrt(np.fft.rfftfreq(n)[None, :] ** 2 + np.fft.fftfreq(n)[:, None] ** 2)
    edges = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.71]
    bands = [(r > a) & (r <= b) for a, b in zip(edges[:-1], edges[1:])]
    fit = (r > 0.02) & (r <= 0.5)
    lr = np.log(r[fit])
    return win[:, None] * win[None, :], fit, bands, lr - lr.mean(), np.asarray(float(((lr - lr.mean()) ** 2).sum()))


_SPEC = _spectrum_consts()


def _fft_features(g: np.ndarray) -> list[float]:
    win2, fit, bands, lrc, lrss = _SPEC
    f = np.fft.rfft2((g - g.mean()) * win2)
    p = f.real ** 2 + f.imag ** 2
    total = float(p.sum()) + 1e-9
    out = [float(p[b].sum()) / total for b in bands]
    lp = np.log(p[fit] + 1e-6)
    out.append(float((lrc * (lp - lp.mean())).sum() / lrss) / 4.0 if total > 1e-6 else 0.0)
    return out


def extract_features(array: np.ndarray) -> np.ndarray:
    """The feature vector (float64, length ``len(FEATURE_NAMES)``) of one uint8 image of any size."""
    r, gr, bl = _resize(_check(array))
    g = 0.299 * r + 0.587 * gr + 0.114 * bl
    gq = np.clip(g + 0.5, 0, 255).astype(np.uint8)
    size = float(g.size)
    feats: list[float] = []
    # intensity: histogram, background, palette of gray levels, entropy
    counts = np.bincount(gq.ravel(), minlength=256) / size
    feats += counts.reshape(16, 16).sum(axis=1).tolist()
    nz = counts[counts > 0]
    feats += [float(counts[245:].sum()), float(counts[:11].sum()), float(counts.max()), nz.size / 256.0,
              float(-(nz * np.log2(nz)).sum()) / 8.0, float(g.mean()) / 255.0, float(g.std()) / 128.0]
    # colour: saturation, chroma, number of distinct colours, share of the 8 commonest colours
    mx, mn = np.maximum(np.maximum(r, gr), bl), np.minimum(np.minimum(r, gr), bl)
    chroma = mx - mn
    sat = chroma / np.maximum(mx, 1.0)
    codes = ((r.astype(np.int32) >> 4) << 8) | ((gr.astype(np.int32) >> 4) << 4) | (bl.astype(np.int32) >> 4)
    cc = np.bincount(codes.ravel(), minlength=4096)
    top = np.partition(cc, 4088)[4088:] / size
    feats += [float(sat.mean()), float(sat.std()), float((sat > 0.25).mean()), float((sat > 0.6).mean()),
              float(chroma.mean()) / 255.0, float(np.log2(np.count_nonzero(cc))) / 12.0, float(top.sum()),
              float(top.max())]
    # hues of the coloured pixels (charts: a few pure hues; stains, fundus, Doppler: one or two families)
    coloured = sat > 0.2
    nc = int(np.count_nonzero(coloured))
    if nc:
        hue = np.arctan2(0.8660254 * (gr - bl), r - 0.5 * (gr + bl))[coloured]
        hh = np.bincount(np.minimum(((hue + np.pi) * (6.0 / (2 * np.pi))).astype(np.int64), 5), minlength=6) / nc
        hnz = hh[hh > 0]
        feats += hh.tolist() + [float(-(hnz * np.log2(hnz)).sum()) / np.log2(6.0)]
    else:
        feats += [0.0] * 7
    # gradients: flat share, magnitude histogram, axis-aligned share of strong edges
    gx = np.abs(np.diff(g, axis=1))[:-1, :]
    gy = np.abs(np.diff(g, axis=0))[:, :-1]
    mag = gx + gy
    strong = mag > 40
    ns = max(int(np.count_nonzero(strong)), 1)
    aligned = strong & ((gx < 0.1 * mag) | (gy < 0.1 * mag))
    lm = np.minimum((np.log2(mag + 1.0) * (6.0 / 9.0)).astype(np.int64), 5)
    feats += [float((mag < 0.5).mean()), ns / mag.size if strong.any() else 0.0, float(mag.mean()) / 64.0,
              float(np.count_nonzero(aligned)) / ns]
    feats += (np.bincount(lm.ravel(), minlength=6) / mag.size).tolist()
    # straight lines: rows / columns crossed by long edges or entirely constant
    e = mag > 25
    rowf, colf = e.mean(axis=1), e.mean(axis=0)
    feats += [float(rowf.max()), float(colf.max()), float((rowf > 0.5).mean()), float((colf > 0.5).mean()),
              float((g.std(axis=1) < 1.0).mean()), float((g.std(axis=0) < 1.0).mean())]
    # local texture: Laplacian, flat and busy 4x4 blocks
    lap = np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
    blocks = g.reshape(FEATURE_SIZE // 4, 4, FEATURE_SIZE // 4, 4).std(axis=(1, 3))
    feats += [float(lap.mean()) / 64.0, float((lap < 0.5).mean()), float((blocks < 1.0).mean()),
              float((blocks > 20).mean()), float(np.median(blocks)) / 32.0]
    # border against centre (medical scans: dark border; charts: white margin)
    b = np.concatenate([g[:6].ravel(), g[-6:].ravel(), g[:, :6].ravel(), g[:, -6:].ravel()])
    c = g[32:96, 32:96]
    feats += [float(b.mean()) / 255.0, float(b.std()) / 128.0, float((b <= 10).mean()), float((b >= 245).mean()),
              float(c.mean() - b.mean()) / 255.0, float(c.std()) / 128.0]
    feats += _fft_features(g)
    return np.asarray(feats, dtype=np.float64)


FEATURE_NAMES: tuple[str, ...] = tuple(
    [f"gray_hist_{i}" for i in range(16)]
    + ["white_frac", "black_frac", "mode_frac", "gray_levels", "entropy", "mean", "std"]
    + ["sat_mean", "sat_std", "sat_gt_025", "sat_gt_06", "chroma_mean", "n_colours", "top8_colours", "top1_colour"]
    + [f"hue_hist_{i}" for i in range(6)] + ["hue_entropy"]
    + ["flat_grad", "strong_grad", "grad_mean", "aligned_edges"] + [f"grad_hist_{i}" for i in range(6)]
    + ["row_edge_max", "col_edge_max", "rows_edge_half", "cols_edge_half", "const_rows", "const_cols"]
    + ["lap_mean", "lap_flat", "flat_blocks", "busy_blocks", "block_std_median"]
    + ["border_mean", "border_std", "border_dark", "border_white", "centre_minus_border", "centre_std"]
    + [f"fft_band_{i}" for i in range(7)] + ["fft_slope"])


class MedicalImageClassifier:
    """Base: ``prob_medical`` of one image (uint8 HxW or HxWx3, any size; RGBA loses its alpha, other numeric
    types are scaled to uint8 first), ``prob_medical_batch`` of many."""

    name: str = "medclass"
    version: str = "0"
    metadata: dict[str, Any] = {}  # training facts of a weights file (held-out accuracy, seed, ...)

    def prob_medical(self, array: np.ndarray) -> float:
        return float(self.prob_medical_batch([array])[0])

    def prob_medical_batch(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"


def _check_header(weights: dict[str, Any], fmt: str) -> None:
    if weights.get("format") != fmt:
        raise ValueError(f"format is {weights.get('format')!r}, expected {FORMAT!r} or {LINEAR_FORMAT!r}")
    if list(weights["feature_names"]) != list(FEATURE_NAMES):
        raise ValueError("its feature_names differ from this medvl's features (retrain it)")


class LinearClassifier(MedicalImageClassifier):
    """Logistic regression on standardized ``extract_features``: P = sigmoid(((x - mean) / scale) . coef + b)."""

    def __init__(self, weights: dict[str, Any], source: str) -> None:
        try:
            _check_header(weights, LINEAR_FORMAT)
            self._mean = np.asarray(weights["mean"], np.float64)
            self._scale = np.asarray(weights["scale"], np.float64)
            self._coef = np.asarray(weights["coef"], np.float64)
            self._intercept = float(weights["intercept"])
            self.name = str(weights.get("name", "medclass-linear"))
            self.version = str(weights["version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ClassifierSpecError(f"{source}: not a usable medclass weights file: {exc}") from exc
        n = len(FEATURE_NAMES)
        if self._mean.shape != (n,) or self._scale.shape != (n,) or self._coef.shape != (n,):
            raise ClassifierSpecError(f"{source}: mean, scale and coef must each hold {n} numbers")
        if not (np.all(np.isfinite(self._scale)) and np.all(self._scale > 0)):
            raise ClassifierSpecError(f"{source}: every scale must be a positive number")
        self.metadata = {k: v for k, v in weights.items() if k not in ("mean", "scale", "coef")}

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """Raw log-odds for an (N, F) feature matrix."""
        return ((np.asarray(features, np.float64) - self._mean) / self._scale) @ self._coef + self._intercept

    def prob_medical_batch(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        if len(arrays) == 0:
            return np.zeros(0, np.float64)
        z = self.decision_function(np.stack([extract_features(a) for a in arrays]))
        return 1.0 / (1.0 + np.exp(-z))


class TreeEnsembleClassifier(MedicalImageClassifier):
    """Gradient-boosted regression trees on ``extract_features``; P(medical) = sigmoid(init + lr * sum)."""

    def __init__(self, weights: dict[str, Any], source: str) -> None:
        try:
            _check_header(weights, FORMAT)
            trees = weights["trees"]
            width = max(len(t["feature"]) for t in trees)
            shape = (len(trees), width)
            self._feature = np.zeros(shape, np.int64)
            self._threshold = np.zeros(shape, np.float64)
            self._left = np.zeros(shape, np.int64)
            self._right = np.zeros(shape, np.int64)
            self._value = np.zeros(shape, np.float64)
            for i, t in enumerate(trees):
                n = len(t["feature"])
                self._feature[i, :n] = t["feature"]
                self._threshold[i, :n] = t["threshold"]
                self._left[i, :n] = t["left"]
                self._right[i, :n] = t["right"]
                self._value[i, :n] = t["value"]
            self._depth = int(weights["max_depth"])
            self._init = float(weights["init"])
            self._lr = float(weights["learning_rate"])
            self.name = str(weights.get("name", "medclass-gbt"))
            self.version = str(weights["version"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ClassifierSpecError(f"{source}: not a usable medclass weights file: {exc}") from exc
        if (self._left >= width).any() or (self._right >= width).any():
            raise ClassifierSpecError(f"{source}: a tree node points outside its tree")
        if (self._feature < 0).any() or (self._feature >= len(FEATURE_NAMES)).any():
            raise ClassifierSpecError(
                f"{source}: a tree node uses a feature index outside 0..{len(FEATURE_NAMES) - 1}")
        self.metadata = {k: v for k, v in weights.items() if k != "trees"}

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """Raw log-odds for an (N, F) feature matrix (compared as float32, like scikit-learn's trees)."""
        x = np.asarray(features, dtype=np.float32).astype(np.float64)
        n, t = x.shape[0], self._feature.shape[0]
        node = np.zeros((n, t), np.int64)
        rows = np.arange(t)[None, :]
        for _ in range(self._depth):
            leaf = self._left[rows, node] < 0
            f = self._feature[rows, node]
            go_left = np.take_along_axis(x, f, axis=1) <= self._threshold[rows, node]
            nxt = np.where(go_left, self._left[rows, node], self._right[rows, node])
            node = np.where(leaf, node, nxt)
        return self._init + self._lr * self._value[rows, node].sum(axis=1)

    def prob_medical_batch(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        if len(arrays) == 0:
            return np.zeros(0, np.float64)
        feats = np.stack([extract_features(a) for a in arrays])
        return 1.0 / (1.0 + np.exp(-self.decision_function(feats)))


class CallableClassifier(MedicalImageClassifier):
    """Wraps any callable ``uint8 array -> P(medical)`` (named by ``package.module:callable``)."""

    def __init__(self, fn: Callable[[np.ndarray], float], name: str) -> None:
        self._fn = fn
        self.name = name
        self.version = str(getattr(fn, "version", getattr(fn, "__version__", "callable")))

    def prob_medical_batch(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for a in arrays:
            p = float(self._fn(a))
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"classifier {self.name} returned {p}, not a probability in [0, 1]")
            out.append(p)
        return np.asarray(out, dtype=np.float64)


def export_gradient_boosting(clf: Any, name: str = "medclass-gbt", version: str = "1", **meta: Any) -> dict:
    """The weights dict (JSON-ready) of a fitted scikit-learn ``GradientBoostingClassifier`` (binary, trained on
    ``extract_features`` as float32, class 1 = medical). ``init`` is the prior log-odds scikit-learn starts
    from; leaves whose ``feature`` is undefined get 0 (never read)."""
    trees = []
    for est in clf.estimators_[:, 0]:
        t = est.tree_
        trees.append({"feature": np.maximum(t.feature, 0).tolist(), "threshold": t.threshold.tolist(),
                      "left": t.children_left.tolist(), "right": t.children_right.tolist(),
                      "value": t.value[:, 0, 0].tolist()})
    raw0 = clf._raw_predict_init(np.zeros((1, len(FEATURE_NAMES)), np.float32))[0, 0]
    return {"format": FORMAT, "name": name, "version": version, "feature_names": list(FEATURE_NAMES),
            "init": float(raw0), "learning_rate": float(clf.learning_rate), "max_depth": int(clf.max_depth),
            **meta, "trees": trees}


def export_logistic_regression(scaler: Any, lr: Any, name: str = "medclass-linear", version: str = "1",
                               **meta: Any) -> dict:
    """The weights dict (JSON-ready) of a fitted scikit-learn ``StandardScaler`` + binary
    ``LogisticRegression`` on ``extract_features`` (class 1 = medical)."""
    return {"format": LINEAR_FORMAT, "name": name, "version": version, "feature_names": list(FEATURE_NAMES),
            "mean": np.asarray(scaler.mean_, np.float64).tolist(),
            "scale": np.asarray(scaler.scale_, np.float64).tolist(),
            "coef": np.asarray(lr.coef_, np.float64)[0].tolist(), "intercept": float(lr.intercept_[0]), **meta}


def classifier_from_weights(weights: dict[str, Any], source: str) -> MedicalImageClassifier:
    """The classifier a weights dict describes (its ``format`` picks linear or trees)."""
    if weights.get("format") == LINEAR_FORMAT:
        return LinearClassifier(weights, source)
    return TreeEnsembleClassifier(weights, source)


def load_weights_file(path: str | Path) -> MedicalImageClassifier:
    """A classifier from a JSON weights file written by the training script."""
    p = Path(path)
    if not p.is_file():
        raise ClassifierSpecError(f"{p}: medclass weights file not found")
    try:
        weights = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClassifierSpecError(f"{p}: cannot read medclass weights as JSON: {exc}") from exc
    if not isinstance(weights, dict):
        raise ClassifierSpecError(f"{p}: medclass weights must be a JSON object")
    return classifier_from_weights(weights, str(p))


def _load_callable(spec: str) -> CallableClassifier:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ClassifierSpecError(f"classifier {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ClassifierSpecError(f"classifier {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ClassifierSpecError(f"classifier {spec!r}: {attr!r} is not callable")
    return CallableClassifier(obj, spec)


def load_classifier(spec: str = "builtin") -> MedicalImageClassifier:
    """``"builtin"`` (shipped weights), a weights-file path, or ``"package.module:callable"``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ClassifierSpecError(f"classifier spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec == "builtin":
        return load_weights_file(BUILTIN_PATH)
    if ":" in spec and not Path(spec).exists() and not (len(spec) > 1 and spec[1] == ":"):
        module_name, _, attr = spec.partition(":")
        if module_name and attr and all(s.isidentifier() for s in module_name.split(".") + attr.split(".")):
            return _load_callable(spec)
    if Path(spec).suffix.lower() == ".json" or Path(spec).exists():
        return load_weights_file(spec)
    raise ClassifierSpecError(
        f"classifier spec {spec!r} is neither 'builtin', an existing weights file (.json) nor "
        "'package.module:callable'")
