"""The built-in medical-vs-non-medical image classifier (PubMedVision figure filter) on real images.

The medical images are real pip-shipped scans that the shipped model never trained on (the training script
always holds out pydicom's CT_small.dcm, dipy's T1 coronal slice and scikit-image's coffee photograph); the
chart is rendered freshly here with matplotlib, in a style of its own. No training happens in these tests
except a 5-tree fit and a small logistic regression on random numbers that check the JSON exporters
against scikit-learn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medvl.imaging.medclass import (BUILTIN_PATH, FEATURE_NAMES, ClassifierSpecError, LinearClassifier,
                                    MedicalImageClassifier, TreeEnsembleClassifier, export_gradient_boosting,
                                    export_logistic_regression, extract_features, load_classifier)
from medvl.imaging.window import WINDOW_PRESETS, apply_window

def half(array: np.ndarray) -> float:
    """A callable classifier for the ``module:callable`` spec: the share of non-black pixels."""
    return float((np.asarray(array) > 0).mean())


def not_a_probability(array: np.ndarray) -> float:
    return 3.0


def _ct() -> np.ndarray:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return apply_window(hu, *WINDOW_PRESETS["soft_tissue"])


def _dipy_t1() -> np.ndarray:
    import dipy
    a = np.load(Path(dipy.__file__).parent / "data" / "files" / "t1_coronal_slice.npy").astype(np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def _chart() -> np.ndarray:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(6.4, 3.2), dpi=90)
    a1.bar(["placebo", "10 mg", "20 mg"], [3.1, 4.4, 6.0], yerr=[0.4, 0.5, 0.7], color=["#999", "#59c", "#c55"])
    a1.set_ylabel("mean change in score")
    a2.plot([0, 4, 8, 12, 24], [100, 93, 81, 77, 70], "o-", label="treated")
    a2.plot([0, 4, 8, 12, 24], [100, 88, 70, 61, 52], "s--", label="control")
    a2.set_xlabel("weeks")
    a2.legend()
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(fig)
    return rgb


def _photo() -> np.ndarray:
    from skimage import data
    return data.coffee()


@pytest.fixture(scope="module")
def builtin() -> MedicalImageClassifier:
    return load_classifier("builtin")


def test_builtin_separates_medical_from_charts_and_photos(builtin: MedicalImageClassifier) -> None:
    medical = {"pydicom CT_small": _ct(), "dipy T1 slice": _dipy_t1()}
    other = {"matplotlib chart": _chart(), "skimage coffee photo": _photo()}
    pm = {k: builtin.prob_medical(v) for k, v in medical.items()}
    pn = {k: builtin.prob_medical(v) for k, v in other.items()}
    assert all(p > 0.5 for p in pm.values()), pm
    assert all(p < 0.5 for p in pn.values()), pn
    assert min(pm.values()) > max(pn.values())


def test_builtin_provenance_and_held_out_groups(builtin: MedicalImageClassifier) -> None:
    assert builtin.name in ("medclass-gbt", "medclass-linear") and builtin.version
    meta = builtin.metadata
    assert {"ct_small", "mr_dipy_t1", "photo_coffee"} <= set(meta["held_out_groups"])
    assert 0.0 <= meta["held_out"]["accuracy"] <= 1.0 and meta["n_test"] > 0
    assert BUILTIN_PATH.stat().st_size < 400_000


def test_any_size_gray_rgb_rgba_and_16_bit(builtin: MedicalImageClassifier) -> None:
    ct = _ct()
    big = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(ct).resize((1500, 1500)))
    rgba = np.dstack([ct, ct, ct, np.full_like(ct, 255)])
    for arr in (ct, big, np.dstack([ct] * 3), rgba, ct[:, :, None]):
        assert builtin.prob_medical(arr) > 0.5
    assert builtin.prob_medical(rgba) == builtin.prob_medical(np.dstack([ct] * 3))
    assert builtin.prob_medical(ct.astype(np.uint16) * 257) == pytest.approx(builtin.prob_medical(ct), abs=0.05)
    assert len(extract_features(ct)) == len(FEATURE_NAMES)


def test_bad_images_give_clear_errors(builtin: MedicalImageClassifier) -> None:
    with pytest.raises(ValueError, match="shape"):
        builtin.prob_medical(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        builtin.prob_medical(np.zeros((1, 40), np.uint8))
    with pytest.raises(ValueError, match="numeric"):
        builtin.prob_medical(np.array([["a", "b"], ["c", "d"]]))


def test_deterministic_and_batch_equals_single(builtin: MedicalImageClassifier) -> None:
    imgs = [_ct(), _chart(), _photo(), _dipy_t1()]
    batch = builtin.prob_medical_batch(imgs)
    again = load_classifier("builtin").prob_medical_batch(imgs)
    single = np.array([builtin.prob_medical(a) for a in imgs])
    assert batch.dtype == np.float64 and batch.shape == (4,)
    assert np.array_equal(batch, again) and np.array_equal(batch, single)
    assert builtin.prob_medical_batch([]).shape == (0,)


def test_weights_file_path_spec(tmp_path: Path, builtin: MedicalImageClassifier) -> None:
    p = tmp_path / "copy.json"
    shutil.copy(BUILTIN_PATH, p)
    clf = load_classifier(str(p))
    assert clf.prob_medical(_ct()) == builtin.prob_medical(_ct())
    assert clf.version == builtin.version


@pytest.mark.parametrize("content, match", [
    ("{not json", "cannot read medclass weights as JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"format": "something-else"}', "format is 'something-else'"),
])
def test_bad_weights_files_name_the_file(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "w.json"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(ClassifierSpecError, match=match) as e:
        load_classifier(str(p))
    assert str(p) in str(e.value)


def test_weights_with_other_features_are_refused(tmp_path: Path) -> None:
    w = json.loads(BUILTIN_PATH.read_text(encoding="utf-8"))
    w["feature_names"] = w["feature_names"][:-1]
    p = tmp_path / "old.json"
    p.write_text(json.dumps(w), encoding="utf-8")
    with pytest.raises(ClassifierSpecError, match="feature_names differ"):
        load_classifier(str(p))


@pytest.mark.parametrize("spec, match", [
    ("", "non-empty"),
    ("/no/such/weights.json", "not found"),
    ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
    ("json:no_such_function", "has no attribute 'no_such_function'"),
    ("json:__doc__", "is not callable"),
    ("definitely not a spec", "neither 'builtin'"),
])
def test_wrong_spec_is_a_clear_error(spec: str, match: str) -> None:
    with pytest.raises(ClassifierSpecError, match=match):
        load_classifier(spec)


def test_callable_spec() -> None:
    clf = load_classifier(f"{__name__}:half")
    assert clf.name == f"{__name__}:half" and clf.version == "callable"
    img = np.zeros((10, 10), np.uint8)
    img[:5] = 9
    assert clf.prob_medical(img) == 0.5
    assert np.array_equal(clf.prob_medical_batch([img, img * 0]), [0.5, 0.0])
    bad = load_classifier(f"{__name__}:not_a_probability")
    with pytest.raises(ValueError, match="not a probability"):
        bad.prob_medical(img)


def test_export_matches_scikit_learn() -> None:
    """The JSON export of a fitted GradientBoostingClassifier, evaluated by medvl in numpy, equals scikit-learn's
    log-odds (a 5-tree fit on random numbers; float32 comparisons as in scikit-learn's trees)."""
    ensemble = pytest.importorskip("sklearn.ensemble")  # optional: scikit-learn comes with nilearn (samples)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, len(FEATURE_NAMES)))
    y = (x[:, 0] + x[:, 3] ** 2 > 1).astype(int)
    clf = ensemble.GradientBoostingClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x.astype(np.float32), y)
    w = json.loads(json.dumps(export_gradient_boosting(clf, version="t")))
    ours = TreeEnsembleClassifier(w, "test")
    assert np.allclose(ours.decision_function(x), clf.decision_function(x.astype(np.float32)), atol=1e-9, rtol=0)
    assert ours.version == "t"
    w["trees"][0]["left"][0] = 10_000
    with pytest.raises(ClassifierSpecError, match="outside its tree"):
        TreeEnsembleClassifier(w, "broken.json")


def test_linear_export_matches_scikit_learn(tmp_path: Path) -> None:
    """The logistic-regression format: medvl's numpy log-odds equal scikit-learn's; it loads from a file."""
    LogisticRegression = pytest.importorskip("sklearn.linear_model").LogisticRegression
    StandardScaler = pytest.importorskip("sklearn.preprocessing").StandardScaler
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(200, len(FEATURE_NAMES)))
    y = (x[:, 1] - x[:, 5] > 0).astype(int)
    scaler = StandardScaler().fit(x)
    lr = LogisticRegression().fit(scaler.transform(x), y)
    p = tmp_path / "linear.json"
    p.write_text(json.dumps(export_logistic_regression(scaler, lr, version="t")), encoding="utf-8")
    ours = load_classifier(str(p))
    assert isinstance(ours, LinearClassifier) and ours.version == "t"
    assert np.allclose(ours.decision_function(x), lr.decision_function(scaler.transform(x)), atol=1e-9, rtol=0)
    w = json.loads(p.read_text(encoding="utf-8"))
    w["scale"][0] = 0.0
    p.write_text(json.dumps(w), encoding="utf-8")
    with pytest.raises(ClassifierSpecError, match="positive"):
        load_classifier(str(p))
