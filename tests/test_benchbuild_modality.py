"""bench-build --ask modality: "which imaging modality" questions over the real images of test_benchbuild's build
(test split: CT, fundus, X-ray, pathology; an MR slice only in train), read back and scored by `medvl eval`."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_benchbuild import _decode, _rows, make_build

from medvl.core.records import ImageRecord
from medvl.curate.benchbuild import BenchBuildConfig, build_benchmark
from medvl.curate.benchquestions import load_phrase_pool

TASK = "Modality Recognition"
TEST_MODALITIES = {"CT": "CT", "X-ray": "X-ray", "fundus": "fundus photography", "pathology": "pathology"}

Built = tuple[Path, Path, Path, dict[str, ImageRecord]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = make_build(tmp_path_factory.mktemp("build") / "out")
    labels_only, both = tmp_path_factory.mktemp("labels"), tmp_path_factory.mktemp("both")
    build_benchmark(root, labels_only, BenchBuildConfig(seed=3))
    build_benchmark(root, both, BenchBuildConfig(seed=3, ask=("labels", "modality")))
    recs = {json.loads(line)["id"]: ImageRecord.from_dict(json.loads(line))
            for line in (root / "records.jsonl").read_text().splitlines() if "broken" not in line}
    return root, labels_only, both, recs


def _modality_rows(out: Path) -> list[dict[str, str]]:
    return [r for r in _rows(out / "bench.tsv") if r["clinical vqa task"] == TASK]


def test_options_are_the_splits_modalities_and_the_answer_is_the_records(built: Built) -> None:
    root, _, out, recs = built
    rows = _modality_rows(out)
    test_recs = [rid for rid, r in recs.items() if r.split == "test"]
    assert sorted(r["source_record"] for r in rows) == sorted(test_recs)  # one question per test record
    for r in rows:
        rec = recs[r["source_record"]]
        opts = [r[k] for k in "ABCDE" if r[k]]
        assert len(opts) == 4 and len(set(opts)) == 4 and not r["E"]
        assert set(opts) == set(TEST_MODALITIES.values())  # the train-only MR never appears
        assert r[r["answer"]] == TEST_MODALITIES[rec.modality] == r["modality"]
        assert TEST_MODALITIES[rec.modality] not in [r[k] for k in "ABCD" if k != r["answer"]]
        assert r["perceptual granularity"] == "image level" and r["category"] == TASK
        assert r["department"] == (rec.department or "") and r["source_region"] == ""
        orig = np.asarray(Image.open(root / rec.image).convert("RGB"))
        assert np.array_equal(_decode(r["image"]), orig)  # nothing drawn
    manifest = json.loads((out / "bench_manifest.json").read_text())
    assert manifest["modality_space"] == dict(sorted(TEST_MODALITIES.items()))
    assert manifest["by_task"][TASK] == len(rows) and manifest["config"]["ask"] == ["labels", "modality"]
    by_mod = Counter(recs[r["source_record"]].modality for r in rows)
    assert {k: manifest["by_modality"][k] - n for k, n in by_mod.items()} == {
        k: json.loads((built[1] / "bench_manifest.json").read_text())["by_modality"].get(k, 0) for k in by_mod}


def test_questions_name_the_task_and_image_granularity_never_the_modality(built: Built) -> None:
    pool = load_phrase_pool("en")
    rows = _modality_rows(built[2])
    assert len({r["question"] for r in rows}) > 1
    for r in rows:
        q = r["question"]
        assert "which imaging modality" in q.lower() and pool.granularities_named(q) == ["image"], q
        for name in {*TEST_MODALITIES, *TEST_MODALITIES.values(), "MRI", "MR"}:
            assert not re.search(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z])", q, re.IGNORECASE), (name, q)


def test_label_questions_unchanged_and_letters_balanced_per_kind(built: Built) -> None:
    _, labels_only, both, _ = built
    before, after = _rows(labels_only / "bench.tsv"), _rows(both / "bench.tsv")
    assert after[: len(before)] == before  # label questions first, byte for byte the same
    assert all(r["clinical vqa task"] == TASK for r in after[len(before):])
    letters = Counter(r["answer"] for r in _modality_rows(both))
    assert set(letters) == set("ABCD") and max(letters.values()) - min(letters.values()) <= 1


def test_per_label_caps_each_modality_and_is_deterministic(built: Built, tmp_path: Path) -> None:
    root, _, _, recs = built
    cfg = BenchBuildConfig(seed=3, ask=("modality",), per_label=2)
    build_benchmark(root, tmp_path / "a", cfg)
    rows = _rows(tmp_path / "a" / "bench.tsv")
    per = Counter(r[r["answer"]] for r in rows)
    assert per == {"CT": 2, "X-ray": 2, "fundus photography": 2, "pathology": 1}
    assert all(r["clinical vqa task"] == TASK for r in rows)
    manifest = json.loads((tmp_path / "a" / "bench_manifest.json").read_text())
    assert manifest["dropped_by_per_label"] == 4 + 3 + 8 - 6 and manifest["small_label_spaces"] == {}
    build_benchmark(root, tmp_path / "b", cfg)
    build_benchmark(root, tmp_path / "c", BenchBuildConfig(seed=4, ask=("modality",), per_label=2))
    for name in ("bench.tsv", "bench_manifest.json", "skipped.jsonl"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    assert (tmp_path / "c" / "bench.tsv").read_bytes() != (tmp_path / "a" / "bench.tsv").read_bytes()
    # all splits: the MR slice joins, and MRI becomes an option
    build_benchmark(root, tmp_path / "all", BenchBuildConfig(split=None, ask=("modality",), n_options=5))
    rows = _rows(tmp_path / "all" / "bench.tsv")
    assert len(rows) == len(recs) and all({r[k] for k in "ABCDE"} == {*TEST_MODALITIES.values(), "MRI"} for r in rows)
    with pytest.raises(ValueError, match="allowed: labels, modality"):
        BenchBuildConfig(ask=("organ",))


def _subset_build(root: Path, dest: Path, recs: list[ImageRecord]) -> Path:
    """A build of ``recs`` whose images and masks are ``root``'s (through symlinks)."""
    dest.mkdir()
    for d in ("images", "masks"):
        (dest / d).symlink_to(root / d)
    (dest / "records.jsonl").write_text("".join(r.to_json() + "\n" for r in recs), encoding="utf-8")
    return dest


def _one_modality_build(root: Path, dest: Path, recs: dict[str, ImageRecord]) -> Path:
    """Only the CT records of ``root``, plus one record without a modality."""
    ct = [r for r in recs.values() if r.modality == "CT"]
    blank = ImageRecord.from_dict({**ct[0].to_dict(), "modality": "", "dataset": "unknown_modality"})
    return _subset_build(root, dest, [*ct, blank])


def test_per_label_caps_a_modality_across_datasets(built: Built, tmp_path: Path) -> None:
    """The cap is per answer modality, not per (dataset, modality): 4 + 2 CT records of two datasets give 3."""
    root, _, _, recs = built
    ct = [r for r in recs.values() if r.modality == "CT"]
    other = [ImageRecord.from_dict({**r.to_dict(), "dataset": "more_ct"}) for r in ct[:2]]
    fundus = [r for r in recs.values() if r.modality == "fundus"]
    src = _subset_build(root, tmp_path / "b", [*ct, *other, *fundus])
    build_benchmark(src, tmp_path / "o", BenchBuildConfig(ask=("modality",), per_label=3, split=None, n_options=2))
    rows = _rows(tmp_path / "o" / "bench.tsv")
    assert Counter(r[r["answer"]] for r in rows) == {"CT": 3, "fundus photography": 3}
    assert all({r["A"], r["B"]} == {"CT", "fundus photography"} and not r["C"] for r in rows)


def test_one_modality_skips_with_reason(built: Built, tmp_path: Path) -> None:
    from medvl.cli.main import cli

    src = _one_modality_build(built[0], tmp_path / "ct", built[3])
    res = CliRunner().invoke(cli, ["bench-build", str(src), "-o", str(tmp_path / "o"), "--ask", "modality"])
    assert res.exit_code == 0, res.output
    assert "warning: --options 4 requested, but the split has 1 modality: modality questions skipped" in \
        " ".join(res.output.split())
    assert _rows(tmp_path / "o" / "bench.tsv") == []
    skipped = [json.loads(line) for line in (tmp_path / "o" / "skipped.jsonl").read_text().splitlines()]
    codes = Counter((s["kind"], s["code"]) for s in skipped)
    assert codes == {("modality", "too_few_modalities"): 4, ("modality", "no_modality"): 1}
    assert all("1 modality(ies) ['CT']" in s["reason"] for s in skipped if s["code"] == "too_few_modalities")
    bad = CliRunner().invoke(cli, ["bench-build", str(src), "-o", str(tmp_path / "x"), "--ask", "labels,organ"])
    assert bad.exit_code != 0 and "allowed: labels, modality" in bad.output


def test_cli_lists_modalities(built: Built, tmp_path: Path) -> None:
    from medvl.cli.main import cli

    res = CliRunner().invoke(cli, ["bench-build", str(built[0]), "-o", str(tmp_path), "--seed", "3",
                                   "--ask", "labels,modality"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "modalities of the split (options of modality questions): CT, X-ray, fundus photography, pathology" in text
    assert TASK in text and "warning: --options 4 requested, but the split has" not in text
    assert (tmp_path / "bench.tsv").read_bytes() == (built[2] / "bench.tsv").read_bytes()


def test_eval_reads_and_scores_the_tsv(built: Built, tmp_path: Path) -> None:
    """`medvl eval gmai-mmbench --option file=...` on the TSV: a model that answers every modality question
    right and every label question wrong scores 1 on the Modality Recognition slice and 0 elsewhere."""
    from medvl.cli.main import cli

    out = built[2]
    rows = _rows(out / "bench.tsv")
    preds = tmp_path / "preds.jsonl"
    with preds.open("w", encoding="utf-8") as f:
        for r in rows:
            letter = r["answer"] if r["clinical vqa task"] == TASK else ("B" if r["answer"] == "A" else "A")
            f.write(json.dumps({"id": r["index"], "response": f"The answer is {letter}."}) + "\n")
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["eval", "gmai-mmbench", "--data", str(out), "--option", f"file={out / 'bench.tsv'}",
                                   "--model", f"predictions:{preds}", "-o", str(run)])
    assert res.exit_code == 0, res.output
    results = json.loads((run / "results.json").read_text())
    n_mod = len(_modality_rows(out))
    assert results["n"] == len(rows) and results["n_correct"] == n_mod and results["parse_failures"] == 0
    tasks = results["groups"]["clinical_task"]
    assert tasks[TASK]["accuracy"] == 1.0 and tasks[TASK]["n"] == n_mod
    assert all(v["accuracy"] == 0.0 for k, v in tasks.items() if k != TASK)
    image_level = results["groups"]["granularity"]["image level"]
    assert image_level["n"] == n_mod + sum(1 for r in rows if r["perceptual granularity"] == "image level"
                                           and r["clinical vqa task"] != TASK)
    assert results["groups"]["modality"]["fundus photography"]["n"] >= 8
