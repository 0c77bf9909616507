"""``pubmedqa``: PubMedQA in its released layout (``ori_pqal.json``: PMID -> {``QUESTION``, ``CONTEXTS``,
``LABELS``, ``MESHES``, ``LONG_ANSWER``, ``final_decision``: yes / no / maybe}; also the artificial
``ori_pqaa.json``) as text-only QA: the contexts and the question, answered by the long answer and the decision.
The official test set is the PMIDs of ``test_ground_truth.json`` (500 of PQA-L) when it lies beside the data
(``options.test_ids``); the other items are train. Unlabelled PQA-U rows (no decision) are rejected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medvl.core.records import Reject
from medvl.sources.base import SOURCES, SourceOptions, Unit
from medvl.sources.text_base import TextItem, TextSource, detect_lang

DECISIONS = ("yes", "no", "maybe")


class PubMedQAOptions(SourceOptions):
    file: str | None = None  # default: every ori_pqa*.json under the source path
    test_ids: str | None = "test_ground_truth.json"  # PMIDs of the official test set (beside the data file)
    contexts: bool = True  # put the abstract's contexts before the question


@SOURCES.register("pubmedqa")
class PubMedQASource(TextSource):
    Options = PubMedQAOptions

    def accepts(self, path: Path) -> bool:
        return path.suffix == ".json" and path.name.startswith("ori_pqa")

    def _test_ids(self, data_file: Path) -> set[str]:
        if not self.opts.test_ids:
            return set()
        p = data_file.parent / self.opts.test_ids
        if not p.is_file():
            return set()
        import json

        return {str(k) for k in json.loads(p.read_text(encoding="utf-8"))}

    def load_text(self, unit: Unit) -> Iterator[TextItem | Reject]:
        test = self._test_ids(Path(unit.payload["path"]))
        for r in self.rows(unit):
            if isinstance(r, Reject):
                yield r
                continue
            where, pair = r
            if not (isinstance(pair, tuple) and isinstance(pair[1], dict)):
                yield self.reject(unit.key, f"{where}: expected PMID -> object (the ori_pqal.json layout)", "validate")
                return
            pmid, row = pair
            q, long_answer = row.get("QUESTION"), row.get("LONG_ANSWER")
            decision = str(row.get("final_decision") or "").strip().lower()
            problem = ("QUESTION is missing" if not isinstance(q, str) or not q.strip() else
                       "LONG_ANSWER is missing" if not isinstance(long_answer, str) or not long_answer.strip() else
                       f"final_decision {row.get('final_decision')!r} is not yes/no/maybe (PQA-U is unlabelled)"
                       if decision not in DECISIONS else None)
            if problem:
                yield self.reject(f"{unit.key}#{pmid}", f"{where}: {problem}", "validate")
                continue
            contexts = [c.strip() for c in row.get("CONTEXTS") or [] if isinstance(c, str) and c.strip()]
            labels = row.get("LABELS") or []
            ctx = "\n".join(f"{lab.title()}: {c}" if isinstance(lab, str) and lab else c
                            for c, lab in zip(contexts, [*labels, *[""] * len(contexts)]))
            user = (f"Context:\n{ctx}\nQuestion: {q.strip()}" if self.opts.contexts and ctx else q.strip())
            answer = f"{long_answer.strip()}\nAnswer: {decision}"
            yield TextItem(key=str(pmid), turns=[("user", user), ("assistant", answer)], task="qa",
                           split="test" if str(pmid) in test else "train", lang=detect_lang(q + long_answer),
                           source_file=unit.key, meta={"decision": decision, "year": row.get("YEAR"),
                                                       "meshes": row.get("MESHES") or []})
