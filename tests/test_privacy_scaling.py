"""The scrubber at the size of a large DICOM folder: it redacts every value it holds, and matches spellings
as people write them. Its speed as values accumulate is measured by benchmarks/bench_scrub.py (the quality
bar keeps timings out of tests: a timed test failed under load in CI)."""

from __future__ import annotations

import random

from medvl.core.privacy import REDACTED, Scrubber


def folder_values(n_files: int, seed: int = 0) -> set[str]:
    """Identifying values a DICOM folder of ``n_files`` single-frame files gives: a SOPInstanceUID per file, a
    SeriesInstanceUID per 50 files, and per 200 files a patient (name, ID, birth date), a study (UID, date,
    accession number) and an institution."""
    rng = random.Random(seed)
    families = ["SMITH", "NGUYEN", "GARCIA", "MÜLLER", "O'BRIEN", "KOWALSKI", "TANAKA", "OKAFOR"]
    given = ["JOHN", "MARY", "ANNE", "LUIS", "MEI", "ADA"]
    out: set[str] = set()
    for i in range(n_files):
        out.add(f"1.3.6.1.4.1.14519.5.2.1.{rng.randint(1, 10**9)}.{rng.randint(1, 10**12)}")
        if i % 50 == 0:
            out.add(f"1.3.6.1.4.1.14519.5.2.1.{rng.randint(1, 10**9)}.{i}")
        if i % 200 == 0:
            out |= {f"{rng.choice(families)}{i // 200}^{rng.choice(given)}", f"PAT-{i // 200:06d}",
                    f"{rng.randint(1930, 2010)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                    f"{rng.randint(2000, 2020)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                    f"ACC{rng.randint(10**6, 10**7)}", f"Hospital {i // 200} General"}
    return out


def test_scrubbers_of_a_large_folder_redact_every_value_they_hold():
    """A scrubber holding a 20k-file folder's values redacts the identifiers of strings written like paths and
    reject reasons, as one holding 1k files' does. (How its cost grows with the values is measured by
    benchmarks/bench_scrub.py, not timed here: the build per value and the cost per string stay flat.)"""
    small_values, large_values = folder_values(1_000), folder_values(20_000)
    small, large = Scrubber(small_values, key="k"), Scrubber(large_values, key="k")
    uids = sorted(v for v in small_values if v.startswith("1.3.6"))[:50]
    strings = [f"patients/{u}/IM{i:04d}.dcm: lesion {i % 90} mm, PAT-{i % 5:06d}" for i, u in enumerate(uids)]
    for x in strings:
        a, b = small(x), large(x)
        assert a == b, (x, a, b)  # same key: the same tokens, whatever else the scrubber holds
        assert REDACTED in a and not any(u in a for u in uids) and "PAT-0000" not in a
        assert "lesion" in a and " mm" in a  # the medical text stays
    out = small("PAT-000003 seen")
    assert "PAT-000003" not in out and out.startswith(REDACTED + "-")


def test_capital_dotted_i_is_matched():
    """``"İSTANBUL".lower()`` has a combining dot (9 characters for 8), so the lower-cased spelling never
    matched the name as written; spellings are compared case-folded character by character now."""
    s = Scrubber(["İSTANBUL^AYŞE"], key="k")
    for text in ("scans/İSTANBUL_AYŞE/ct.dcm", "İstanbul Ayşe", "İSTANBUL"):
        out = s(text)
        assert "stanbul" not in out.lower() and REDACTED in out, (text, out)
    assert s("istanbul/ct.dcm") == "istanbul/ct.dcm"  # another letter: not this name


def test_earliest_and_longest_match_wins():
    s = Scrubber(["DOE^JOHN", "JOHN^SMITH", "1.2.840.10008.5", "20010203"], key="k")
    joined, uid = s("doe john"), s("1.2.840.10008.5")
    assert joined.count(REDACTED) == 1  # "doe john" as one spelling, not "doe" and "john"
    assert s("doe john smith").startswith(joined)  # the earliest match first; "john smith" overlaps it
    assert s("x1.2.840.10008.5/2001-02-03") == f"x{uid}/{s('2001-02-03')}"
    assert s("1.2.840.10008.5.1") == "1.2.840.10008.5.1" and s("21.2.840.10008.5") == "21.2.840.10008.5"
