"""The assembled model (``medvl model init``) and its saved folder: a plain transformers LLaVA that reloads without
medvl and gives the same logits, pad-to-square preprocessing with the mean colour, features from the
second-to-last layer without the class token, the parts' weights copied bit for bit (or a clear error), and
the ChatML template whose assistant mask is the loss mask."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from train_helpers import one_torch_thread, xray_png  # noqa: E402,F401

from medvl.model import tiny  # noqa: E402
from medvl.model.assemble import AssemblyError, ModelSpec, assemble, init_model  # noqa: E402

TOWERS = ("clip", "dinov2", "siglip")
SIZE, PATCH = 32, 8  # the tiny towers' input size and patch size
HAS_CLS = {"clip": True, "dinov2": True, "siglip": False}


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    """Source parts as folders a user would bring: three tiny towers and a tiny Llama with its tokenizer."""
    root = tmp_path_factory.mktemp("parts")
    out = {kind: tiny.save_tiny_tower(root / kind, kind, seed=1) for kind in TOWERS}
    out["lm"] = tiny.save_tiny_lm(root / "lm", seed=2)
    return out


@pytest.fixture(scope="module")
def assembled(parts, tmp_path_factory) -> dict[str, tuple]:
    """Per tower: (in-memory model, its processor, saved folder of ``init_model`` with the same spec)."""
    root = tmp_path_factory.mktemp("assembled")
    out = {}
    for kind in TOWERS:
        spec = ModelSpec(vision=str(parts[kind]), lm=str(parts["lm"]))
        model, processor = assemble(spec)
        out[kind] = (model.eval(), processor, init_model(spec, root / kind))
    return out


def _inputs(processor, image) -> dict:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which bone is this?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=prompt, images=image, return_tensors="pt")


@pytest.mark.parametrize("kind", TOWERS)
def test_saved_folder_reloads_in_plain_transformers_with_same_logits(assembled, tmp_path_factory, kind):
    from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor

    model, processor, folder = assembled[kind]
    config = json.loads((folder / "config.json").read_text())
    assert "auto_map" not in config and config["architectures"] == ["LlavaForConditionalGeneration"]
    reloaded = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    proc = AutoProcessor.from_pretrained(folder)
    assert type(proc) is LlavaProcessor
    image = xray_png(tmp_path_factory.getbasetemp())
    from PIL import Image

    with Image.open(image) as im:
        rgb = im.convert("RGB")
    ours, theirs = _inputs(processor, rgb), _inputs(proc, rgb)
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["pixel_values"], theirs["pixel_values"])
    with torch.no_grad():
        a = model(**ours).logits
        b = reloaded(**theirs).logits
    assert a.shape[1] == ours["input_ids"].shape[1]
    assert torch.allclose(a, b, rtol=0, atol=1e-6), (a - b).abs().max()


@pytest.mark.parametrize("kind", TOWERS)
def test_image_tokens_are_second_to_last_layer_without_class_token(assembled, parts, tmp_path_factory, kind):
    """Features = projector(tower hidden state -2, class token dropped); one token per patch for every tower."""
    from PIL import Image
    from transformers import AutoModel

    model, processor, folder = assembled[kind]
    assert model.config.vision_feature_layer == -2
    with Image.open(xray_png(tmp_path_factory.getbasetemp())) as im:
        inputs = _inputs(processor, im.convert("RGB"))
    n_patches = (SIZE // PATCH) ** 2
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == n_patches
    assert json.loads((folder / "medvl_model.json").read_text())["image_tokens"] == n_patches
    source = AutoModel.from_pretrained(parts[kind]).eval()  # the tower as its author saved it
    with torch.no_grad():
        hidden = source(inputs["pixel_values"], output_hidden_states=True).hidden_states
        assert hidden[-2].shape[1] == n_patches + HAS_CLS[kind]
        want = model.model.multi_modal_projector(hidden[-2][:, 1:] if HAS_CLS[kind] else hidden[-2])
        got = model.model.get_image_features(pixel_values=inputs["pixel_values"],
                                             vision_feature_layer=model.config.vision_feature_layer,
                                             vision_feature_select_strategy=model.config.vision_feature_select_strategy)
    got = torch.stack(list(got.pooler_output))
    assert got.shape == want.shape == (1, n_patches, model.config.text_config.hidden_size)
    assert torch.allclose(got, want, rtol=0, atol=1e-6)


def _source(cls, folder: Path) -> dict:
    """A part's weights as its own class loads them (every key present in the folder: nothing re-initialized)."""
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    return model.state_dict()


@pytest.mark.parametrize("kind", TOWERS)
def test_part_weights_are_copied_bit_for_bit(assembled, parts, kind):
    from transformers import AutoModel, LlamaForCausalLM, LlavaForConditionalGeneration

    reloaded = LlavaForConditionalGeneration.from_pretrained(assembled[kind][2])
    tower_src = _source(AutoModel, parts[kind])
    tower = reloaded.model.vision_tower.state_dict()
    assert set(tower) == set(tower_src)
    assert all(torch.equal(tower[k], tower_src[k]) for k in tower_src)
    lm_src = _source(LlamaForCausalLM, parts["lm"])
    lm = {f"model.{k}": v for k, v in reloaded.model.language_model.state_dict().items()}
    lm["lm_head.weight"] = reloaded.lm_head.weight
    assert set(lm) == set(lm_src)
    assert all(torch.equal(lm[k], lm_src[k]) for k in lm)
    # tied embeddings stay tied: the output layer is the (copied) input embedding
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.language_model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("kind", TOWERS)
def test_processor_pads_to_square_with_the_mean_colour(assembled, tmp_path_factory, kind):
    """A portrait strip of the radiograph (440 x 880) is padded left and right with the mean colour before
    resizing, so the border columns normalise to ~0 and the image keeps its aspect (not stretched)."""
    from PIL import Image
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(assembled[kind][2]).image_processor
    with Image.open(xray_png(tmp_path_factory.getbasetemp())) as im:
        strip = im.convert("RGB").crop((220, 0, 660, 880))
    pix = proc(strip, return_tensors="pt")["pixel_values"][0]  # [3, 32, 32]
    assert pix.shape == (3, SIZE, SIZE)
    grey_level = 1 / 255 / min(proc.image_std)  # one 8-bit grey level after normalisation
    border = SIZE // 4  # the strip fills the middle half: columns 0..7 and 24..31 are padding
    reach = 2  # bicubic resampling blurs the strip's edge over ~2 output pixels
    pad = torch.cat([pix[:, :, :border - reach], pix[:, :, SIZE - border + reach:]], dim=2)
    assert pad.abs().max() <= grey_level, pad.abs().max()
    inside = pix[:, :, border + reach:SIZE - border - reach]
    assert inside.abs().amax(dim=(0, 1)).min() > 10 * grey_level  # every inside column holds the image


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **changes}))


@pytest.mark.parametrize("change", [{"num_hidden_layers": 3}, {"intermediate_size": 48}])
def test_tower_whose_weights_do_not_fit_is_refused(parts, tmp_path, change):
    """A config that does not match the saved weights must not be filled with random weights."""
    tower = tiny.save_tiny_tower(tmp_path / "tower", "clip")
    _edit_config(tower, **change)
    with pytest.raises(AssemblyError, match="vision part .*weights do not fit"):
        assemble(ModelSpec(vision=str(tower), lm=str(parts["lm"])))


def test_lm_whose_weights_do_not_fit_is_refused(parts, tmp_path):
    lm = tiny.save_tiny_lm(tmp_path / "lm")
    _edit_config(lm, num_hidden_layers=3)
    with pytest.raises(AssemblyError, match="lm part .*weights do not fit"):
        assemble(ModelSpec(vision=str(parts["clip"]), lm=str(lm)))


CONVERSATION = [
    {"role": "system", "content": "You are a radiologist."},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What modality is this?"}]},
    {"role": "assistant", "content": "An X-ray."},
    {"role": "user", "content": "Which bone?"},
    {"role": "assistant", "content": "The tibia."},
]


def test_chat_template_is_chatml_and_masks_only_answers(assembled):
    from transformers import AutoTokenizer

    folder = assembled["clip"][2]
    tok = AutoTokenizer.from_pretrained(folder)
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a radiologist.<|im_end|>\n"
                    "<|im_start|>user\n<image>\nWhat modality is this?<|im_end|>\n"
                    "<|im_start|>assistant\nAn X-ray.<|im_end|>\n"
                    "<|im_start|>user\nWhich bone?<|im_end|>\n"
                    "<|im_start|>assistant\nThe tibia.<|im_end|>\n")
    prompt = tok.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    out = tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    runs, cur = [], []
    for t, m in zip(ids, mask):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    assert runs == ["An X-ray.<|im_end|>", "The tibia.<|im_end|>"]
    # the image placeholder is one token (the processor expands it), and special tokens are single tokens
    for special in ("<image>", "<|im_start|>", "<|im_end|>"):
        assert len(tok.encode(special, add_special_tokens=False)) == 1
