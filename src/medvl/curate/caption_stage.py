"""Caption near-duplicate removal inside a build's curate stage (between the bucket tasks and the split).

1. **embed** (an executor task per bucket that has captions, journaled as ``curate/captions-<bucket>``): the
   bucket's kept records (id-sorted) -> ``work/curate/captions/ids-<b>.jsonl`` (id, source, item per
   caption) and ``emb-<b>.npy`` (float32 [n, 384]); reused on resume while the bucket's output and the model
   are unchanged;
2. **decide** (main process): the bucket embeddings merged into record id order (a memory-mapped file), then
   :func:`~medvl.curate.caption_dedup.greedy_dedup` (blocked, bounded memory): a caption at or above the
   threshold to an earlier kept caption is dropped; rejects (stage ``caption_dedup``, naming the kept record
   and the cosine) go to ``work/curate/out/rejects-caption.jsonl``;
3. **filter** (an executor task per bucket with drops): the bucket's records and key shards rewritten
   without the dropped ids, so the split and the final pass never see them.

The step is journaled as ``curate/caption-dedup`` with the checksums of every file it rewrote, so a resumed
build trusts a filtered bucket only while that whole entry still holds. It costs nothing when no kept record
carries ``extra["caption"]``."""

from __future__ import annotations

import heapq
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from medvl.core.hashing import file_digest
from medvl.core.records import ImageRecord, Reject
from medvl.core.shards import Journal, ShardWriter, read_lines, shard_ok

if TYPE_CHECKING:
    from medvl.curate.caption_dedup import DedupDecision
    from medvl.curate.config import CaptionDedupConfig
    from medvl.curate.stage import BucketResult

STEP = "curate/caption-dedup"
STAGE = "caption_dedup"


def caption_of(extra: dict[str, Any] | None) -> str:
    """The record's caption (``extra["caption"]``, stripped), or "" when it has none."""
    cap = (extra or {}).get("caption")
    return cap.strip() if isinstance(cap, str) else ""


def rejects_path(work: Path) -> Path:
    return work / "curate" / "out" / "rejects-caption.jsonl"


def _out(work: Path, kind: str, b: int) -> str:
    return str(work / "curate" / "out" / f"{kind}-{b:05d}.jsonl")


@dataclass
class EmbedTask:
    name: str  # journal unit, "curate/captions-00003"
    records: str  # the bucket's kept records (id-sorted, "id<TAB>record" lines)
    ids: str  # out: [id, source, item] per caption, in the records' order
    emb: str  # out: float32 [n, dim] .npy
    model: str  # resolved model folder
    batch_size: int


@dataclass
class EmbedResult:
    name: str
    n: int
    shas: dict[str, str]


def run_embed_task(task: EmbedTask) -> EmbedResult:
    """Embed the captions of one bucket's kept records; write the id list and the embeddings atomically."""
    from medvl.curate.caption_dedup import embed_texts
    from medvl.curate.dedup import _item

    texts: list[str] = []
    with ShardWriter(task.ids) as w:
        for line in read_lines(task.records):
            rec = ImageRecord.from_dict(json.loads(line[line.index("\t") + 1:]))
            cap = caption_of(rec.extra)
            if cap:
                w.write(json.dumps([rec.id, rec.dataset, _item(rec)], ensure_ascii=False))
                texts.append(cap)
    emb = embed_texts(texts, task.model, task.batch_size) if texts else np.zeros((0, 384), np.float32)
    tmp = f"{task.emb}.tmp-{os.getpid()}.npy"
    np.save(tmp, emb)
    os.replace(tmp, task.emb)
    return EmbedResult(name=task.name, n=len(texts), shas={task.ids: w.sha256, task.emb: file_digest(task.emb)})


@dataclass
class FilterTask:
    name: str
    records: str
    keys: str
    drop: list[str]  # ids to remove


def run_filter_task(task: FilterTask) -> dict[str, str]:
    """Rewrite a bucket's records and key shards without the dropped ids; returns {path: sha256}."""
    drop = set(task.drop)
    shas = {}
    for path in (task.records, task.keys):
        with ShardWriter(path) as w:
            for line in read_lines(path):
                if json.loads(line[:line.index("\t")]) not in drop:
                    w.write(line)
        shas[path] = w.sha256
    return shas


def _model_identity(folder: Path) -> str:
    weights = [p for p in (folder / "model.safetensors", folder / "pytorch_model.bin") if p.is_file()]
    return f"{folder}:{weights[0].stat().st_size if weights else 0}"


def step_valid(journal: Journal, cfg: "CaptionDedupConfig") -> dict[str, Any] | None:
    """The journaled caption step when it still holds (same config, every file it wrote unchanged)."""
    done = journal.get(STEP)
    if done and done["config"] == cfg.model_dump(mode="json") and all(shard_ok(p, h) for p, h in done["shas"].items()):
        return done
    return None


def run_caption_dedup(results: list["BucketResult"], work: Path, cfg: "CaptionDedupConfig", executor: Any,
                      journal: Journal) -> list["BucketResult"]:
    """Embed, decide and filter (see the module docstring); returns the bucket results with ``kept`` reduced
    by the captions dropped in each bucket."""
    stale = rejects_path(work)
    if not cfg.enabled or not any(r.captions for r in results):
        stale.unlink(missing_ok=True)  # left by an earlier run of this work folder
        return results
    done = step_valid(journal, cfg)
    if done is None:
        done = _embed_decide_filter(results, work, cfg, executor, journal)
    dropped = {int(b): n for b, n in done["dropped_by_bucket"].items()}
    return [replace(r, kept=r.kept - dropped.get(b, 0)) for b, r in enumerate(results)]


def _embed_decide_filter(results: list["BucketResult"], work: Path, cfg: "CaptionDedupConfig", executor: Any,
                         journal: Journal) -> dict[str, Any]:
    from medvl.curate.caption_dedup import resolve_model_path

    folder = resolve_model_path(cfg.model)  # a missing model or package fails here, before any work
    ident = _model_identity(folder)
    cap_dir = work / "curate" / "captions"
    cap_dir.mkdir(parents=True, exist_ok=True)
    embedded: dict[int, EmbedResult] = {}
    pending: list[tuple[int, EmbedTask, str]] = []
    for b, res in enumerate(results):
        if not res.captions:
            continue
        name = f"curate/captions-{b:05d}"
        records = _out(work, "records", b)
        source_sha = res.shas[records]  # the bucket's own output (before any caption filtering)
        unit = journal.get(name)
        if (unit and unit["input"] == source_sha and unit["model"] == ident and unit["batch_size"] == cfg.batch_size
                and all(shard_ok(p, h) for p, h in unit["result"]["shas"].items())):
            embedded[b] = EmbedResult(**unit["result"])
            continue
        if not shard_ok(records, source_sha):
            raise RuntimeError(f"{records}: changed since its bucket task wrote it; delete the work folder and rebuild")
        pending.append((b, EmbedTask(name=name, records=records, ids=str(cap_dir / f"ids-{b:05d}.jsonl"),
                                     emb=str(cap_dir / f"emb-{b:05d}.npy"), model=str(folder),
                                     batch_size=cfg.batch_size), source_sha))
    for (b, _, sha), res in zip(pending, executor.map(run_embed_task, [t for _, t, _ in pending])):
        journal.add(res.name, input=sha, model=ident, batch_size=cfg.batch_size, result=asdict(res))
        embedded[b] = res
    order = sorted(embedded)
    ids, rows = _merged_ids(cap_dir, order)
    decision = _decide(cap_dir, order, rows, cfg)
    drops: dict[int, list[str]] = {}
    shas: dict[str, str] = {}
    with ShardWriter(rejects_path(work)) as rw:
        for g in np.nonzero(~decision.keep)[0]:
            rid, source, item = ids[g]
            kept_id = ids[decision.partner[g]][0]
            reason = (f"{rid}: caption near-duplicate of {kept_id} (cosine similarity "
                      f"{float(decision.similarity[g]):.4f} >= threshold {cfg.threshold})")
            rw.write(json.dumps(Reject(source=source, item=item, reason=reason, stage=STAGE).to_dict(),
                                ensure_ascii=False, sort_keys=True))
            drops.setdefault(int(order[rows[g, 0]]), []).append(rid)
    shas[str(rw.path)] = rw.sha256
    tasks = [FilterTask(name=f"curate/caption-filter-{b:05d}", records=_out(work, "records", b),
                        keys=_out(work, "keys", b), drop=d) for b, d in sorted(drops.items())]
    for out in executor.map(run_filter_task, tasks):
        shas.update(out)
    return journal.add(STEP, config=cfg.model_dump(mode="json"), shas=shas, captions=len(ids),
                       dropped_by_bucket={str(b): len(d) for b, d in sorted(drops.items())})


def _merged_ids(cap_dir: Path, order: list[int]) -> tuple[list[list[str]], np.ndarray]:
    """Every caption's [id, source, item] in record id order, and its (bucket position in ``order``, row)."""

    def rows(k: int, b: int) -> Iterator[tuple[str, int, int, list[str]]]:
        for r, line in enumerate(read_lines(cap_dir / f"ids-{b:05d}.jsonl")):
            row = json.loads(line)
            yield row[0], k, r, row

    ids: list[list[str]] = []
    where: list[tuple[int, int]] = []
    for rid, k, r, row in heapq.merge(*(rows(k, b) for k, b in enumerate(order)), key=lambda x: x[0]):
        ids.append(row)
        where.append((k, r))
    return ids, np.asarray(where, dtype=np.int64).reshape(-1, 2)


def _decide(cap_dir: Path, order: list[int], rows: np.ndarray, cfg: "CaptionDedupConfig") -> "DedupDecision":
    """Greedy dedup over the embeddings laid out in record id order in a memory-mapped file (deleted after)."""
    from medvl.curate.caption_dedup import greedy_dedup

    path = cap_dir / "ordered.npy"
    dim = np.load(cap_dir / f"emb-{order[0]:05d}.npy", mmap_mode="r").shape[1]
    ordered = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(rows), dim))
    try:
        for k, b in enumerate(order):
            emb = np.load(cap_dir / f"emb-{b:05d}.npy")
            pos = np.nonzero(rows[:, 0] == k)[0]  # ascending, and this bucket's rows in their own order
            ordered[pos] = emb[rows[pos, 1]]
        ordered.flush()
        return greedy_dedup(ordered, cfg.threshold, cfg.block)
    finally:
        del ordered
        path.unlink(missing_ok=True)
