"""Train medvl's built-in medical-vs-non-medical image classifier (PubMedVision figure filter) and
evaluate it honestly.

Training data comes only from images available offline: real medical images that pip packages ship
(pydicom test files, pydicom-data, nilearn MNI152, nibabel and dipy volumes, scikit-image fundus /
pathology / microscopy, matplotlib's MRI sample) and non-medical figures (charts, plots, tables, diagrams
and text rendered here with matplotlib; natural photographs, documents, graphics and terrain rasters from
scikit-image, scikit-learn, matplotlib and PyWavelets). Views are derived per source (slices on three axes, windows,
crops, flips, annotations, white margins, JPEG, multi-panel grids with letters).

The held-out set is split BY SOURCE GROUP (one scan, one photo, one rendered chart): no variant of a
held-out source is trained on. ``ct_small``, ``mr_dipy_t1`` and ``photo_coffee`` are always held out, so
the tests can use them as images the shipped model never saw. Then a 5-fold cross-validation over all
source groups (every group held out once), and a harder test that leaves out a whole family (e.g. every
ultrasound image) and trains on everything else.

Two models on ``medvl.imaging.medclass`` features, fitted with scikit-learn (training only): a logistic
regression and gradient-boosted depth-3 trees. The one with the better balanced accuracy in a grouped
5-fold cross-validation INSIDE the training split ships; both are reported on the held-out set. The
shipped model is exported to JSON and evaluated in numpy by medvl. Deterministic for a seed.

    python benchmarks/train_medical_classifier.py [--out src/medvl/imaging/data/medclass.json]
        [--seed 0] [--no-lofo] [--sheet /tmp/sheet.png]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).parent))

from medclass_charts import KINDS, render_chart  # noqa: E402
from medclass_sources import (Source, figure_variants, medical_sources, panel_grid,  # noqa: E402
                              photo_sources)

from medvl.imaging.medclass import (BUILTIN_PATH, MedicalImageClassifier, classifier_from_weights,  # noqa: E402
                                    export_gradient_boosting, export_logistic_regression, extract_features)

FORCED_TEST = {"ct_small", "mr_dipy_t1", "photo_coffee"}
MED_PER_GROUP, PHOTO_PER_GROUP, CHARTS_PER_KIND, TEST_FRACTION = 50, 50, 30, 0.25
VERSION = "1"


@dataclass
class Sample:
    group: str
    family: str
    medical: bool
    split: str
    features: np.ndarray


def split_groups(families: dict[str, list[str]], seed: int) -> dict[str, str]:
    """Per family, about TEST_FRACTION of its groups go to test (families of one group stay in train). The
    order within a family is a hash of (seed, group name), so adding a source never reshuffles the others."""
    split: dict[str, str] = {}
    for fam in sorted(families):
        groups = sorted(families[fam])
        order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        n_test = int(round(TEST_FRACTION * len(groups))) if len(groups) > 1 else 0
        forced = [g for g in order if g in FORCED_TEST]
        rest = [g for g in order if g not in FORCED_TEST]
        test = set(forced + rest[:max(0, n_test - len(forced))])
        for g in groups:
            split[g] = "test" if g in test else "train"
    return split


def build(seed: int, sheet: list | None = None) -> list[Sample]:
    """Every sample's features; base views are kept per split for the multi-panel grids."""
    rng = np.random.default_rng(seed)
    sheet_rng = np.random.default_rng(seed + 7)  # its own stream: --sheet never changes the model
    sources: list[Source] = medical_sources() + photo_sources()
    chart_groups = [(f"chart_{k}_{i:02d}", k) for k in KINDS for i in range(CHARTS_PER_KIND)]
    families: dict[str, list[str]] = defaultdict(list)
    for s in sources:
        families[("med:" if s.medical else "non:") + s.family].append(s.group)
    for g, k in chart_groups:
        families["non:chart-" + k].append(g)
    split = split_groups(families, seed)
    samples: list[Sample] = []
    pools: dict[tuple[bool, str], list[np.ndarray]] = defaultdict(list)

    def add(img: np.ndarray, group: str, family: str, medical: bool) -> None:
        samples.append(Sample(group, family, medical, split.get(group, "?"), extract_features(img)))
        if sheet is not None and len(sheet) < 400 and sheet_rng.random() < 0.12:
            sheet.append((img, f"{family}:{'M' if medical else 'N'}"))

    for s in sources:
        views = s.views(rng)
        target = (MED_PER_GROUP if s.medical else PHOTO_PER_GROUP) * s.weight
        per_view = int(np.ceil(target / len(views)))
        for v in views:
            for img in figure_variants(v, rng, per_view, 0.6 if s.weight == 1 else 0.3):
                add(img, s.group, s.family, s.medical)
            pools[(s.medical, split[s.group])].append(v)
    for g, k in chart_groups:
        img = render_chart(k, rng)
        add(img, g, "chart-" + k, False)
        for var in figure_variants(img, rng, 1):
            add(var, g, "chart-" + k, False)
        if k != "text_block":  # text blocks are not figure panels
            pools[(False, split[g])].append(img)
    for medical in (True, False):
        for sp, n in (("train", 80), ("test", 25)):
            pool = pools[(medical, sp)]
            for i in range(n):
                panels = [pool[int(j)] for j in rng.choice(len(pool), int(rng.integers(2, 5)), replace=False)]
                grid = panel_grid(panels, rng)
                group = f"grid_{'med' if medical else 'non'}_{sp}_{i:02d}"
                split[group] = sp
                add(grid, group, "multi-panel", medical)
    return samples


class GBT:
    """Gradient-boosted depth-3 trees (scikit-learn), classes balanced by sample weight."""
    name = "gradient-boosted trees"

    def __init__(self, seed: int) -> None:
        from sklearn.ensemble import GradientBoostingClassifier
        self.model = GradientBoostingClassifier(n_estimators=150, max_depth=3, learning_rate=0.1, subsample=0.5,
                                                max_features=0.5, random_state=seed)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "GBT":
        self.model.fit(x.astype(np.float32), y, sample_weight=np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean())))
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return self.model.decision_function(x.astype(np.float32))

    def export(self, **meta) -> dict:
        return export_gradient_boosting(self.model, name="medclass-gbt", **meta)


class LogReg:
    """Standardized features -> L2 logistic regression (C = 1), classes balanced."""
    name = "logistic regression"

    def __init__(self, seed: int) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
        self.scaler = StandardScaler()
        self.model = LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced", random_state=seed)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LogReg":
        self.model.fit(self.scaler.fit_transform(x), y)
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return self.model.decision_function(self.scaler.transform(x))

    def export(self, **meta) -> dict:
        return export_logistic_regression(self.scaler, self.model, name="medclass-linear", **meta)


MODELS = {"logreg": LogReg, "gbt": GBT}


def predict(model, x: np.ndarray) -> np.ndarray:
    return (model.decision_function(x) > 0).astype(np.int64)


def report(name: str, y: np.ndarray, pred: np.ndarray, groups: list[str], fams: list[str]) -> dict:
    acc = float((y == pred).mean())
    cm = [[int(((y == a) & (pred == b)).sum()) for b in (1, 0)] for a in (1, 0)]
    rec_m = cm[0][0] / max(1, sum(cm[0]))
    rec_n = cm[1][1] / max(1, sum(cm[1]))
    print(f"\n== {name}: n={len(y)} (medical {int(y.sum())}, non-medical {int((1 - y).sum())}), "
          f"groups={len(set(groups))}")
    print(f"accuracy {acc:.3f}  recall(medical) {rec_m:.3f}  recall(non-medical) {rec_n:.3f}  "
          f"balanced {0.5 * (rec_m + rec_n):.3f}")
    print(f"confusion (rows true medical/non-medical, cols predicted medical/non-medical): {cm}")
    by: dict[str, list[bool]] = defaultdict(list)
    for f, ok in zip(fams, y == pred):
        by[f].append(bool(ok))
    print("per family: " + ", ".join(f"{f} {np.mean(v):.2f} ({len(v)})" for f, v in sorted(by.items())))
    return {"accuracy": acc, "recall_medical": rec_m, "recall_non_medical": rec_n, "confusion": cm, "n": len(y)}


def per_group(y: np.ndarray, pred: np.ndarray, groups: list[str]) -> None:
    by: dict[str, list[bool]] = defaultdict(list)
    for g, ok in zip(groups, y == pred):
        by[g.rsplit("_", 1)[0] if g.startswith(("chart_", "grid_")) else g].append(bool(ok))
    print("per source group (charts / grids pooled by kind): " +
          ", ".join(f"{g} {np.mean(v):.2f}/{len(v)}" for g, v in sorted(by.items())))


def group_folds(samples: list[Sample], mask: np.ndarray, seed: int, folds: int = 5) -> np.ndarray:
    """A fold number per sample (-1 outside ``mask`` and for multi-panel grids): the groups of each family
    are dealt round-robin to the folds in a seeded order, so every family is spread over the folds."""
    rng = np.random.default_rng(seed + 1)
    by_family: dict[str, list[str]] = defaultdict(list)
    for s, m in zip(samples, mask):
        if m and s.family != "multi-panel" and s.group not in by_family[s.family]:
            by_family[s.family].append(s.group)
    fold_of: dict[str, int] = {}
    for fam in sorted(by_family):
        groups = by_family[fam]
        start = int(rng.integers(folds))
        for i, j in enumerate(rng.permutation(len(groups))):
            fold_of[groups[j]] = (start + i) % folds
    return np.array([fold_of.get(s.group, -1) if m else -1 for s, m in zip(samples, mask)])


def cv_predict(kind: str, x: np.ndarray, y: np.ndarray, fold: np.ndarray, seed: int) -> np.ndarray:
    pred = np.full(len(y), -1, np.int64)
    for k in sorted(set(fold.tolist()) - {-1}):
        tr, te = (fold >= 0) & (fold != k), fold == k
        pred[te] = predict(MODELS[kind](seed).fit(x[tr], y[tr]), x[te])
    return pred


def balanced(y: np.ndarray, pred: np.ndarray) -> float:
    return 0.5 * (float((pred[y == 1] == 1).mean()) + float((pred[y == 0] == 0).mean()))


def grouped_cv(kind: str, samples: list[Sample], x: np.ndarray, y: np.ndarray, seed: int) -> None:
    """Every source group held out once (5 folds over all groups; multi-panel grids excluded): a steadier
    estimate than one split when a family has only a handful of sources."""
    fold = group_folds(samples, np.ones(len(samples), bool), seed)
    pred = cv_predict(kind, x, y, fold, seed)
    sel = np.flatnonzero(fold >= 0)
    report(f"5-fold cross-validation over ALL source groups ({MODELS[kind].name}; every group held out once)",
           y[sel], pred[sel], [samples[i].group for i in sel], [samples[i].family for i in sel])
    per_group(y[sel], pred[sel], [samples[i].group for i in sel])


def lofo(kind: str, samples: list[Sample], x: np.ndarray, y: np.ndarray, seed: int) -> None:
    """Hard test: each family left out entirely (grids excluded), trained on all other families (every
    non-chart family, and four chart kinds)."""
    fams = np.array([s.family for s in samples])
    print(f"\n== leave-one-family-out ({MODELS[kind].name}; a whole modality / figure kind never seen in training)")
    rows = []
    left_out = {f for f in fams if not f.startswith("chart-")}
    left_out |= {"chart-pie", "chart-heatmap", "chart-text_block", "chart-schematic"}
    for f in sorted(left_out - {"multi-panel"}):
        tr = (fams != f) & (fams != "multi-panel")
        te = fams == f
        acc = float((predict(MODELS[kind](seed).fit(x[tr], y[tr]), x[te]) == y[te]).mean())
        rows.append((f, int(y[te][0]), acc, int(te.sum())))
        print(f"  {f:<22} {'medical' if y[te][0] else 'non-medical':<12} accuracy {acc:.3f}  n={int(te.sum())}")
    for cls in (1, 0):
        accs = [a for _, c, a, _ in rows if c == cls]
        print(f"  mean over {'medical' if cls else 'non-medical'} families: {np.mean(accs):.3f}")


def timing(clf: MedicalImageClassifier, rng: np.random.Generator) -> None:
    sizes = [(256, 256), (512, 512, 3), (1024, 1024), (2000, 1800, 3)]
    print("\n== inference time of the shipped classifier (features + model, one image per call, median of 20)")
    for shp in sizes:
        img = rng.integers(0, 256, shp, dtype=np.uint8)
        ts = []
        for _ in range(20):
            t0 = time.perf_counter()
            clf.prob_medical(img)
            ts.append(time.perf_counter() - t0)
        print(f"  {str(shp):<16} {1000 * np.median(ts):.2f} ms")


def save_sheet(items: list, path: str) -> None:
    from PIL import Image, ImageDraw
    tiles = []
    for img, label in items[:120]:
        im = Image.fromarray(img).convert("RGB")
        im.thumbnail((120, 120))
        t = Image.new("RGB", (120, 132), "white")
        t.paste(im, (0, 0))
        ImageDraw.Draw(t).text((1, 121), label[:22], fill=(200, 0, 0))
        tiles.append(t)
    sheet = Image.new("RGB", (12 * 120, ((len(tiles) + 11) // 12) * 132), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % 12) * 120, (i // 12) * 132))
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(BUILTIN_PATH), help="weights JSON to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-lofo", action="store_true",
                    help="skip the all-group cross-validation and the leave-one-family-out test")
    ap.add_argument("--sheet", default=None, help="write a contact sheet of training samples (PNG)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    sheet: list | None = [] if args.sheet else None
    samples = build(args.seed, sheet)
    x = np.stack([s.features for s in samples])
    y = np.array([int(s.medical) for s in samples])
    tr = np.array([s.split == "train" for s in samples])
    print(f"built {len(samples)} samples ({int(y.sum())} medical) from "
          f"{len({s.group for s in samples})} groups in {time.perf_counter() - t0:.1f}s")
    test_groups = sorted({s.group for s in samples
                          if s.split == "test" and not s.group.startswith(("chart_", "grid_"))})
    print(f"held-out source groups (plus {len({s.group for s in samples if s.split == 'test'}) - len(test_groups)} "
          f"charts/grids): {', '.join(test_groups)}")
    te = ~tr
    groups = [s.group for s in samples]
    fams = [s.family for s in samples]
    sel = lambda arr: [a for a, m in zip(arr, te) if m]  # noqa: E731
    # model choice by grouped 5-fold cross-validation INSIDE the training split (the held-out set is not used)
    fold = group_folds(samples, tr, args.seed)
    scores = {k: balanced(y[fold >= 0], cv_predict(k, x, y, fold, args.seed)[fold >= 0]) for k in MODELS}
    kind = max(MODELS, key=lambda k: (scores[k], k == "logreg"))
    print("model choice, balanced accuracy of a grouped 5-fold CV inside the training split: " +
          ", ".join(f"{MODELS[k].name} {v:.3f}" for k, v in scores.items()) + f" -> {MODELS[kind].name}")
    results, fitted = {}, {}
    for k in sorted(MODELS, key=lambda k: k != kind):
        fitted[k] = MODELS[k](args.seed).fit(x[tr], y[tr])
        pred = predict(fitted[k], x[te])
        results[k] = report(f"held-out by source group, {MODELS[k].name}{' (SHIPPED)' if k == kind else ''}",
                            y[te], pred, sel(groups), sel(fams))
        per_group(y[te], pred, sel(groups))
    import sklearn
    meta = {"seed": args.seed, "trained_with": f"scikit-learn {sklearn.__version__}", "model": MODELS[kind].name,
            "cv_balanced_accuracy": scores, "n_train": int(tr.sum()), "n_test": int(te.sum()),
            "held_out": results[kind], "held_out_groups": test_groups, "threshold": 0.5}
    text = json.dumps(fitted[kind].export(version=VERSION, **meta), separators=(",", ":"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    ours = classifier_from_weights(json.loads(text), args.out)
    diff = np.abs(ours.decision_function(x) - fitted[kind].decision_function(x)).max()
    print(f"\nwrote {args.out}: {len(text) / 1024:.1f} KiB, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}, "
          f"numpy vs scikit-learn max |log-odds diff| {diff:.2e}")
    if diff > 1e-6:
        raise SystemExit("the exported model disagrees with scikit-learn")
    timing(ours, np.random.default_rng(args.seed))
    if not args.no_lofo:
        grouped_cv(kind, samples, x, y, args.seed)
        lofo(kind, samples, x, y, args.seed)
    if args.sheet:
        save_sheet(sheet or [], args.sheet)
    print(f"\ntotal {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
