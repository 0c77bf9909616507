"""Issue 8: a build streams through shards, resumes after `kill -9` with byte-identical outputs, gives the
same outputs whatever the shard sizes and executor, and keeps memory bounded.

The corpus is the scale benchmark's (benchmarks/make_scale_corpus.py: NIH-layout label and box tables over
crops of real pip-shipped images, plus MSD-layout NIfTI crops of the MNI152 template); builds run as real
`medvl build` subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from build_helpers import scale_corpus_module, tree, tree_differences

SHARDS = ["--shard-units", "8", "--chunk-records", "40", "--bucket-records", "60"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale") / "corpus"
    scale_corpus_module().make_corpus(out, images=100, volumes=2, side=48, jobs=1)
    return out


def build(recipe: Path, out: Path, *extra: str, env: dict | None = None, check: bool = True
          ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from medvl.cli.main import main; main()", "build", str(recipe), "-o", str(out),
           *SHARDS, *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"build failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p



@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("ref") / "build"
    build(corpus / "recipe.yaml", out)
    files = tree(out)
    assert not (out / ".medvl-work").exists(), "a finished build removes its work folder"
    return files


@pytest.mark.parametrize("point", ["read/@2", "curate/bucket@1", "generate/@2", "finish/tables@1", "export/llava@1"])
def test_kill_and_resume_gives_identical_outputs(corpus, reference, tmp_path, point):
    """SIGKILL right after the given unit is journaled, then --resume: every output file byte-identical."""
    out = tmp_path / "build"
    p = build(corpus / "recipe.yaml", out, env={"MEDVL_FAILPOINT": point}, check=False)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    assert (out / ".medvl-work" / "journal.jsonl").is_file()
    assert not (out / "manifest.json").exists()
    again = build(corpus / "recipe.yaml", out, env={"MEDVL_FAILPOINT": ""}, check=False)
    assert again.returncode != 0 and "--resume" in again.stderr + again.stdout  # never silently restarted
    build(corpus / "recipe.yaml", out, "--resume")
    assert tree_differences(tree(out), reference) == []


def test_kill_at_a_random_moment_then_resume(corpus, reference, tmp_path):
    """A real `kill -9` from outside while read tasks are being journaled; resume redoes only what the
    journal does not vouch for (its finished read tasks are not run again)."""
    out = tmp_path / "build"
    cmd = [sys.executable, "-c", "from medvl.cli.main import main; main()", "build", str(corpus / "recipe.yaml"),
           "-o", str(out), *SHARDS, "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = out / ".medvl-work" / "journal.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_text().count('"read/') >= 5:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the build and its worker processes
    proc.wait()
    lines = journal.read_text(encoding="utf-8").splitlines()
    finished = {json.loads(x)["unit"] for x in lines if x.strip().endswith("}")}
    assert any(u.startswith("read/") for u in finished)
    build(corpus / "recipe.yaml", out, "--resume")
    assert tree_differences(tree(out), reference) == []


def test_resume_refuses_a_changed_recipe(corpus, tmp_path):
    out = tmp_path / "build"
    p = build(corpus / "recipe.yaml", out, env={"MEDVL_FAILPOINT": "read/@1"}, check=False)
    assert p.returncode == -signal.SIGKILL
    changed = tmp_path / "recipe.yaml"
    changed.write_text((corpus / "recipe.yaml").read_text().replace("seed: 0", "seed: 1").replace(
        "path: nih_like", f"path: {corpus / 'nih_like'}").replace("path: decathlon", f"path: {corpus / 'decathlon'}"))
    p = build(changed, out, "--resume", check=False)
    assert p.returncode != 0 and "the recipe changed" in p.stderr + p.stdout
    p = build(corpus / "recipe.yaml", out, "--resume", "--shard-units", "9", check=False)
    assert p.returncode != 0 and "shard_units changed" in p.stderr + p.stdout


def test_shard_sizes_and_workers_do_not_change_outputs(corpus, reference, tmp_path):
    out = tmp_path / "build"
    cmd_extra = ["--workers", "2", "--shard-units", "3", "--chunk-records", "7", "--bucket-records", "1000"]
    build(corpus / "recipe.yaml", out, *cmd_extra)
    assert tree_differences(tree(out), reference) == []


def test_manifest_checksums_and_layout(corpus, reference, tmp_path):
    """Every file the manifest lists exists with its size and checksum; images sit in two levels of hash
    folders named by their content hash."""
    out = tmp_path / "build"
    build(corpus / "recipe.yaml", out)
    manifest = json.loads((out / "manifest.json").read_text())
    listed = [f for f in manifest["files"] if not f["path"].endswith("/")]
    assert listed and all(not f.get("missing") for f in listed)
    for f in listed:
        data = (out / f["path"]).read_bytes()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]
    shards = [f for f in listed if f["format"] == "parquet"]
    assert shards and all(f["samples"] > 0 for f in shards)
    images = sorted((out / "images").rglob("*.png"))
    assert images
    for p in images:
        a, b = p.parent.parent.name, p.parent.name
        assert p.stem[:2] == a and p.stem[2:4] == b
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.stem
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert {r["image"] for r in records} == {p.relative_to(out).as_posix() for p in images}


def test_overwrite_reuses_images_and_removes_unused(corpus, tmp_path):
    """--overwrite keeps content-addressed images for reuse; files no record uses (here: a stray image and a
    temporary file of a killed writer) are removed at the end."""
    out = tmp_path / "build"
    build(corpus / "recipe.yaml", out)
    one = sorted((out / "images").rglob("*.png"))[0]
    mtime = one.stat().st_mtime_ns
    stray = out / "images" / "00" / "00" / ("0" * 64 + ".png")
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"not an image of this build")
    tmp_left = one.parent / f".{one.stem}.999.tmp"
    tmp_left.write_bytes(b"half")
    p = build(corpus / "recipe.yaml", out, check=False)
    assert p.returncode != 0 and "--overwrite" in p.stderr + p.stdout
    build(corpus / "recipe.yaml", out, "--overwrite")
    assert one.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert not stray.exists() and not tmp_left.exists()


def test_resume_verifies_reused_images(corpus, reference, tmp_path):
    """An image file damaged before a resume (e.g. lost writes after a power cut) is rewritten, not trusted."""
    out = tmp_path / "build"
    p = build(corpus / "recipe.yaml", out, env={"MEDVL_FAILPOINT": "read/@1"}, check=False)
    assert p.returncode == -signal.SIGKILL
    # damage every image written so far (the resumed build redoes the unfinished read tasks)
    for img in (out / "images").rglob("*.png"):
        img.write_bytes(img.read_bytes()[:20])
    journal = out / ".medvl-work" / "journal.jsonl"
    journal.write_text("")  # and forget the finished unit, so every image is written again
    build(corpus / "recipe.yaml", out, "--resume")
    assert tree_differences(tree(out), reference) == []


def test_resume_refuses_a_build_started_by_an_older_build_format(tmp_path):
    """An unfinished build whose plan has an older version (e.g. images written by Pillow's encoder before medvl wrote
    levels 0-3 itself) is not resumed with mixed image bytes: the error says what changed."""
    from medvl.pipeline.workdir import PLAN_VERSION, WORK, WorkdirError, prepare

    plan = {"version": PLAN_VERSION, "recipe_sha256": "r", "salt_check": "s", "shard_units": 1,
            "chunk_records": 1, "bucket_records": 1}
    (tmp_path / WORK).mkdir()
    (tmp_path / WORK / "plan.json").write_text(json.dumps({**plan, "version": PLAN_VERSION - 1}))
    with pytest.raises(WorkdirError, match=rf"build format \(plan version {PLAN_VERSION - 1} -> {PLAN_VERSION}\)"):
        prepare(tmp_path, plan, overwrite=False, resume=True)
    assert prepare(tmp_path, plan, overwrite=True, resume=True) == tmp_path / WORK  # --overwrite starts over


def test_read_tasks_end_smaller_whatever_the_workers():
    """A source's last units go into quarter-size read tasks, and the very last into tasks halving in size, two of
    each (the stage ends evenly on every worker); the cut depends only on the unit count and --shard-units, so a
    resumed build cuts the same tasks."""
    from medvl.core.shards import TAIL_HALVINGS
    from medvl.pipeline.steps import TAIL_TASKS, tail_sizes

    assert (TAIL_TASKS, TAIL_HALVINGS) == (4, 4)
    end = [8, 8, 4, 4, 2, 2, 1, 1]  # shard_units 64: quarter-size tasks of 16, then halving
    assert tail_sizes(0, 64) == []
    assert tail_sizes(256, 64) == [16] * 14 + [2] + end
    assert tail_sizes(300, 64) == [16] * 16 + [14] + end
    assert tail_sizes(30, 64) == end
    assert tail_sizes(5, 64) == [1, 2, 1, 1]  # fewer units than the end: its last tasks
    assert tail_sizes(7, 3) == [1] * 7  # ceil(3 / 4) = 1: nothing to halve
    assert tail_sizes(9, 8) == [2, 2, 2, 1, 1, 1]
    assert tail_sizes(625, 500) == [125] * 3 + [20, 62, 62, 31, 31, 15, 15, 7, 7]  # at most TAIL_HALVINGS halvings
    for n in range(0, 400, 7):
        sizes = tail_sizes(n, 64)
        assert sum(sizes) == n and all(s >= 1 for s in sizes)


@pytest.mark.parametrize("n", [0, 5, 28, 29, 40, 100])
def test_generation_chunks_end_smaller(tmp_path, n):
    """The records file is cut into chunks of --chunk-records records, except the last TAIL_TASKS * chunk_records
    (or so) records, which go into quarter-size chunks: the same cut as the read stage's, a function of the record
    count and the chunk size only. The chunks are contiguous byte ranges covering the whole file."""
    from medvl.core.shards import TAIL_TASKS, tail_sizes
    from medvl.curate import CurationReport
    from medvl.curate.stage import final_pass

    (tmp_path / "curate" / "out").mkdir(parents=True)
    lines = []
    for i in range(n):
        rec = {"dataset": "d", "extra": {}, "image": f"images/{i:04d}.png", "modality": "CT", "patient_key": f"p{i % 3}"}
        lines.append(json.dumps(f"r{i:04d}") + "\t" + json.dumps(rec))
    (tmp_path / "curate" / "out" / "records-00000.jsonl").write_text("".join(x + "\n" for x in lines))
    chunk = 7
    chunks, _, total = final_pass(1, tmp_path, {f"p{k}": "train" for k in range(3)}, set(), CurationReport(), {}, chunk)
    assert total == n
    data = (tmp_path / "records.jsonl").read_bytes()
    assert [a for a, _ in chunks] == [0, *(b for _, b in chunks[:-1])][:len(chunks)]
    assert (chunks[-1][1] if chunks else 0) == len(data)
    sizes = [data[a:b].count(b"\n") for a, b in chunks]
    full = max(0, (n - TAIL_TASKS * chunk) // chunk)
    assert sizes == [chunk] * full + tail_sizes(n - full * chunk, chunk)
    if n == 100:
        assert sizes == [7] * 10 + [2] * 14 + [1, 1]


def test_bad_card_option_is_a_build_error_naming_it(corpus, tmp_path):
    """An unknown card option ends the build with a one-line error naming the export and the allowed options (it is
    checked before any export task runs), not a traceback."""
    import yaml

    recipe = yaml.safe_load((corpus / "recipe.yaml").read_text())
    recipe["export_options"] = {**(recipe.get("export_options") or {}), "card": {"plot": False}}
    recipe["root"] = str(corpus)  # the sources' relative paths still start there
    bad = tmp_path / "bad_card_recipe.yaml"
    bad.write_text(yaml.safe_dump(recipe))
    p = build(bad, tmp_path / "build", check=False)
    assert p.returncode == 1
    assert "Error: export 'card': unknown option 'plot'; allowed: plots, top" in p.stderr
    assert "Traceback" not in p.stderr
