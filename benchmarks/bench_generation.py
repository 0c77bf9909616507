"""Batched vs one-at-a-time generation with the ``hf`` adapter on a tiny random LLaVA.

Times the same requests at batch size 1 and at batch size 8 in one process, checks that the answers are
identical, and prints the throughput ratio (target: >= 3x). Run: ``python benchmarks/bench_generation.py``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from eval_fixtures import IMAGE_SIZES, image_bytes  # noqa: E402
from medvl.eval.adapters._base import load_adapter  # noqa: E402
from medvl.eval.types import Request  # noqa: E402
from tiny_vlm import SENTENCES, build_tiny_llava  # noqa: E402


def make_requests(n: int, max_new_tokens: int) -> list[Request]:
    """``n`` requests over real medical images and varied question lengths."""
    names = sorted(IMAGE_SIZES)
    reqs = []
    for i in range(n):
        words = " ".join(SENTENCES[j % len(SENTENCES)] for j in range(i, i + 1 + i % 3))
        reqs.append(Request(id=str(i), prompt=words + " ?", images=[image_bytes(names[i % len(names)], "PNG")],
                            max_new_tokens=max_new_tokens))
    return reqs


def timed(adapter, reqs: list[Request]) -> tuple[list[str | None], float]:
    adapter.generate(reqs[: adapter.batch_size])  # warm-up
    t0 = time.perf_counter()
    out = adapter.generate(reqs)
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = fair on a shared machine)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_llava(Path(tmp) / "m", hidden=args.hidden, layers=args.layers, vision_hidden=128,
                                 image_size=32, patch_size=8)
        reqs = make_requests(args.n, args.max_new_tokens)
        out1, t1 = timed(load_adapter(f"hf:{model}", batch_size=1), reqs)
        outb, tb = timed(load_adapter(f"hf:{model}", batch_size=args.batch), reqs)
    same = out1 == outb
    print(f"requests: {args.n}, hidden {args.hidden}, layers {args.layers}, {args.max_new_tokens} new tokens, "
          f"{args.threads} thread(s)")
    print(f"batch 1: {t1:.2f} s ({args.n / t1:.1f} req/s)")
    print(f"batch {args.batch}: {tb:.2f} s ({args.n / tb:.1f} req/s)")
    print(f"throughput ratio: {t1 / tb:.2f}x (target >= 3x)")
    print(f"outputs identical: {same}")
    if not same:
        diff = [i for i, (a, b) in enumerate(zip(out1, outb)) if a != b]
        print(f"differing requests: {diff[:10]}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
