"""Caption near-duplicate removal (:mod:`medvl.curate.caption_dedup`) on synthetic medical figure captions.

Captions are built from slots (modality, view, region, one or two findings, location, size, patient,
marker, figure label, a context sentence) over 10 modalities; a known share are duplicates of an earlier
caption: re-rendered with small edits (figure label, case and punctuation, British/American spelling,
abbreviations spelled out, connector words, a dropped marker) and half of them also restructured
("<finding> <location> on <view> <region>"). Distinct captions that share every slot but the side, a size
or an age are hard negatives (an embedding barely tells them apart) and count as false positives.

Prints:
0. cosine similarities of hand-written caption pairs (``benchmarks/caption_pairs.json``: paraphrases, distinct
   captions of one modality and organ, one-word changes) and the share of each at or above several thresholds;
1. embedding rate of all-MiniLM-L6-v2 on a subset (``--embed``, default 3000; ``--embed 100000`` embeds all);
2. precision / recall of the greedy decision on those real embeddings at several thresholds;
3. the dedup pass on ``--n`` (default 100k) rows: the real embeddings plus synthetic rows built from them
   (mixtures of two real caption vectors plus noise, matched to the real similarity distribution; their
   duplicates are noisy copies), in a memory-mapped file: wall time, peak Python/NumPy memory of the pass
   (tracemalloc) and precision / recall against the injected duplicates.

Run: python benchmarks/bench_caption_dedup.py [--n 100000] [--embed 3000] [--dup-share 0.1] [--block 4096]"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from medvl.curate.caption_dedup import embed_texts, greedy_dedup, load_encoder
from medvl.curate.config import CaptionDedupConfig

MODALITIES = {
    "CT": (["Axial CT", "Contrast-enhanced CT", "Non-contrast CT", "Coronal CT reconstruction"],
           ["of the chest", "of the abdomen", "of the head", "of the pelvis", "of the neck"],
           ["a spiculated nodule", "a ground-glass opacity", "a hypodense lesion", "free fluid", "a calcified mass",
            "lymphadenopathy", "a comminuted fracture", "an abscess with an air-fluid level", "bowel wall thickening",
            "an acute haematoma"]),
    "MRI": (["T2-weighted MRI", "T1-weighted contrast-enhanced MRI", "Axial FLAIR MRI", "Diffusion-weighted MRI",
             "Sagittal T1-weighted MRI"],
            ["of the brain", "of the lumbar spine", "of the knee", "of the liver", "of the cervical spine"],
            ["a ring-enhancing lesion", "a hyperintense lesion", "restricted diffusion", "a disc herniation",
             "a meniscal tear", "bone marrow oedema", "an extra-axial mass", "white matter hyperintensities",
             "a cystic lesion", "cord compression"]),
    "X-ray": (["Chest radiograph", "Plain radiograph", "Anteroposterior radiograph", "Lateral radiograph"],
              ["of the chest", "of the wrist", "of the knee", "of the hip", "of the abdomen"],
              ["a pleural effusion", "cardiomegaly", "a pneumothorax", "a displaced fracture", "joint space narrowing",
               "dilated bowel loops", "consolidation", "a lytic lesion", "periosteal reaction", "free air"]),
    "ultrasound": (["Ultrasound", "Doppler ultrasound", "Transvaginal ultrasound", "Point-of-care ultrasound"],
                   ["of the kidney", "of the gallbladder", "of the thyroid", "of the liver", "of the ovary"],
                   ["hydronephrosis", "gallstones with acoustic shadowing", "a hypoechoic nodule", "a complex cyst",
                    "increased vascularity", "a solid mass", "ascites", "wall thickening", "a calcified focus",
                    "a septated cyst"]),
    "histopathology": (["Hematoxylin and eosin staining", "Photomicrograph", "Immunohistochemistry for Ki-67",
                        "Periodic acid-Schiff staining"],
                       ["of the liver biopsy", "of the colon biopsy", "of the renal biopsy", "of the skin excision",
                        "of the lymph node"],
                       ["macrovesicular steatosis", "adenocarcinoma", "crescentic glomerulonephritis",
                        "granulomatous inflammation", "a high proliferation index", "interface hepatitis",
                        "nests of atypical melanocytes", "amyloid deposits", "Reed-Sternberg cells",
                        "signet-ring cells"]),
    "endoscopy": (["Colonoscopy image", "Upper endoscopy", "Capsule endoscopy", "Bronchoscopy image"],
                  ["of the sigmoid colon", "of the stomach", "of the duodenum", "of the oesophagus",
                   "of the right main bronchus"],
                  ["a pedunculated polyp", "a clean-based ulcer", "varices", "diffuse erythema", "an ulcerated mass",
                   "a stricture", "active bleeding", "angiodysplasia", "a submucosal lesion", "mucosal oedema"]),
    "fundus": (["Fundus photograph", "Colour fundus image", "Wide-field fundus photograph"],
               ["of the right eye", "of the left eye", "of both eyes"],
               ["flame-shaped haemorrhages", "optic disc cupping", "soft drusen", "cotton wool spots",
                "neovascularization of the disc", "a cherry-red spot", "retinal detachment", "papilloedema",
                "hard exudates", "a choroidal naevus"]),
    "dermoscopy": (["Dermoscopy", "Dermoscopic image", "Clinical photograph and dermoscopy"],
                   ["of a pigmented lesion", "of a nodule on the back", "of a facial lesion", "of a nail lesion"],
                   ["an atypical pigment network", "a blue-white veil", "milia-like cysts", "arborizing vessels",
                    "regression structures", "irregular dots and globules", "a longitudinal melanonychia",
                    "shiny white lines", "a central white patch", "comedo-like openings"]),
    "OCT": (["Optical coherence tomography", "Spectral-domain OCT", "OCT angiography"],
            ["of the macula", "of the optic nerve head", "of the fovea"],
            ["subretinal fluid", "an epiretinal membrane", "a macular hole", "intraretinal cysts",
             "drusenoid pigment epithelial detachment", "retinal nerve fibre layer thinning",
             "choroidal neovascularization", "vitreomacular traction", "outer retinal atrophy", "a lamellar hole"]),
    "PET": (["FDG PET/CT", "PET-CT", "Maximum intensity projection PET"],
            ["of the chest", "of the whole body", "of the neck", "of the abdomen"],
            ["intense FDG uptake in a hilar lymph node", "diffuse thyroid uptake", "multiple bone metastases",
             "a hypermetabolic lung mass", "uptake in the colon", "a photopenic liver lesion",
             "hypermetabolic adenopathy", "brown fat uptake", "a hypermetabolic adrenal nodule",
             "uptake in the pleura"]),
}
WHERE = ["on the right", "on the left", "centrally", "at the periphery", "in the upper part", "in the lower part",
         "", ""]
PATIENTS = ["", "", "in a {a}-year-old {man}", "in a {a}-year-old {woman}", "after treatment", "at {m}-month follow-up"]
CONTEXT = ["Compare with the prior study.", "The lesion was resected.", "Biopsy confirmed the diagnosis.",
           "Findings resolved after antibiotic therapy.", "Scale bar, {n} um.", "Images courtesy of the department.",
           "The patient presented with fever and weight loss.", "Follow-up imaging was recommended.",
           "No prior imaging was available.", "The finding was incidental.", "Symptoms began {n} days earlier.",
           "Surgery was performed the next day.", "Laboratory tests showed elevated inflammatory markers.",
           "The patient had a history of smoking.", "The same patient as in Figure {f}.", "Note the sharp margins.",
           "Note the surrounding inflammation.", "Staging was completed with whole-body imaging.",
           "Histology is shown in panel {p}.", "The patient was treated conservatively.",
           "The patient was referred for chemotherapy.", "Genetic testing revealed a pathogenic variant.",
           "Arrows mark the abnormality.", "Colour Doppler was unremarkable.", "Contrast material was not given.",
           "This appearance is typical of the entity.", "Differential diagnosis included lymphoma.",
           "The patient recovered fully.", "The mother had a similar condition.", "Blood cultures were negative."]
MARKERS = ["", "", " (arrow)", " (arrowheads)", " (asterisk)", " (x200)", " (x400)"]
FIGURES = ["", "", "Figure {f}. ", "Fig. {f}{p}: ", "({p}) "]
CONNECT = ["showing", "demonstrating", "revealing", "with"]
SPELLING = [("haemorrhage", "hemorrhage"), ("oedema", "edema"), ("oesophagus", "esophagus"), ("naevus", "nevus"),
            ("haematoma", "hematoma"), ("Colour", "Color"), ("papilloedema", "papilledema"), ("fibre", "fiber")]
ABBREV = [("CT", "computed tomography"), ("MRI", "magnetic resonance imaging"), ("OCT", "optical coherence tomography"),
          ("FDG", "fluorodeoxyglucose"), ("FLAIR", "fluid-attenuated inversion recovery")]


def _slots(rng: random.Random) -> dict:
    view, region, finding = (rng.choice(x) for x in MODALITIES[rng.choice(sorted(MODALITIES))])
    size = f", measuring {rng.randint(3, 80)} mm" if rng.random() < 0.35 else ""
    age = rng.randint(1, 90)
    patient = rng.choice(PATIENTS).format(a=age, m=rng.choice([3, 6, 12, 24]), man="man" if age >= 18 else "boy",
                                          woman="woman" if age >= 18 else "girl")
    findings = MODALITIES[next(m for m in MODALITIES if finding in MODALITIES[m][2])][2]
    if rng.random() < 0.5:
        finding = f"{finding} and {rng.choice([f for f in findings if f != finding])}"
    context = rng.choice(CONTEXT).format(n=rng.randint(2, 200), f=rng.randint(1, 8), p=rng.choice("ABCDEF")) \
        if rng.random() < 0.6 else ""
    return {"view": view, "region": region, "finding": finding, "where": rng.choice(WHERE), "size": size,
            "context": context,
            "patient": patient, "marker": rng.choice(MARKERS), "connect": rng.choice(CONNECT),
            "figure": rng.choice(FIGURES).format(f=rng.randint(1, 8), p=rng.choice("ABCDEF"))}


def _render(s: dict, restructure: bool = False) -> str:
    tail = (f" {s['where']}" if s["where"] else "") + s["size"] + (f" {s['patient']}" if s["patient"] else "")
    if restructure:
        view = s["view"] if s["view"][:2].isupper() else s["view"][0].lower() + s["view"][1:]
        body = f"{s['finding'][0].upper()}{s['finding'][1:]}{tail} on {view} {s['region']}"
    else:
        body = f"{s['view']} {s['region']} {s['connect']} {s['finding']}{tail}"
    return f"{s['figure']}{body}{s['marker']}." + (f" {s['context']}" if s["context"] else "")


def _variant(s: dict, rng: random.Random) -> str:
    """A near-duplicate rendering of slots ``s``: 1-3 small edits, half of them restructured."""
    v = dict(s)
    edits = rng.sample(["figure", "connect", "marker", "spelling", "abbrev", "case"], rng.randint(1, 3))
    if "figure" in edits:
        v["figure"] = rng.choice([f for f in FIGURES if f != s["figure"]]).format(f=rng.randint(1, 8), p="B")
    if "connect" in edits:
        v["connect"] = rng.choice([c for c in CONNECT if c != s["connect"]])
    if "marker" in edits:
        v["marker"] = ""
    text = _render(v, restructure=rng.random() < 0.5)
    if "spelling" in edits:
        for a, b in SPELLING:
            text = text.replace(a, b)
    if "abbrev" in edits:
        for a, b in ABBREV:
            text = re.sub(rf"\b{a}\b", b, text, count=1)
    if "case" in edits:
        text = text.lower().rstrip(".")
    return text


def make_captions(n: int, dup_share: float, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` captions and their duplicate group: items of one group are variants of one caption (identical
    texts share a group too); about ``dup_share`` of the items repeat an earlier item's group."""
    rng = random.Random(seed)
    texts: list[str] = []
    group: list[int] = []
    bases: list[dict] = []
    by_text: dict[str, int] = {}
    for _ in range(n):
        if bases and rng.random() < dup_share:
            g = rng.randrange(len(bases))
            text = _variant(bases[g], rng)
        else:
            s = _slots(rng)
            text, g = _render(s), len(bases)
            bases.append(s)
        g = by_text.setdefault(text, g)  # an identical text joins its first occurrence's group
        texts.append(text)
        group.append(g)
    return texts, np.asarray(group)


def score(keep: np.ndarray, partner: np.ndarray, group: np.ndarray) -> tuple[float, float, float, int, int]:
    """(precision, recall, partner share, dropped, true duplicates), item level: an item is a true duplicate when
    an earlier item shares its group; precision = dropped items that are true duplicates / dropped; recall = true
    duplicates dropped / true duplicates; partner share = dropped true duplicates whose named kept item is of
    their group."""
    seen: set[int] = set()
    truth = np.zeros(len(group), dtype=bool)
    for k, g in enumerate(group.tolist()):
        truth[k] = g in seen
        seen.add(g)
    dropped = ~keep
    hit = dropped & truth
    same = int(sum(group[d] == group[partner[d]] for d in np.nonzero(hit)[0]))
    return (float(hit.sum() / max(1, dropped.sum())), float(hit.sum() / max(1, truth.sum())),
            same / max(1, int(hit.sum())), int(dropped.sum()), int(truth.sum()))


def synthetic_rows(real: np.ndarray, n: int, dup_share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors shaped like caption embeddings: mixtures of two real rows plus noise (distinct items),
    and noisy copies of earlier rows (duplicates, cosine ~0.93-0.99). Returns (rows, group)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    group = np.empty(n, dtype=np.int64)
    is_dup = rng.random(n) < dup_share
    is_dup[0] = False
    a, b = rng.integers(0, len(real), n), rng.integers(0, len(real), n)
    w = rng.uniform(0.3, 0.7, n)[:, None].astype(np.float32)
    base = w * real[a] + (1 - w) * real[b] + rng.normal(scale=0.035, size=out.shape).astype(np.float32)
    for k in range(n):
        if is_dup[k]:
            src = int(rng.integers(0, k))
            out[k] = out[src] + rng.normal(scale=rng.uniform(0.004, 0.012), size=out.shape[1])
            group[k] = group[src]
        else:
            out[k] = base[k]
            group[k] = k
        out[k] /= np.linalg.norm(out[k])
    return out, group


def pair_study(enc: object) -> None:
    pairs = json.loads((Path(__file__).with_name("caption_pairs.json")).read_text(encoding="utf-8"))
    print("0. hand-written caption pairs (cosine):")
    for kind in ("paraphrase", "distinct", "minimal"):
        a = embed_texts([x for x, _ in pairs[kind]], enc)
        b = embed_texts([y for _, y in pairs[kind]], enc)
        s = (a * b).sum(1)
        shares = ", ".join(f">= {t}: {(s >= t).mean():.2f}" for t in (0.85, 0.9, 0.95))
        print(f"   {kind:10s} n={len(s):2d} min {s.min():.3f} median {np.median(s):.3f} max {s.max():.3f}; {shares}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--embed", type=int, default=3000)
    ap.add_argument("--dup-share", type=float, default=0.1)
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--threshold", type=float, default=CaptionDedupConfig().threshold, help="of the pass in 3.")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    import torch

    t = time.perf_counter()
    enc = load_encoder()
    print(f"model load {time.perf_counter() - t:.1f} s; torch threads {torch.get_num_threads()}")
    pair_study(enc)
    texts, group = make_captions(args.n, args.dup_share)
    sub, sub_group = texts[:args.embed], group[:args.embed]
    t = time.perf_counter()
    real = embed_texts(sub, enc, batch_size=args.batch_size)
    dt = time.perf_counter() - t
    print(f"1. embedding: {len(sub)} captions in {dt:.1f} s = {len(sub) / dt:.0f} captions/s "
          f"(-> {args.n / (len(sub) / dt) / 60:.1f} min for {args.n})")
    print(f"2. quality on the {len(sub)} real embeddings ({int(np.unique(sub_group).size)} groups):")
    for th in (0.85, 0.9, 0.93, 0.95, 0.97):
        d = greedy_dedup(real, th, args.block)
        p, r, ps, nd, nt = score(d.keep, d.partner, sub_group)
        print(f"   threshold {th:.2f}: dropped {nd}, true duplicates {nt}, precision {p:.3f}, recall {r:.3f}, "
              f"named kept item of the right group {ps:.3f}")
    if args.n > len(sub):
        rows, g2 = synthetic_rows(real, args.n - len(sub), args.dup_share)
        allrows = np.concatenate([real, rows])
        groups = np.concatenate([sub_group, g2 + sub_group.max() + 1])
    else:
        allrows, groups = real, sub_group
    off = ~np.eye(min(2000, len(real)), dtype=bool)
    rs = (real[:2000] @ real[:2000].T)[off]
    sy = allrows[-2000:] @ allrows[-2000:].T
    sy = sy[~np.eye(len(sy), dtype=bool)]
    print(f"   similarity of random pairs, real vs synthetic rows: mean {rs.mean():.3f} / {sy.mean():.3f}, "
          f"99.9th percentile {np.percentile(rs, 99.9):.3f} / {np.percentile(sy, 99.9):.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        mm = np.lib.format.open_memmap(Path(tmp) / "e.npy", mode="w+", dtype=np.float32, shape=allrows.shape)
        mm[:] = allrows
        mm.flush()
        del allrows
        tracemalloc.start()
        t = time.perf_counter()
        d = greedy_dedup(mm, args.threshold, args.block)
        dt = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        p, r, ps, nd, nt = score(d.keep, d.partner, groups)
        print(f"3. dedup pass on {len(groups)} rows (threshold {args.threshold}, block {args.block}, memory-mapped "
              "input): "
              f"{dt:.1f} s, peak traced memory {peak / 2**20:.0f} MiB (input {mm.nbytes / 2**20:.0f} MiB on disk); "
              f"dropped {nd}, true duplicates {nt}, precision {p:.3f}, recall {r:.3f}, right group named {ps:.3f}")
        del mm


if __name__ == "__main__":
    main()
