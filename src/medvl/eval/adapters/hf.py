"""``hf:PATH`` — a local transformers image-text-to-text model (LLaVA and kin), batched greedy decoding.

Offline only (``local_files_only=True``). Decoding is greedy with left padding and an attention mask, so a
request's answer does not depend on which other requests share its batch or on the batch size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.eval.adapters._base import AdapterError, ModelAdapter
from medvl.eval.adapters._images import load_pil
from medvl.eval.types import ADAPTERS, Request

FALLBACK_TEMPLATE = "USER: {images}\n{prompt} ASSISTANT:"


def _check_local(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise AdapterError(f"{p} is not a transformers model folder: config.json is missing")
        return p.resolve()
    if p.exists():
        raise AdapterError(f"hf model path {p} is a file; give the model folder (with config.json)")
    looks_like_hub = path.count("/") == 1 and not path.startswith((".", "/", "~"))
    hint = (
        f" {path!r} looks like a Hugging Face hub id: medvl works offline and never downloads; "
        "download the model yourself (e.g. `huggingface-cli download ... --local-dir DIR`) and pass hf:DIR."
        if looks_like_hub
        else " medvl works offline and needs a local model folder."
    )
    raise AdapterError(f"hf model folder not found: {p}.{hint}")


@ADAPTERS.register("hf")
class HFAdapter(ModelAdapter):
    """A transformers vision-language model loaded from a local folder."""

    def __init__(
        self,
        target: str,
        batch_size: int = 8,
        dtype: str = "float32",
        device: str = "cpu",
        seed: int = 0,
        **options: Any,
    ):
        if options:
            raise AdapterError(f"unknown hf adapter option(s) {sorted(options)}; allowed: dtype, device, seed")
        self.path = _check_local(target)
        try:
            import torch
            import transformers
        except ImportError as e:
            raise AdapterError(f"the hf adapter needs torch and transformers ({e.name} is not installed): "
                               "pip install -c constraints.txt 'medvl[torch]'") from None

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        self.name = self.path.name
        self.batch_size = max(1, int(batch_size))
        self.device = device
        self.seed = int(seed)
        torch_dtype = getattr(torch, str(dtype), None)
        if not isinstance(torch_dtype, torch.dtype):
            raise AdapterError(f"unknown dtype {dtype!r} for hf model {self.path} (use float32, bfloat16, float16)")
        self.dtype = str(dtype)
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(self.path, local_files_only=True)
        except Exception as e:
            raise AdapterError(f"cannot load the processor of {self.path}: {e}") from e
        self.model = self._load_model(transformers, torch_dtype)
        self.model.eval()
        self.model.to(device)
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise AdapterError(f"processor of {self.path} has no tokenizer")
        self.tokenizer.padding_side = "left"  # decoder-only generation continues from the right end
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.image_token = getattr(self.processor, "image_token", None) or "<image>"
        self.has_template = bool(getattr(self.processor, "chat_template", None))

    def _load_model(self, transformers: Any, torch_dtype: Any) -> Any:
        errors = []
        for cls_name in ("AutoModelForImageTextToText", "LlavaForConditionalGeneration"):
            cls = getattr(transformers, cls_name, None)
            if cls is None:
                continue
            try:
                return cls.from_pretrained(self.path, local_files_only=True, dtype=torch_dtype)
            except Exception as e:  # try the next loader, report all at the end
                errors.append(f"{cls_name}: {e}")
        raise AdapterError(f"cannot load an image-text-to-text model from {self.path}: " + " | ".join(errors))

    def describe(self) -> dict[str, Any]:
        return {"adapter": "hf", "name": self.name, "path": str(self.path), "dtype": self.dtype,
                "decoding": "greedy", "chat_template": self.has_template}

    def build_text(self, req: Request) -> str:
        """The model input text for one request: the chat template if the processor has one."""
        prompt = req.prompt.replace(self.image_token, "image")  # only real images may carry image tokens
        if self.has_template:
            content = [{"type": "image"} for _ in req.images] + [{"type": "text", "text": prompt}]
            messages = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        images = "".join(f"{self.image_token}\n" for _ in req.images).rstrip("\n")
        text = FALLBACK_TEMPLATE.format(images=images, prompt=prompt)
        return text.replace("USER: \n", "USER: ") if not req.images else text

    def generate(self, requests: list[Request]) -> list[str | None]:
        out: list[str | None] = []
        for start in range(0, len(requests), self.batch_size):
            out.extend(self._generate_batch(requests[start : start + self.batch_size]))
        return out

    def _generate_batch(self, batch: list[Request]) -> list[str]:
        import torch

        texts = [self.build_text(r) for r in batch]
        images = [load_pil(ref) for r in batch for ref in r.images]
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        if images:
            kwargs["images"] = images
        inputs = self.processor(**kwargs).to(self.device)
        max_new = max(r.max_new_tokens for r in batch)
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new,
                do_sample=False,
                num_beams=1,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        answers = []
        for row, req in zip(new_tokens, batch):
            row = row[: req.max_new_tokens]  # greedy: a shorter budget is a prefix of the longer one
            answers.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return answers
