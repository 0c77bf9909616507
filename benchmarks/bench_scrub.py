"""Privacy scrubbing cost as identifying values accumulate (a folder-wide scrubber of a large DICOM source
holds every UID, name and date it saw). Building a scrubber should cost time in proportion to the number of
values, and scrubbing a string should cost the same whatever their number (``medvl.core.privacy._Matcher``).

Prints, at 1k, 2k, 10k and 20k UIDs (plus a name and a patient ID per 10 UIDs): the build time, the time per
string for strings that hold identifying values and for strings that hold none (a path already scrubbed by
its item's own scrubber, as in the source-wide pass), and the ratios 20k / 1k (1.0 = independent of the
number of values; for the build, per value). CPU times of this process. Run: python benchmarks/bench_scrub.py"""

from __future__ import annotations

import random
import time

from medvl.core.privacy import Scrubber, _taxonomy_terms

SIZES = (1_000, 2_000, 10_000, 20_000)


def values(n_uids: int) -> set[str]:
    rng = random.Random(0)
    out = {f"1.2.826.0.1.3680043.{rng.randint(1, 10**6)}.{rng.randint(1, 10**6)}.{i}" for i in range(n_uids)}
    out |= {f"DOE{i}^JOHN{i}" for i in range(n_uids // 10)} | {f"PAT{i:05d}" for i in range(n_uids // 10)}
    return out


def build_seconds(vals: set[str]) -> tuple[Scrubber, float]:
    t = time.process_time()
    s = Scrubber(vals, key="k")
    s("warm up")
    return s, time.process_time() - t


def per_string_ms(s: Scrubber, strings: list[str]) -> float:
    t = time.process_time()
    for x in strings:
        s(x)
    return (time.process_time() - t) / len(strings) * 1000


def main() -> None:
    _taxonomy_terms()  # loaded once per process
    hits = [f"series_{i}/IM{i:04d}.dcm: lesion {i % 200} mm, DOE{i % 50}_JOHN{i % 50} PAT{i:05d}" for i in range(10000)]
    clean = [f"REDACTED-a1b2c3/series_{i}/IM{i:04d}.dcm@axial{i % 300:04d}: lesion {i % 200} mm, window ct-soft"
             for i in range(10000)]
    rows = {}
    for n in SIZES:
        vals = values(n)
        s, build = build_seconds(vals)
        rows[n] = (len(vals), build, per_string_ms(s, hits), per_string_ms(s, clean))
        print(f"{n // 1000:>3}k UIDs ({len(vals)} values): build {build:6.2f} s | {rows[n][2]:.4f} ms/string with "
              f"values, {rows[n][3]:.4f} ms/string without", flush=True)
    (na, ba, ha, ca), (nb, bb, hb, cb) = rows[SIZES[0]], rows[SIZES[-1]]
    print(f"ratios {SIZES[-1] // 1000}k / {SIZES[0] // 1000}k (1.0 = independent of the number of values): build per "
          f"value {(bb / nb) / (ba / na):.2f}, per string with values {hb / ha:.2f}, without {cb / ca:.2f}")


if __name__ == "__main__":
    main()
