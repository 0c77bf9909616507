"""Speed of the PubMedVision text filter's term counting (medvl.curate.medterms) on the shipped vocabulary.

Prints the vocabulary load time, captions per second and words per second over a fixed set of figure captions
(repeated to ``--captions``), and, for scale, the same count done the naive way (one compiled regex per term,
over a sample of ``--naive-terms`` terms, extrapolated to the whole vocabulary): the ratio is what the
dictionary-of-word-tuples matcher saves. Run: ``python benchmarks/bench_medterms.py``."""

from __future__ import annotations

import argparse
import re
import time

CAPTIONS = [
    "Contrast-enhanced CT scan of the chest. A large cavitating lesion was identified in the right upper lobe with "
    "pleural involvement and likely extension into the chest wall; right hilar lymphadenopathy was suspected.",
    "Axial T2-weighted MRI of the brain shows a hyperintense lesion in the left temporal lobe with perilesional "
    "edema, consistent with glioma.",
    "Fundus photograph of the right eye showing optic disc edema, retinal hemorrhages and macular exudates.",
    "Immunohistochemical staining of breast carcinoma tissue showing microvessel density (magnification x200).",
    "Bar chart of the number of survey responses per year, grouped by region and age group.",
    "Kaplan-Meier survival curves for overall survival of patients with high and low expression of the gene.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captions", type=int, default=20000)
    ap.add_argument("--naive-terms", type=int, default=2000)
    args = ap.parse_args()
    from medvl.curate.medterms import DEFAULT_VOCABULARY, _load, read_terms

    t0 = time.perf_counter()
    voc = _load.__wrapped__(str(DEFAULT_VOCABULARY))  # uncached, to time the load
    load_s = time.perf_counter() - t0
    texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.captions)]
    n_words = sum(len(t.split()) for t in texts)
    t0 = time.perf_counter()
    total = sum(voc.count(t) for t in texts)
    dt = time.perf_counter() - t0
    print(f"vocabulary: {len(voc)} terms, loaded in {load_s:.2f} s")
    print(f"medterms: {args.captions} captions ({n_words} words) in {dt:.3f} s = {args.captions / dt:,.0f} "
          f"captions/s, {n_words / dt:,.0f} words/s ({total} terms found)")
    terms = read_terms(DEFAULT_VOCABULARY)[:: max(1, len(voc) // args.naive_terms)][: args.naive_terms]
    pats = [re.compile(r"\b" + re.escape(t) + r"\b", re.IGNORECASE) for t in terms]
    sample = texts[: len(CAPTIONS) * 10]
    t0 = time.perf_counter()
    for t in sample:
        sum(1 for p in pats if p.search(t))
    naive_per_caption = (time.perf_counter() - t0) / len(sample) * (len(voc) / len(pats))
    print(f"naive per-term regex loop (extrapolated to {len(voc)} terms): {1 / naive_per_caption:,.1f} captions/s; "
          f"ratio medterms / naive = {(args.captions / dt) * naive_per_caption:,.0f}x")


if __name__ == "__main__":
    main()
