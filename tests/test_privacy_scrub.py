"""The scrubber replaces identifying values and their common spellings with keyed tokens."""

import re

from medvl.core.privacy import REDACTED, Scrubber


def test_person_name_variants_and_dates():
    s = Scrubber(["DOE^JOHN", "20010203", "St. Elsewhere Hospital", "M"], key="k")
    text = "scans/Doe_John/2001-02-03/John Doe at st. elsewhere hospital on 02/03/2001.dcm M"
    out = s(text)
    assert "doe" not in out.lower() and "john" not in out.lower()
    assert "2001-02-03" not in out and "02/03/2001" not in out and "elsewhere" not in out.lower()
    assert out.endswith(" M")  # one-letter values are not identifying on their own and are left alone
    assert REDACTED in out


def test_multi_word_values_in_paths():
    s = Scrubber(["Mercy General"], key="k")
    for spelled in ("scan_Mercy_General.dcm", "mercy-general/x", "MercyGeneral.png", "Mercy General"):
        assert "mercy" not in s(spelled).lower(), spelled


def test_tokens_are_keyed_distinct_and_stable():
    s = Scrubber(["CompressedSamples^RG1", "CompressedSamples^MR2"], key="salt")
    a, b = s("RG1_UNCI.dcm"), s("MR2_UNCI.dcm")
    assert a != b  # two files stay distinguishable after scrubbing
    assert re.fullmatch(rf"{REDACTED}-[0-9a-f]{{6}}_UNCI\.dcm", a)
    assert Scrubber(["CompressedSamples^RG1"], key="salt")("rg1_UNCI.dcm") == a  # same value, same token
    assert Scrubber(["CompressedSamples^RG1"], key="other")("RG1_UNCI.dcm") != a  # keyed by the salt


def test_nested_structures():
    s = Scrubber(["ABC123"], key="k")
    tok = s("ABC123")
    assert s({"a": ["x abc123 y", ("ABC123",)], "ABC123": 1}) == {"a": [f"x {tok} y", (tok,)], tok: 1}


def test_clinical_text_and_numbers_survive():
    """Whole values and real name parts only: no word of another value, no UID fragment, no taxonomy word,
    short numbers only as path components (free text with one is refused by the strict check instead)."""
    s = Scrubber(["PANCREAS_0001", "1.2.840.113619.2.55.3.125", "DOE^JOHN", "Mercy General Hospital", "125", "12"],
                 key="k", protected=["hospital acquired pneumonia"])
    assert s("pancreas") == "pancreas" and s("lesion 125 mm") == "lesion 125 mm"
    assert s("general hospital ward") == "general hospital ward" and s("Doerr") == "Doerr"
    assert s("PANCREAS_0001/1-001.dcm").startswith(REDACTED) and s("125/ct.dcm").startswith(REDACTED)
    assert s("doejohn2001").startswith(REDACTED) and REDACTED in s("scan of John Doe")
    assert s("1.2.840.113619.2.55.3.125.7") == "1.2.840.113619.2.55.3.125.7"  # a longer UID is another UID
    assert s.contains("patient 125 follow-up") and not s.contains("follow-up 12 months")
    assert not s.contains("lesion 125 mm", strict=False)
