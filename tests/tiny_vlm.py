"""A tiny random-weight LLaVA (CLIP vision tower + Llama LM) built fully offline and saved in the
transformers layout, so the ``hf:`` adapter and the generation benchmark have a real model to load.

Nothing is downloaded: the tokenizer is a word-level ``tokenizers`` model over a few sentences, the image
processor is the PIL CLIP processor (no torchvision), the weights are random with a fixed seed."""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "the chest x ray shows no acute abnormality",
    "yes there is a nodule in the left lung",
    "no the liver appears normal on this ct scan",
    "the answer is a b c d or e",
    "mri of the brain axial plane with contrast",
    "which organ is abnormal in this image",
    "answer with the option letter from the given choices directly",
    "question options please select the correct answer from the options above",
    "is this a coronal or sagittal slice of the abdomen",
    "the lesion is located in the right kidney and measures two centimeters",
    "A B C D E . , ? : ( ) USER ASSISTANT system user assistant",
]

SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tokenizer():
    """A word-level fast tokenizer with ``<image>`` as a special token (lower-cases its input)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins word tokens with spaces
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1)
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
        model_input_names=["input_ids", "attention_mask"],  # as LLaVA's Llama tokenizers: no token_type_ids
    )
    return fast


def build_tiny_llava(
    out_dir: str | Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    chat_template: bool = True,
    seed: int = 0,
) -> Path:
    """Save a random-weight LLaVA (model + processor) to ``out_dir`` and return the folder."""
    import torch
    import transformers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=vision_hidden * 2,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    with torch.no_grad():  # larger random weights => decisive (non-tied) greedy choices
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out)

    # the PIL image processor (medvl installs no torchvision): CLIPImageProcessorPil since transformers 5.4, where
    # the plain name became the torchvision one; CLIPImageProcessor before (4.56-5.3 run these tests)
    pil_processor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    image_processor = pil_processor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        do_resize=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE if chat_template else None,
    )
    processor.save_pretrained(out)
    return out
