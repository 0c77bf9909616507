"""bench-build: GMAI-MMBench-style multiple choice from hand-made records over real medical images."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from medvl.core.hashing import content_hash
from medvl.core.records import ImageRecord, Region
from medvl.curate.benchbuild import BenchBuildConfig, build_benchmark
from medvl.curate.benchquestions import load_phrase_pool
from medvl.curate.overlay import contour_mask, draw_box
from medvl.imaging.boxes import mask_to_regions

DR = ["no DR", "mild DR", "moderate DR", "severe DR", "proliferative DR"]
ORGANS = {1: "liver", 2: "spleen", 3: "left kidney", 4: "right kidney"}


def _u8(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    lo, hi = np.percentile(a, 1), np.percentile(a, 99)
    return (np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8)


def _ct_slices() -> list[np.ndarray]:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    ct = _u8(dcmread(get_testdata_file("CT_small.dcm")).pixel_array)  # 128x128
    liver = dcmread(get_testdata_file("liver.dcm")).pixel_array  # frames of 512x512
    frames = [_u8(np.asarray(Image.fromarray(_u8(liver[i])).resize((128, 128)))) for i in range(min(3, len(liver)))]
    return [ct, *frames]


def _write(root: Path, rel: str, arr: np.ndarray) -> tuple[str, str]:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    data = buf.getvalue()
    sha = content_hash(data)
    rel = rel.format(sha=sha, d=sha[:2])
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    return rel, sha


def _rec(rel: str, sha: str, arr: np.ndarray, **kw) -> ImageRecord:
    h, w = arr.shape[:2]
    base = dict(image=rel, sha256=sha, width=w, height=h, dimension="2d", patient_key=sha[:16], split="test")
    base.update(kw)
    return ImageRecord(**base)


def make_build(root: Path) -> Path:
    """A `medvl build`-like output: CT slices with organ label maps, fundus crops with DR grades, X-ray boxes,
    a single-label pathology dataset, a record whose mask file is missing, and train-split records (fundus,
    and an MR slice whose modality no test record has)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from skimage import data as skd

    root.mkdir(parents=True, exist_ok=True)
    recs: list[ImageRecord] = []
    for i, img in enumerate(_ct_slices()):
        lm = np.zeros(img.shape, dtype=np.uint8)
        yy, xx = np.mgrid[:128, :128]
        lm[((yy - 40 - i) / 20.0) ** 2 + ((xx - 42) / 27.0) ** 2 <= 1] = 1  # elliptical liver
        lm[30:55, 85:110 - i] = 2
        lm[75:100, 20 + i:45] = 3
        if i % 2 == 0:
            lm[75:100, 80:105] = 4
        rel, sha = _write(root, "images/{d}/{sha}.png", img)
        mrel, _ = _write(root, "masks/{d}/{sha}.png", lm)
        if i == 3:
            mrel = "masks/ff/missing.png"
        recs.append(_rec(rel, sha, img, modality="CT", dataset="abdomen_organs", source_format="decathlon", task="seg",
                         source_file=f"imagesTr/case{i}.nii.gz", clinical_task="Organ Recognition - Abdomen",
                         department="Gastroenterology & Hepatology", mask=mrel,
                         mask_values={str(k): v for k, v in ORGANS.items()},
                         regions=mask_to_regions(lm, ORGANS), slice={"axis": "axial", "index": i, "of": 4}))
    retina = np.asarray(Image.fromarray(skd.retina()).resize((400, 400)))
    for i in range(10):
        crop = np.ascontiguousarray(retina[(i % 5) * 40:(i % 5) * 40 + 160, (i // 5) * 60:(i // 5) * 60 + 160])
        rel, sha = _write(root, "images/{d}/{sha}.png", crop)
        recs.append(_rec(rel, sha, crop, modality="fundus", dataset="fundus_dr", source_format="image_folder", task="cls",
                         source_file=f"{DR[i % 5]}/img{i}.png", labels=[DR[i % 5]], clinical_task="Disease Diagnosis",
                         department="Ophthalmology", split="test" if i < 8 else "train"))
    rg = dcmread(get_testdata_file("RG1_UNCI.dcm")).pixel_array
    xr = _u8(np.asarray(Image.fromarray(_u8(rg)).resize((150, 160))))
    for i, (lab, box) in enumerate([("nodule", (30, 40, 60, 70)), ("mass", (80, 50, 130, 110)), ("nodule", (10, 100, 40, 140))]):
        rel, sha = _write(root, "images/{d}/{sha}.png", np.ascontiguousarray(np.roll(xr, i * 3, axis=1)))
        recs.append(_rec(rel, sha, xr, modality="X-ray", dataset="chest_boxes", source_format="csv_boxes", task="det",
                         source_file=f"img{i}.png", regions=[Region(lab, tuple(float(v) for v in box))],
                         labels=[lab], department="Pulmonary Medicine"))
    mr = _u8(dcmread(get_testdata_file("MR_small.dcm")).pixel_array)  # a train-only modality
    rel, sha = _write(root, "images/{d}/{sha}.png", mr)
    recs.append(_rec(rel, sha, mr, modality="MR", dataset="brain_mr", source_format="dicom", task="cls",
                     source_file="mr/1.dcm", labels=["normal"], split="train"))
    ihc = np.ascontiguousarray(skd.immunohistochemistry()[:128, :128])
    rel, sha = _write(root, "images/{d}/{sha}.png", ihc)
    recs.append(_rec(rel, sha, ihc, modality="pathology", dataset="single_label", source_format="image_folder",
                     task="cls", source_file="tumor/a.png", labels=["tumor"], clinical_task="Cell Recognition"))
    with (root / "records.jsonl").open("w", encoding="utf-8") as f:
        for r in recs:
            f.write(r.to_json() + "\n")
        f.write('{"image": "images/00/broken.png"}\n')  # a bad line is skipped with its line number
    return root


def _rows(tsv: Path) -> list[dict[str, str]]:
    with tsv.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, ImageRecord]]:
    root = make_build(tmp_path_factory.mktemp("build") / "out")
    out = tmp_path_factory.mktemp("bench")
    build_benchmark(root, out, BenchBuildConfig(seed=3))
    recs = {json.loads(line)["id"]: ImageRecord.from_dict(json.loads(line))
            for line in (root / "records.jsonl").read_text().splitlines() if "broken" not in line}
    return root, out, recs


def test_options_answers_and_label_space(built: tuple[Path, Path, dict[str, ImageRecord]]) -> None:
    root, out, recs = built
    rows = _rows(out / "bench.tsv")
    manifest = json.loads((out / "bench_manifest.json").read_text())
    spaces = manifest["label_spaces"]
    assert spaces["abdomen_organs"] == sorted(ORGANS.values()) and spaces["fundus_dr"] == sorted(DR)
    assert len(rows) == manifest["questions"] > 0
    for r in rows:
        rec = recs[r["source_record"]]
        assert rec.split == "test"
        opts = [r[k] for k in "ABCDE" if r[k]]
        assert [r[k] for k in "ABCDE"][len(opts):] == [""] * (5 - len(opts))  # no gaps
        assert len(opts) == min(4, len(spaces[rec.dataset])) and len(set(opts)) == len(opts)
        assert set(opts) <= set(spaces[rec.dataset])
        answer = r[r["answer"]]
        if r["perceptual granularity"] == "image level":
            assert answer in rec.labels and not (set(opts) - {answer}) & set(rec.labels)
        else:
            assert answer == rec.regions[int(r["source_region"])].label
    grans = Counter(r["perceptual granularity"] for r in rows)
    assert set(grans) == {"image level", "box level", "mask level", "contour level"}
    assert manifest["by_granularity"] == dict(sorted(grans.items()))
    assert sum(manifest["by_department"].values()) == len(rows)
    n_opts = Counter(str(sum(1 for k in "ABCDE" if r[k])) for r in rows)
    assert manifest["options_per_question"] == dict(sorted(n_opts.items())) and set(n_opts) == {"2", "4"}
    assert manifest["small_label_spaces"] == {"chest_boxes": 2, "single_label": 1}
    two = {recs[r["source_record"]].dataset for r in rows if not r["C"]}
    assert two == {"chest_boxes"}


def test_answer_letters_balanced(built: tuple[Path, Path, dict[str, ImageRecord]]) -> None:
    rows = _rows(built[1] / "bench.tsv")
    four = Counter(r["answer"] for r in rows if r["D"] and not r["E"])
    assert set(four) == set("ABCD") and max(four.values()) - min(four.values()) <= 1


def test_questions_name_modality_task_and_granularity(built: tuple[Path, Path, dict[str, ImageRecord]]) -> None:
    pool = load_phrase_pool("en")
    for r in _rows(built[1] / "bench.tsv"):
        rec = built[2][r["source_record"]]
        q = r["question"]
        gran = r["perceptual granularity"].split()[0]
        assert pool.modality(rec.modality) in q and r["modality"] == pool.modality(rec.modality)
        assert pool.task(rec.clinical_task).cue in q.lower()
        assert any(c.lower() in q.lower() for c in pool.cues[gran]), f"no {gran}-level cue in {q!r}"
        assert pool.granularities_named(q) == [gran], q
    organ = [r for r in _rows(built[1] / "bench.tsv") if r["source_record"].split("#")[3] == "abdomen_organs"]
    assert organ and all("which organ" in r["question"].lower() for r in organ)
    assert all(r["clinical vqa task"] == "Organ Recognition - Abdomen" for r in organ)


def test_every_pool_question_names_modality_task_and_granularity() -> None:
    pool = load_phrase_pool("en")
    assert set(pool.cues) == {"image", "box", "mask", "contour"} and all(pool.cues.values())
    seen = Counter()
    for task in pool.tasks.values():
        n = len(task.phrasings) * max(len(t) for t in pool.targets.values())
        for gran in pool.targets:
            for modality_key, name in pool.modality_names.items():
                for pick in range(n):
                    q = pool.question(task.name, gran, modality_key, pick)
                    low = q.lower()
                    assert name in q and task.cue.lower() in low, q
                    assert [c for c in pool.cues[gran] if c.lower() in low], f"no {gran}-level cue in {q!r}"
                    assert pool.granularities_named(q) == [gran], q
                    seen[gran] += 1
    assert min(seen.values()) > 100
    whole = [pool.question("Attribute Recognition", "image", "pathology", i) for i in range(2)]
    assert "Looking at this pathology image, which attribute is present?" not in whole


@pytest.mark.parametrize("old, new, where", [
    ('- "the whole {modality} image"', '- "this {modality} image"', "granularities.image.targets[0]"),
    ('- "the entire {modality} image"', '- "the entire {modality} image in the box"', "granularities.image.targets[1]"),
    ('cues: ["contour"]', 'cues: []', "granularities.contour: needs a non-empty 'cues'"),
    ('"Which bone is shown in {target}?"', '"Which bone is shown in the whole of {target}?"', "tasks.Bone.phrasings[0]"),
    # the modality_recognition section: no modality named, an image cue, no slot, its cue, a task
    ('"Which imaging modality produced the whole image?"', '"Which imaging modality produced the whole CT image?"',
     "phrasings[0] 'Which imaging modality produced the whole CT image?': names the modality 'CT'"),
    ('"Which imaging modality produced the whole image?"', '"Which imaging modality produced this image?"',
     "phrasings[0] 'Which imaging modality produced this image?': must contain one of the image cues"),
    ('"Which imaging modality produced the whole image?"', '"Which imaging modality produced the whole {target}?"',
     "takes no slot"),
    ('"Which imaging modality produced the whole image?"', '"Which scanner produced the whole image?"',
     "must contain the cue 'which imaging modality'"),
    ("  task: Modality Recognition\n", "", "modality_recognition: needs a 'task'"),
])
def test_phrase_pool_checker_rejects_bad_phrasings(tmp_path: Path, old: str, new: str,
                                                                      where: str) -> None:
    from medvl.curate.benchquestions import PhrasePoolError, _pool_path

    text = _pool_path("en").read_text(encoding="utf-8")
    assert old in text
    bad = tmp_path / "bench_questions.yaml"
    bad.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(PhrasePoolError, match=re.escape(where)) as err:
        load_phrase_pool("en", bad)
    assert str(bad) in str(err.value)


def test_overlays_change_pixels_in_and_around_the_region(built: tuple[Path, Path, dict[str, ImageRecord]]) -> None:
    root, out, recs = built
    checked = Counter()
    for r in _rows(out / "bench.tsv"):
        rec = recs[r["source_record"]]
        drawn = _decode(r["image"]).astype(int)
        orig = np.asarray(Image.open(root / rec.image).convert("RGB")).astype(int)
        assert drawn.shape == orig.shape
        changed = np.any(drawn != orig, axis=2)
        gran = r["perceptual granularity"].split()[0]
        if gran == "image":
            assert not changed.any()
            continue
        reg = rec.regions[int(r["source_region"])]
        x1, y1, x2, y2 = (int(v) for v in reg.box)
        far = np.ones_like(changed)
        far[max(0, y1 - 6):y2 + 6, max(0, x1 - 6):x2 + 6] = False
        assert not changed[far].any(), "pixels far from the region must stay untouched"
        if gran == "box":
            ring = np.zeros_like(changed)
            ring[max(0, y1 - 2):y2 + 2, max(0, x1 - 2):x2 + 2] = True
            ring[y1:y2, x1:x2] = False
            assert changed[ring].mean() > 0.9 and not changed[y1:y2, x1:x2].any()
        else:
            lm = np.asarray(Image.open(root / rec.mask))
            m = np.isin(lm, [int(k) for k, v in rec.mask_values.items() if v == reg.label])
            m[:, :x1] = m[:, x2:] = False
            m[:y1] = m[y2:] = False
            if gran == "mask":
                assert changed[m].mean() > 0.95 and drawn[m][:, 1].mean() > orig[m][:, 1].mean()
            else:
                band = contour_mask(m, 2)
                assert changed[band].mean() > 0.9 and not changed[m & ~band].any()
        checked[gran] += 1
    assert checked["box"] and checked["mask"] and checked["contour"]


def test_skipped_items_have_reasons(built: tuple[Path, Path, dict[str, ImageRecord]]) -> None:
    skipped = [json.loads(line) for line in (built[1] / "skipped.jsonl").read_text().splitlines()]
    codes = Counter(s["code"] for s in skipped)
    assert codes["bad_record"] == 1 and "records.jsonl:" in next(s["reason"] for s in skipped if s["code"] == "bad_record")
    assert codes["too_few_labels"] == 1 and "single_label" in next(s["reason"] for s in skipped if s["code"] == "too_few_labels")
    missing = [s for s in skipped if s["code"] == "bad_source"]
    assert missing and all("missing.png" in s["reason"] and s["granularity"] in ("mask", "contour") for s in missing)
    manifest = json.loads((built[1] / "bench_manifest.json").read_text())
    assert manifest["candidates"] == manifest["questions"] + manifest["dropped_by_per_label"] + sum(
        v for k, v in manifest["skipped_by_code"].items() if k not in ("too_few_labels", "bad_record"))


def test_deterministic_bytes_and_seed(built: tuple[Path, Path, dict[str, ImageRecord]], tmp_path: Path) -> None:
    root, out, _ = built
    build_benchmark(root, tmp_path / "again", BenchBuildConfig(seed=3))
    for name in ("bench.tsv", "bench_manifest.json", "skipped.jsonl"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
    build_benchmark(root, tmp_path / "other", BenchBuildConfig(seed=4))
    assert (tmp_path / "other" / "bench.tsv").read_bytes() != (out / "bench.tsv").read_bytes()


def test_two_options_per_label_cap_and_granularity_choice(built: tuple[Path, Path, dict[str, ImageRecord]],
                                                          tmp_path: Path) -> None:
    root, _, recs = built
    build_benchmark(root, tmp_path, BenchBuildConfig(n_options=2, per_label=1, granularities=("image", "box")))
    rows = _rows(tmp_path / "bench.tsv")
    assert rows and all(r["A"] and r["B"] and not r["C"] for r in rows)
    assert {r["perceptual granularity"] for r in rows} == {"image level", "box level"}
    per = Counter((recs[r["source_record"]].dataset, r["perceptual granularity"], r[r["answer"]]) for r in rows)
    assert max(per.values()) == 1
    letters = Counter(r["answer"] for r in rows)
    assert abs(letters["A"] - letters["B"]) <= 1
    with pytest.raises(ValueError, match="between 2 and 5"):
        BenchBuildConfig(n_options=6)


def test_tsv_loads_through_gmai_mmbench_loader(built: tuple[Path, Path, dict[str, ImageRecord]]) -> None:
    from medvl.eval.types import BENCHMARKS

    if "gmai-mmbench" not in BENCHMARKS:
        pytest.skip("helper F's gmai-mmbench loader is not in this tree yet")
    out = built[1]
    rows = _rows(out / "bench.tsv")
    items = BENCHMARKS.get("gmai-mmbench")().load(out, file=str(out / "bench.tsv"))
    assert len(items) == len(rows)
    for it, r in zip(items, rows):
        assert it.question == r["question"] and it.answer == r["answer"] and it.answer_type == "mc"
        assert it.options == {k: r[k] for k in "ABCDE" if r[k]}
        assert r["perceptual granularity"] in it.groups.values()


def test_cli_prints_summary(built: tuple[Path, Path, dict[str, ImageRecord]], tmp_path: Path) -> None:
    from medvl.cli.main import cli

    res = CliRunner().invoke(cli, ["bench-build", str(built[0]), "-o", str(tmp_path), "--seed", "3",
                                   "--granularity", "image,box,mask,contour"])
    assert res.exit_code == 0, res.output
    assert "questions by granularity" in res.output and "box level" in res.output
    warn = next(line for line in res.output.splitlines() if line.startswith("warning: --options 4"))
    assert "chest_boxes (2 labels)" in warn and "single_label (1 label, skipped)" in warn
    assert "fundus_dr" not in warn and "abdomen_organs" not in warn
    five = CliRunner().invoke(cli, ["bench-build", str(built[0]), "-o", str(tmp_path / "five"), "--options", "5",
                                    "--granularity", "image"])
    assert five.exit_code == 0, five.output
    warn5 = next(line for line in five.output.splitlines() if line.startswith("warning: --options 5"))
    assert "abdomen_organs (4 labels)" in warn5 and "fundus_dr" not in warn5
    assert json.loads((tmp_path / "five" / "bench_manifest.json").read_text())["options_per_question"]["5"] > 0
    assert (tmp_path / "bench.tsv").read_bytes() == (built[1] / "bench.tsv").read_bytes()
    bad = CliRunner().invoke(cli, ["bench-build", str(built[0]), "-o", str(tmp_path), "--granularity", "pixel"])
    assert bad.exit_code != 0 and "allowed" in bad.output
    empty = CliRunner().invoke(cli, ["bench-build", str(tmp_path), "-o", str(tmp_path / "x")])
    assert empty.exit_code != 0 and "records.jsonl" in empty.output


def test_draw_box_at_image_border() -> None:
    img = np.zeros((20, 30), dtype=np.uint8)
    out = draw_box(img, (0, 0, 30, 20), width=2)
    assert out.shape == (20, 30, 3) and out[0, 5].tolist() == [255, 0, 0] and out[10, 15].tolist() == [0, 0, 0]
    assert img.sum() == 0  # input untouched
