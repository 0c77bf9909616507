"""Conversations -> token ids and labels, exactly as inference renders them.

The ids come from ``tokenizer.apply_chat_template`` with medvl's ChatML template (so training sees what
``medvl chat``, ``transformers serve`` and vLLM see), then every ``<image>`` token is expanded to
``n_image_tokens`` copies, as ``LlavaProcessor`` does. Labels are the token id inside the template's
``{% generation %}`` blocks (each answer and its ``<|im_end|>``) and -100 everywhere else.

Samples longer than ``max_length`` are cut, never inside an image's token block (the cut moves before the
block, and that image and later ones are dropped). A cut sample that keeps no answer token is rejected; the
others are kept with ``truncated=True`` and counted in :class:`TokenizeStats`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from medvl.core.records import Reject
from medvl.train.data import IMAGE_TOKEN, Conversation, ImageRef

IGNORE = -100
STAGE = "tokenize"


@dataclass
class TokenizedSample:
    """One sample as the model sees it (image tokens already expanded)."""

    id: str
    input_ids: list[int]
    labels: list[int]
    images: list[ImageRef]
    truncated: bool
    source: str


@dataclass
class TokenizeStats:
    """Counts of one :func:`tokenize_all` run (the trainer logs them)."""

    conversations: int = 0
    kept: int = 0
    rejected: int = 0
    truncated: int = 0
    images_dropped: int = 0  # images cut away by truncation
    text_only: int = 0
    tokens: int = 0  # after expansion and truncation
    label_tokens: int = 0
    image_tokens: int = 0
    max_tokens: int = 0
    length_histogram: dict[str, int] = field(default_factory=dict)  # "<=256", "<=512", ... over kept samples

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean_tokens"] = round(self.tokens / self.kept, 2) if self.kept else 0.0
        d["length_histogram"] = dict(sorted(self.length_histogram.items(), key=lambda kv: int(kv[0][2:])))
        return d


def check_image_token(tokenizer: Any, image_token_id: int) -> None:
    """Raise if ``<image>`` does not encode to exactly ``[image_token_id]`` (the tokenizer lacks the token)."""
    ids = tokenizer.encode(IMAGE_TOKEN, add_special_tokens=False)
    if ids != [image_token_id]:
        raise ValueError(f"tokenizer encodes {IMAGE_TOKEN!r} as {ids}, not [{image_token_id}]: add it as a special "
                         f"token (medvl.model.assemble.prepare_tokenizer) and pass its id as image_token_id")


def expand(conv: Conversation, ids: Sequence[int], mask: Sequence[int], *, image_token_id: int,
           n_image_tokens: int, max_length: int) -> TokenizedSample | Reject:
    """Expand image tokens, build labels, truncate at ``max_length`` without splitting an image block."""
    starts = [i for i, t in enumerate(ids) if t == image_token_id]
    if len(starts) != len(conv.images):
        return Reject(conv.source, conv.id, f"{len(starts)} image token(s) after templating for "
                      f"{len(conv.images)} image(s) (does a text spell {IMAGE_TOKEN!r} inside a word?)", STAGE)
    labels = [t if m else IGNORE for t, m in zip(ids, mask)]
    if labels.count(IGNORE) == len(labels):
        return Reject(conv.source, conv.id, "no answer token to learn (does the chat template wrap answers in "
                      "{% generation %} markers?)", STAGE)
    if starts:
        out_ids: list[int] = []
        out_labels: list[int] = []
        blocks: list[int] = []  # expanded start of each image block
        prev = 0
        for s in starts:
            out_ids += ids[prev:s]
            out_labels += labels[prev:s]
            blocks.append(len(out_ids))
            out_ids += [image_token_id] * n_image_tokens
            out_labels += [IGNORE] * n_image_tokens
            prev = s + 1
        out_ids += ids[prev:]
        out_labels += labels[prev:]
    else:
        out_ids, out_labels, blocks = list(ids), labels, []
    images = list(conv.images)
    full = len(out_ids)
    truncated = full > max_length
    if truncated:
        cut = max_length
        kept = 0
        for b in blocks:
            if b + n_image_tokens <= cut:
                kept += 1
            else:
                cut = min(cut, b)
                break
        out_ids, out_labels, images = out_ids[:cut], out_labels[:cut], images[:kept]
        if out_labels.count(IGNORE) == len(out_labels):
            return Reject(conv.source, conv.id, f"longer than max_length ({full} tokens) with no answer left", STAGE)
    return TokenizedSample(conv.id, out_ids, out_labels, images, truncated, conv.source)


def _render(tokenizer: Any, chat_template: str, batch: list[list[dict[str, str]]]) -> tuple[list, list]:
    out = tokenizer.apply_chat_template(batch, chat_template=chat_template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    return out["input_ids"], out["assistant_masks"]


def tokenize_conversation(conv: Conversation, tokenizer: Any, *, chat_template: str, image_token_id: int,
                          n_image_tokens: int, max_length: int) -> TokenizedSample | Reject:
    """One conversation -> a :class:`TokenizedSample`, or a :class:`Reject` saying why not."""
    try:
        ids, masks = _render(tokenizer, chat_template, [conv.messages])
    except Exception as e:  # noqa: BLE001 - any template/tokenizer error on this sample's content rejects it
        return Reject(conv.source, conv.id, f"chat template failed: {e}", STAGE)
    return expand(conv, ids[0], masks[0], image_token_id=image_token_id, n_image_tokens=n_image_tokens,
                  max_length=max_length)


def tokenize_all(conversations: Sequence[Conversation], tokenizer: Any, *, chat_template: str,
                 image_token_id: int, n_image_tokens: int, max_length: int,
                 batch_size: int = 512) -> tuple[list[TokenizedSample], list[Reject], TokenizeStats]:
    """Tokenize every conversation (batched through the fast tokenizer; a batch that fails is redone one by
    one so only the bad samples are rejected). Returns the samples in input order, the rejects and counts."""
    if n_image_tokens < 1 or max_length < 1:
        raise ValueError(f"n_image_tokens ({n_image_tokens}) and max_length ({max_length}) must be >= 1")
    check_image_token(tokenizer, image_token_id)
    samples: list[TokenizedSample] = []
    rejects: list[Reject] = []
    stats = TokenizeStats(conversations=len(conversations))
    kw = {"image_token_id": image_token_id, "n_image_tokens": n_image_tokens, "max_length": max_length}
    for b in range(0, len(conversations), batch_size):
        chunk = conversations[b:b + batch_size]
        try:
            ids, masks = _render(tokenizer, chat_template, [c.messages for c in chunk])
            results = [expand(c, i, m, **kw) for c, i, m in zip(chunk, ids, masks)]
        except Exception:  # noqa: BLE001 - redo one by one: only the failing samples are rejected
            results = [tokenize_conversation(c, tokenizer, chat_template=chat_template, **kw) for c in chunk]
        for conv, r in zip(chunk, results):
            if isinstance(r, Reject):
                rejects.append(r)
                continue
            samples.append(r)
            _count(stats, conv, r, n_image_tokens)
    stats.rejected = len(rejects)
    return samples, rejects, stats


def _count(stats: TokenizeStats, conv: Conversation, s: TokenizedSample, n_image_tokens: int) -> None:
    n = len(s.input_ids)
    stats.kept += 1
    stats.truncated += s.truncated
    stats.images_dropped += len(conv.images) - len(s.images)
    stats.text_only += not conv.images
    stats.tokens += n
    stats.label_tokens += n - s.labels.count(IGNORE)
    stats.image_tokens += len(s.images) * n_image_tokens
    stats.max_tokens = max(stats.max_tokens, n)
    edge = 256
    while n > edge:
        edge *= 2
    key = f"<={edge}"
    stats.length_histogram[key] = stats.length_histogram.get(key, 0) + 1
