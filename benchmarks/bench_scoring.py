"""Scoring throughput: every registered scorer over N synthetic (item, reply) pairs.

Prints items/s per scorer and the ratio of its time to a baseline loop that only calls ``str.lower()``
on each reply (timed in the same run, so the ratio is comparable across machines).

    python benchmarks/bench_scoring.py [--n 100000] [--seed 0] [--scorers medvl,mmmu]
"""

from __future__ import annotations

import argparse
import random
import time

from medvl.eval.protocols import get_scorer
from medvl.eval.types import SCORERS, EvalItem

FINDINGS = ["pneumonia", "ovarian cyst", "pleural effusion", "normal", "cardiomegaly", "fracture of the femur",
            "renal calculus", "glioblastoma", "diabetic retinopathy", "melanoma"]
ORGANS = ["liver", "left lung", "right kidney", "spleen", "heart", "brain stem", "urinary bladder"]
MC_REPLIES = ["{L}", "({L})", "**{L}**", "The answer is {L}.", "{L}. {T}", "{T}", "Answer: {L}", "答案：{L}",
              "A chest X-ray shows {T}, so the answer is {L}.", "{L2} is wrong, the answer is {L}",
              "{L} or {L2}", "I cannot determine the answer from this image.",
              "Looking at the image carefully, the opacity in the lower zone and the blunted angle suggest "
              "{T}. Other options such as {T2} are less likely given the distribution. Therefore {L}."]
CLOSED_REPLIES = ["Yes", "No", "no, it is not", "Yes, there is a lesion.", "There is a nodule.", "是的", "没有",
                  "The image does not show any fracture.", "\\boxed{no}"]
OPEN_REPLIES = ["{O}", "The {O}.", "It is located in the {O}.", "{O2}", "I am not sure."]


def make_pairs(n: int, seed: int) -> list[tuple[EvalItem, str]]:
    """``n`` deterministic (item, reply) pairs: 60% multiple choice, 25% closed, 15% open."""
    rng = random.Random(seed)
    pairs: list[tuple[EvalItem, str]] = []
    for i in range(n):
        u = rng.random()
        if u < 0.60:
            k = rng.choice((2, 4, 5))
            texts = rng.sample(FINDINGS, k)
            options = {chr(65 + j): t for j, t in enumerate(texts)}
            gold = rng.choice(list(options))
            said = gold if rng.random() < 0.6 else rng.choice(list(options))
            other = rng.choice([x for x in options if x != said])
            reply = rng.choice(MC_REPLIES).format(L=said, L2=other, T=options[said], T2=options[other])
            pairs.append((EvalItem(str(i), "Which finding?", [], gold, options, "mc"), reply))
        elif u < 0.85:
            gold = rng.choice(("yes", "no", "Yes", "No", "是的", "没有"))
            lang = "zh" if gold in ("是的", "没有") else "en"
            pairs.append((EvalItem(str(i), "Is there a lesion?", [], gold, {}, "closed", lang=lang),
                          rng.choice(CLOSED_REPLIES)))
        else:
            gold, other = rng.sample(ORGANS, 2)
            reply = rng.choice(OPEN_REPLIES).format(O=gold, O2=other)
            pairs.append((EvalItem(str(i), "Which organ?", [], gold, {}, "open"), reply))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scorers", default=",".join(SCORERS.names()))
    args = ap.parse_args()
    pairs = make_pairs(args.n, args.seed)

    t0 = time.perf_counter()
    for _, reply in pairs:
        reply.lower()
    baseline = time.perf_counter() - t0
    print(f"{args.n} pairs (seed {args.seed}); baseline str.lower loop: {baseline:.4f} s")
    print(f"{'scorer':<12} {'seconds':>8} {'items/s':>12} {'x baseline':>11} {'accuracy':>9} {'unparsed':>9}")
    for name in args.scorers.split(","):
        scorer = get_scorer(name)
        t0 = time.perf_counter()
        results = [scorer.score(item, reply) for item, reply in pairs]
        dt = time.perf_counter() - t0
        acc = sum(1 for r in results if r.correct) / len(results)
        unp = sum(1 for r in results if r.unparsed) / len(results)
        print(f"{name:<12} {dt:8.3f} {args.n / dt:12,.0f} {dt / baseline:11.0f} {acc:9.3f} {unp:9.3f}")


if __name__ == "__main__":
    main()
