"""Soft packing: whole samples only, every sample in exactly one pack, per-sample position ids, >= 95% of
the tokens real on the demo data, deterministic per seed; the collated batch gives a causal LM the same
logits per sample as running each sample alone."""

from __future__ import annotations

import random

import pytest

from medvl.train.packing import PackedDataset, collate_packs, pack_greedy, packing_stats, unpacked
from medvl.train.tokenize import IGNORE
from train_demo import demo_samples


def _check_partition(packs, lengths, max_length):
    flat = [i for p in packs for i in p]
    assert sorted(flat) == list(range(len(lengths))), "every sample in exactly one pack"
    assert all(p and sum(lengths[i] for i in p) <= max_length for p in packs)


def test_demo_packing_efficiency_and_determinism(tmp_path_factory):
    _, samples, _, _ = demo_samples(tmp_path_factory, max_length=2048)
    lengths = [len(s.input_ids) for s in samples]
    assert 200 <= sum(lengths) / len(lengths) <= 400  # the ~200-400-token samples the target is stated for
    packs = pack_greedy(lengths, 2048, seed=0)
    _check_partition(packs, lengths, 2048)
    stats = packing_stats(packs, lengths, 2048)
    assert stats["efficiency"] >= 0.95, stats
    assert stats["efficiency"] == round(sum(lengths) / (len(packs) * 2048), 4)
    assert stats["samples"] == len(samples) and stats["samples_per_pack"] > 5
    assert pack_greedy(lengths, 2048, seed=0) == packs
    other = pack_greedy(lengths, 2048, seed=1)
    assert other != packs
    assert packing_stats(other, lengths, 2048)["efficiency"] >= 0.95
    # one sample per row wastes most of the row
    assert packing_stats(unpacked(len(lengths), 0), lengths, 2048)["efficiency"] < 0.2


@pytest.mark.parametrize("dist", ["uniform", "long", "equal", "tiny-window"])
def test_partition_on_random_lengths(dist):
    rng = random.Random(dist)
    max_length = 512
    lengths = {"uniform": [rng.randint(1, 512) for _ in range(3000)],
               "long": [rng.randint(400, 512) for _ in range(500)],
               "equal": [512] * 40 + [256] * 40,
               "tiny-window": [rng.randint(1, 300) for _ in range(1000)]}[dist]
    packs = pack_greedy(lengths, max_length, seed=5, lookahead=1 if dist == "tiny-window" else 64)
    _check_partition(packs, lengths, max_length)
    if dist == "equal":
        assert packing_stats(packs, lengths, max_length)["efficiency"] == 1.0


def test_too_long_or_empty_samples_raise():
    with pytest.raises(ValueError, match="sample 1 has 2049 tokens"):
        pack_greedy([10, 2049], 2048, seed=0)
    with pytest.raises(ValueError, match="sample 0 has 0 tokens"):
        pack_greedy([0], 2048, seed=0)


def test_packed_items_and_collation(tmp_path_factory):
    _, samples, _, _ = demo_samples(tmp_path_factory, max_length=2048)
    samples = samples[:300]
    ds = PackedDataset(samples, 2048, seed=3)
    assert len(ds) == len(ds.packs) < len(samples) and ds.stats["samples"] == len(samples)
    for k in range(len(ds)):
        item = ds[k]
        members = [samples[i] for i in ds.packs[k]]
        pos = item["position_ids"].tolist()
        starts = [j for j, p in enumerate(pos) if p == 0]
        seg = [b - a for a, b in zip(starts, starts[1:] + [len(pos)])]
        assert seg == [len(s.input_ids) for s in members] == item["lengths"]
        assert all(pos[a:a + n] == list(range(n)) for a, n in zip(starts, seg))
        assert item["input_ids"].tolist() == [t for s in members for t in s.input_ids]
        assert item["labels"].tolist() == [t for s in members for t in s.labels]
        assert item["images"] == [im for s in members for im in s.images] and item["n_samples"] == len(members)
    flat = unpacked(len(samples), 3)
    one = PackedDataset(samples, 2048, seed=3, packed=False)
    assert len(one) == len(samples) and one.packs == flat and all(one[k]["n_samples"] == 1 for k in range(3))
    items = [ds[0], ds[1], one[0]]
    batch = collate_packs(items, pad_id=7)
    width = max(len(it["input_ids"]) for it in items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (3, width)
    assert batch["images"] == items[0]["images"] + items[1]["images"] + items[2]["images"]
    n = len(items[2]["input_ids"])
    assert batch["input_ids"][2, n:].eq(7).all() and batch["labels"][2, n:].eq(IGNORE).all()
    assert batch["position_ids"][2, n:].tolist() == list(range(width - n))
    assert batch["input_ids"][2, :n].tolist() == items[2]["input_ids"].tolist()


def test_collated_pack_equals_samples_alone():
    """transformers builds a block-diagonal mask from the restarting position ids: a tiny Llama gives each
    packed sample exactly its logits alone, and the pad block changes nothing."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from medvl.train.tokenize import TokenizedSample

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(cfg).eval()
    g = random.Random(0)
    samples = [TokenizedSample(str(i), [g.randrange(1, 64) for _ in range(n)], [g.randrange(1, 64)] * n, [], False, "t")
               for i, n in enumerate([9, 5, 12, 7, 3])]
    ds = PackedDataset(samples, 20, seed=0)
    assert any(len(p) > 1 for p in ds.packs)
    batch = collate_packs([ds[k] for k in range(len(ds))], pad_id=0)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=None,
                    use_cache=False).logits
        for r, pack in enumerate(ds.packs):
            a = 0
            for i in pack:
                ids = torch.tensor([samples[i].input_ids])
                alone = model(input_ids=ids, use_cache=False).logits[0]
                torch.testing.assert_close(out[r, a:a + ids.shape[1]], alone, rtol=1e-5, atol=1e-5)
                a += ids.shape[1]
