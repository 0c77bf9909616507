"""Privacy scrubbing cost as identifying values accumulate (a folder-wide scrubber of a large DICOM source
holds every UID, name and date it saw). The scrubber matches with one trie regex per boundary mode, so the cost
per string should not grow with the number of values. Prints the time per string at 2k and 10k UIDs and the
ratio (1.0 = independent of the number of values). Run: python benchmarks/bench_scrub.py"""

from __future__ import annotations

import random
import time

from medvl.core.privacy import Scrubber


def values(n_uids: int) -> set[str]:
    rng = random.Random(0)
    out = {f"1.2.826.0.1.3680043.{rng.randint(1, 10**6)}.{rng.randint(1, 10**6)}.{i}" for i in range(n_uids)}
    out |= {f"DOE{i}^JOHN{i}" for i in range(n_uids // 10)} | {f"PAT{i:05d}" for i in range(n_uids // 10)}
    return out


def per_string_ms(n_uids: int, strings: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    s = Scrubber(values(n_uids), key="k")
    s(strings[0])  # compile
    t1 = time.perf_counter()
    for x in strings:
        s(x)
    return (t1 - t0), (time.perf_counter() - t1) / len(strings) * 1000


def main() -> None:
    strings = [f"series_{i}/IM{i:04d}.dcm: lesion {i % 200} mm, DOE{i % 50}_JOHN{i % 50} PAT{i:05d}" for i in range(10000)]
    setup_a, a = per_string_ms(2000, strings)
    setup_b, b = per_string_ms(10000, strings)
    print(f"2k UIDs:  {a:.4f} ms/string (setup {setup_a:.2f} s)")
    print(f"10k UIDs: {b:.4f} ms/string (setup {setup_b:.2f} s)")
    print(f"ratio 2k/10k per-string time: {a / b:.2f} (1.0 = cost independent of the number of values)")


if __name__ == "__main__":
    main()
