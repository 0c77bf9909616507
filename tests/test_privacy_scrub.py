"""The scrubber replaces identifying values and their common spellings."""

from medvl.pipeline.privacy import REDACTED, Scrubber


def test_person_name_variants_and_dates():
    s = Scrubber(["DOE^JOHN", "20010203", "St. Elsewhere Hospital", "M"])
    text = "scans/Doe_John/2001-02-03/John Doe at st. elsewhere hospital.dcm M"
    out = s(text)
    assert "doe" not in out.lower() and "john" not in out.lower()
    assert "2001-02-03" not in out and "elsewhere" not in out.lower()
    assert out.endswith(" M")  # one-letter values are not identifying on their own and are left alone
    assert REDACTED in out


def test_nested_structures():
    s = Scrubber(["ABC123"])
    assert s({"a": ["x abc123 y", ("ABC123",)], "ABC123": 1}) == {"a": [f"x {REDACTED} y", (REDACTED,)], REDACTED: 1}
