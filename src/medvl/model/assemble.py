"""Assemble a ``LlavaForConditionalGeneration`` from parts and save it as a plain transformers folder.

A part is a local folder (any vision model ``AutoModel`` loads: CLIP, SigLIP, DINOv2; any causal LM with a
tokenizer), a name of an offline pretrained part converted from a pip package (``clip-b16``, ``dinov2-s14``,
``smollm2-135m``), or a tiny random part for tests (``tiny-clip``, ``tiny-dinov2``, ``tiny-siglip``,
``tiny-llama``). The projector is fresh (2-layer GELU MLP, seeded). The saved folder holds the model, the
processor (pad-to-square with the mean colour, then resize) and medvl's ChatML template; it loads in plain
transformers, ``transformers serve`` and vLLM."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medvl.model import CHAT_TOKENS, IMAGE_TOKEN, chat_template

PRETRAINED_TOWERS = ("clip-b16", "dinov2-s14")
PRETRAINED_LMS = ("smollm2-135m",)
TINY_TOWERS = ("tiny-clip", "tiny-dinov2", "tiny-siglip")
TINY_LMS = ("tiny-llama",)
# image normalisation each tower family was trained with (used when the tower folder has no preprocessor config)
NORMALISATION = {
    "clip_vision_model": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
    "dinov2": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "siglip_vision_model": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}
TOWERS_WITH_CLS = {"clip_vision_model": True, "dinov2": True, "siglip_vision_model": False}


class AssemblyError(ValueError):
    """A part cannot be used: names the part and the problem."""


class ModelSpec(BaseModel):
    """What `medvl model init` assembles (the CLI flags mirror these keys)."""

    model_config = ConfigDict(extra="forbid")
    vision: str = Field(description="vision tower: a folder, " + ", ".join(PRETRAINED_TOWERS + TINY_TOWERS))
    lm: str = Field(description="language model: a folder, " + ", ".join(PRETRAINED_LMS + TINY_LMS))
    feature_layer: int = Field(-2, description="vision hidden state fed to the projector (-2: second-to-last)")
    select: Literal["auto", "default", "full"] = Field(
        "auto", description="default drops the class token; full keeps all tokens; auto: default if the tower has one")
    image_size: int | None = Field(None, ge=16, description="input size in pixels (default: the tower's, 224 for DINOv2)")
    seed: int = 0


def resolve_part(name: str, kind: Literal["vision", "lm"], work_dir: Path | None = None) -> Path:
    """A local folder for a part name (converting or building it when it is a named part)."""
    if name in PRETRAINED_TOWERS + PRETRAINED_LMS:
        from medvl.model import pretrained

        fn = {"clip-b16": pretrained.clip_b16, "dinov2-s14": pretrained.dinov2_s14,
              "smollm2-135m": pretrained.smollm2_135m}[name]
        return fn()
    if name in TINY_TOWERS + TINY_LMS:
        from medvl.model import tiny

        base = Path(work_dir or tempfile.mkdtemp(prefix="medvl-tiny-")) / name
        if name == "tiny-llama":
            return tiny.save_tiny_lm(base)
        return tiny.save_tiny_tower(base, name.removeprefix("tiny-"))
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        known = PRETRAINED_TOWERS + TINY_TOWERS if kind == "vision" else PRETRAINED_LMS + TINY_LMS
        raise AssemblyError(f"{kind} part {name!r}: not a transformers folder with config.json, and not one of "
                            f"the named parts ({', '.join(known)})")
    return path


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Add the ChatML and image tokens if missing, a pad token, and the chat template."""
    missing = [t for t in (*CHAT_TOKENS, IMAGE_TOKEN) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or CHAT_TOKENS[1]
    tokenizer.chat_template = chat_template()
    return tokenizer


def image_tokens_per_image(processor: Any) -> int:
    """How many ``<image>`` tokens one image becomes (what ``LlavaProcessor`` expands it to)."""
    crop = processor.image_processor.crop_size
    n = (crop["height"] // processor.patch_size) * (crop["width"] // processor.patch_size)
    n += processor.num_additional_image_tokens
    return n - 1 if processor.vision_feature_select_strategy == "default" else n


def _load_tower(path: Path) -> tuple[Any, Any]:
    """The tower's vision config and state dict (accepting CLIP/SigLIP full models by taking their vision part)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if hasattr(config, "vision_config") and config.model_type in ("clip", "siglip"):
        raise AssemblyError(f"vision part {path}: a full {config.model_type} model; save its vision model alone "
                            f"({config.model_type.upper()}VisionModel.from_pretrained(...).save_pretrained(DIR))")
    if config.model_type not in TOWERS_WITH_CLS:
        raise AssemblyError(f"vision part {path}: model_type {config.model_type!r} is not supported; "
                            f"allowed: {', '.join(sorted(TOWERS_WITH_CLS))}")
    if getattr(config, "num_register_tokens", 0):
        raise AssemblyError(f"vision part {path}: towers with register tokens are not supported")
    model = _load_complete(AutoModel, path, "vision part")
    return config, model.state_dict()


def _load_complete(cls: Any, path: Path, what: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(path)``, refusing a folder whose weights do not fit its config (transformers would
    fill missing weights with random ones and only warn)."""
    try:
        model, info = cls.from_pretrained(path, local_files_only=True, output_loading_info=True, **kwargs)
    except RuntimeError as e:  # sizes that do not match the config
        raise AssemblyError(f"{what} {path}: weights do not fit its config.json ({str(e).splitlines()[0]})") from None
    missing = [k for k in info.get("missing_keys", []) if k]
    bad = missing or info.get("mismatched_keys")
    if bad:
        raise AssemblyError(f"{what} {path}: weights do not fit its config.json (missing or mismatched: "
                            f"{sorted(bad)[:5]}); refusing to use re-initialized weights")
    return model


def _image_processor(tower_dir: Path, config: Any, size: int) -> Any:
    """LLaVA's image processor: pad to square with the mean colour, resize, centre-crop, normalise."""
    import transformers

    mean, std = NORMALISATION[config.model_type]
    pre = tower_dir / "preprocessor_config.json"
    if pre.is_file():
        saved = json.loads(pre.read_text(encoding="utf-8"))
        mean, std = saved.get("image_mean", mean), saved.get("image_std", std)
    cls = getattr(transformers, "LlavaImageProcessorPil", None) or transformers.LlavaImageProcessor
    return cls(do_pad=True, size={"shortest_edge": size}, crop_size={"height": size, "width": size},
               image_mean=mean, image_std=std, do_center_crop=True)


def _copy_weights(module: Any, state: dict, what: str, allow_unexpected: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``module``; any missing key (or unexpected one not allowed) is an error."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith(allow_unexpected)]
    if missing or unexpected:
        raise AssemblyError(f"{what}: weights do not fit (missing {missing[:5]}, unexpected {unexpected[:5]}); "
                            "refusing to train on re-initialized weights")


def assemble(spec: ModelSpec, work_dir: Path | None = None) -> tuple[Any, Any]:
    """(model, processor): the tower and LM weights loaded, a fresh seeded projector."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration
    from transformers import LlavaProcessor

    tower_dir = resolve_part(spec.vision, "vision", work_dir)
    lm_dir = resolve_part(spec.lm, "lm", work_dir)
    vconfig, vstate = _load_tower(tower_dir)
    lm = _load_complete(AutoModelForCausalLM, lm_dir, "lm part", dtype=torch.float32)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(lm_dir, local_files_only=True))
    has_cls = TOWERS_WITH_CLS[vconfig.model_type]
    select = spec.select if spec.select != "auto" else ("default" if has_cls else "full")
    if select == "default" and not has_cls:
        raise AssemblyError(f"vision part {tower_dir}: select=default drops a class token this tower does not have")
    size = spec.image_size or (min(224, vconfig.image_size) if vconfig.model_type == "dinov2" else vconfig.image_size)
    if vconfig.model_type != "dinov2":
        vconfig.image_size = size  # CLIP/SigLIP position embeddings are fixed-size: sizes must match
        if size != _load_size(tower_dir):
            raise AssemblyError(f"vision part {tower_dir}: image_size {size} differs from the tower's "
                                f"{_load_size(tower_dir)} (only DINOv2 interpolates position embeddings)")
    image_processor = _image_processor(tower_dir, vconfig, size)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=vconfig.patch_size, vision_feature_select_strategy=select,
                               num_additional_image_tokens=int(has_cls), chat_template=chat_template())
    n_tokens = image_tokens_per_image(processor)
    config = LlavaConfig(vision_config=vconfig, text_config=lm.config,
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_layer=spec.feature_layer, vision_feature_select_strategy=select,
                         projector_hidden_act="gelu", image_seq_length=n_tokens,
                         tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)))
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(config)
    _copy_weights(model.model.vision_tower, vstate, f"vision part {tower_dir}", ("visual_projection.", "head."))
    _copy_weights(model.model.language_model, lm.model.state_dict(), f"lm part {lm_dir}")
    _copy_weights(model.lm_head, lm.lm_head.state_dict(), f"lm part {lm_dir} (lm_head)")
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    _set_generation(model, tokenizer)
    return model, processor


def _load_size(tower_dir: Path) -> int:
    return int(json.loads((tower_dir / "config.json").read_text(encoding="utf-8")).get("image_size", 224))


def _set_generation(model: Any, tokenizer: Any) -> None:
    """Stop at ``<|im_end|>`` (and the LM's own end token), pad with the pad token."""
    end = tokenizer.convert_tokens_to_ids(CHAT_TOKENS[1])
    eos = [end] + ([tokenizer.eos_token_id] if tokenizer.eos_token_id not in (None, end) else [])
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.config.text_config.pad_token_id = tokenizer.pad_token_id


def save_model(model: Any, processor: Any, out: Path, provenance: dict[str, Any]) -> Path:
    """Write the folder (model, processor with chat template) plus ``medvl_model.json`` (how it was made)."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    meta = {"format": "transformers LlavaForConditionalGeneration", "image_tokens": image_tokens_per_image(processor),
            **provenance}
    (out / "medvl_model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def init_model(spec: ModelSpec, out: Path) -> Path:
    """`medvl model init`: assemble from parts and save."""
    with tempfile.TemporaryDirectory(prefix="medvl-parts-") as tmp:
        model, processor = assemble(spec, Path(tmp))
        return save_model(model, processor, Path(out), {"assembled_from": spec.model_dump()})
