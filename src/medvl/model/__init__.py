"""The model: transformers' ``LlavaForConditionalGeneration`` (vision tower -> 2-layer GELU MLP projector ->
causal LM). medvl adds no model class: it assembles one from parts (:mod:`medvl.model.assemble`), converts the
offline pretrained weights shipped in pip packages (:mod:`medvl.model.pretrained`), and ships the chat template
and the pad-to-square image processor with every saved folder, so transformers, ``transformers serve`` and vLLM
load what medvl trains without medvl.

torch and transformers are imported inside the functions that need them; importing this package is cheap."""

from __future__ import annotations

from importlib import resources

IMAGE_TOKEN = "<image>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")


def chat_template() -> str:
    """medvl's multimodal ChatML template (``chat_template.jinja`` beside this file)."""
    return (resources.files("medvl.model") / "chat_template.jinja").read_text(encoding="utf-8")
