"""Tiny random parts (a vision tower and a causal LM with its tokenizer) for tests and smoke runs.

Nothing is downloaded. The tokenizer is a byte-level BPE trained in a fraction of a second on medvl's own
template banks (English and Chinese), so the demo's captions and answers tokenize into real sub-words instead
of unknown tokens; it already holds the ChatML tokens. Weights are random with a fixed seed."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

TOWERS = ("clip", "dinov2", "siglip")


def _corpus() -> list[str]:
    """Lines of the template banks: the words the demo data is made of."""
    lines: list[str] = []
    bank = resources.files("medvl.generate") / "templates"
    for name in sorted(p.name for p in bank.iterdir() if p.name.endswith(".yaml")):
        lines.extend(ln.strip() for ln in (bank / name).read_text(encoding="utf-8").splitlines() if ln.strip())
    lines += ["A. B. C. D. E. yes no Answer with the option's letter from the given choices directly."] * 4
    return lines


def build_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE fast tokenizer with ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token=None,
                                   additional_special_tokens=specials[1:])


def vision_config(kind: str = "clip", *, hidden: int = 32, layers: int = 2, image_size: int = 32, patch: int = 8):
    """A tiny vision config of one of the tower families LLaVA builds with ``AutoModel.from_config``."""
    from transformers import CLIPVisionConfig, Dinov2Config, SiglipVisionConfig

    common = dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                  num_attention_heads=2, image_size=image_size, patch_size=patch)
    if kind == "clip":
        return CLIPVisionConfig(projection_dim=hidden, **common)
    if kind == "dinov2":
        return Dinov2Config(**common)
    if kind == "siglip":
        return SiglipVisionConfig(**common)
    raise ValueError(f"unknown tiny tower {kind!r}; allowed: {', '.join(TOWERS)}")


def save_tiny_tower(out: str | Path, kind: str = "clip", seed: int = 0, **sizes: int) -> Path:
    """Save a random tiny tower (``AutoModel`` folder) to ``out``."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(vision_config(kind, **sizes))
    out = Path(out)
    model.save_pretrained(out)
    return out


def save_tiny_lm(out: str | Path, *, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a random tiny Llama LM with the BPE tokenizer to ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
