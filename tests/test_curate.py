"""Curation: exact dedup on real written PNGs, MD5 exclusion lists, patient-level splits."""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvl.core.records import ImageRecord, Sample, Turn
from medvl.curate import (assign_sample_splits, assign_splits, assign_splits_with_report, curate_records,
                          dedup_records, exclude_by_md5, read_exclusions)
from medvl.pipeline.recipe import CurationConfig

FR = {"train": 0.8, "val": 0.1, "test": 0.1}


def _png(out: Path, arr: np.ndarray) -> tuple[str, str]:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    h = hashlib.sha256(buf.getvalue()).hexdigest()
    rel = f"images/{h[:2]}/{h}.png"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / rel).write_bytes(buf.getvalue())
    return rel, h


def _rec(image: str, sha: str, src: str, patient: str, dataset: str = "ds", **kw) -> ImageRecord:
    return ImageRecord(image=image, sha256=sha, width=kw.pop("width", 64), height=kw.pop("height", 64),
                       modality=kw.pop("modality", "fundus photography"), dataset=dataset,
                       source_format="image_folder", task="cls", dimension="2d", source_file=src, patient_key=patient,
                       labels=kw.pop("labels", ["normal"]), **kw)


@pytest.fixture()
def real(tmp_path):
    """Fundus and histology images written as content-addressed PNGs; the fundus one is listed twice."""
    from skimage import data
    from skimage.transform import resize

    fundus = (resize(data.retina(), (128, 128), anti_aliasing=True) * 255).round().astype(np.uint8)
    histo = data.immunohistochemistry()[:96, :128]
    f_rel, f_sha = _png(tmp_path, fundus)
    h_rel, h_sha = _png(tmp_path, histo)
    recs = [_rec(f_rel, f_sha, "b/retina_copy.png", "p2", width=128, height=128),
            _rec(h_rel, h_sha, "ihc.png", "p3", modality="pathology", width=128, height=96),
            _rec(f_rel, f_sha, "a/retina.png", "p1", width=128, height=128)]
    return tmp_path, recs


def test_dedup_drops_exact_copy_and_names_both(real):
    _, recs = real
    kept, rejects, merges = dedup_records(recs)
    assert [r.source_file for r in kept] == ["ihc.png", "a/retina.png"]  # input order, first id kept
    assert len(rejects) == 1 and rejects[0].stage == "dedup" and rejects[0].item == "b/retina_copy.png"
    assert f"{recs[0].id}: duplicate of {recs[2].id}" in rejects[0].reason and "nothing to add" in rejects[0].reason
    assert [(m.kept_patient, m.dropped_patient) for m in merges] == [("p1", "p2")]
    kept2, rejects2, _ = dedup_records(recs[::-1])
    assert [r.id for r in kept2] == [r.id for r in kept][::-1] and rejects2 == rejects


def test_exclude_by_md5_reads_files(real):
    out, recs = real
    md5 = hashlib.md5((out / recs[1].image).read_bytes()).hexdigest()
    kept, rejects = exclude_by_md5(recs, [md5.upper()], out)
    assert [r.source_file for r in kept] == ["b/retina_copy.png", "a/retina.png"]
    assert rejects[0].stage == "audit" and md5 in rejects[0].reason and rejects[0].item == "ihc.png"
    missing = _rec("images/00/gone.png", "0" * 64, "gone.png", "p9")
    kept, rejects = exclude_by_md5([missing], [md5], out)
    assert kept == [] and "cannot read image file images/00/gone.png" in rejects[0].reason
    assert exclude_by_md5(recs, [], out) == (recs, [])


def test_read_exclusions_text_and_json(tmp_path):
    a, b = hashlib.md5(b"a").hexdigest(), hashlib.md5(b"b").hexdigest()
    txt = tmp_path / "ex.txt"
    txt.write_text(f"# benchmark overlaps\n{a.upper()}  images/x.png\n\n{b} # inline comment\n")
    assert read_exclusions(txt) == {a, b}
    js = tmp_path / "overlaps.json"
    js.write_text(json.dumps([{"md5": a, "benchmark": "vqa-rad", "record_id": "x"}, {"md5": b}]))
    assert read_exclusions(js) == {a, b}
    audit_doc = {"overlaps": [{"md5": a, "match": "md5", "train_image": "images/x.png"}, {"md5": None}],
                 "text_overlaps": [{"md5": b}], "summary": {"overlaps": 1}, "errors": []}  # `medvl audit` layout
    js.write_text(json.dumps(audit_doc))
    assert read_exclusions(js) == {a}
    txt.write_text(f"{a}\nnot-an-md5\n")
    with pytest.raises(ValueError, match=r"ex\.txt: line 2: expected an MD5"):
        read_exclusions(txt)
    js.write_text(json.dumps([{"sha": a}]))
    with pytest.raises(ValueError, match=r"overlaps\.json: entry \[0\]"):
        read_exclusions(js)


def _synthetic(n_patients: int = 120, seed: int = 7) -> list[ImageRecord]:
    """Records over three datasets, patients with 1-6 images each (a few hundred records)."""
    rng = random.Random(seed)
    recs = []
    for p in range(n_patients):
        ds = ["chest", "brain", "skin"][p % 3]
        for k in range(rng.randint(1, 6)):
            sha = hashlib.sha256(f"{p}-{k}".encode()).hexdigest()
            recs.append(_rec(f"images/{sha[:2]}/{sha}.png", sha, f"pat{p:03d}/img{k}.png", f"key{p:03d}", ds))
    return recs


def test_splits_patient_level_deterministic_order_independent_and_near_fractions():
    recs = _synthetic()
    assert 300 <= len(recs) <= 500
    out = assign_splits(recs, FR, seed=3)
    assert [r.id for r in out] == [r.id for r in recs] and all(r.split is None for r in recs)  # copies
    where: dict[str, set[str]] = defaultdict(set)
    for r in out:
        where[r.patient_key].add(r.split)
    assert all(len(s) == 1 for s in where.values())
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    again = {r.id: r.split for r in assign_splits(shuffled, FR, seed=3)}
    assert again == {r.id: r.split for r in out}
    other = {r.id: r.split for r in assign_splits(recs, FR, seed=4)}
    assert other != again
    for ds in ("chest", "brain", "skin"):
        sub = [r for r in out if r.dataset == ds]
        for split, frac in FR.items():
            n = sum(r.split == split for r in sub)
            assert abs(n - frac * len(sub)) <= 6, (ds, split, n, len(sub))  # within one patient's images


def test_small_dataset_still_fills_every_split():
    recs = [_rec(f"images/{i}.png", f"{i:064d}", f"f{i}.png", f"k{i}", "tiny") for i in range(3)]
    assert sorted(r.split for r in assign_splits(recs, FR, seed=0)) == ["test", "train", "val"]
    two = assign_splits(recs[:2], FR, seed=0)
    assert sorted(r.split for r in two) == ["test", "train"]
    assert {r.split for r in assign_splits(recs, {"train": 1.0, "test": 0.0}, seed=0)} == {"train"}
    with pytest.raises(ValueError, match="split fractions"):
        assign_splits(recs, {"train": -1.0, "test": 2.0}, seed=0)


def test_source_split_respected_and_conflicts_resolved_to_the_most_protected():
    recs = [_rec(f"images/{i}.png", f"{i:064d}", f"f{i}.png", f"k{i}", "official",
                 extra={"source_split": ["training", "validation", "Test"][i % 3]}) for i in range(6)]
    out, rep = assign_splits_with_report(recs, FR, seed=0)
    assert [r.split for r in out] == ["train", "val", "test"] * 2 and rep.source_split_kept == 6
    # one patient per pair of records, in two official splits: test beats val beats train, never two splits
    pairs = [_rec(f"images/{i}.png", f"{i:064d}", f"f{i}.png", f"k{i // 2}", "official",
                  extra={"source_split": ["training", "validation", "Test"][i % 3]}) for i in range(12)]
    out, rep = assign_splits_with_report(pairs, FR, seed=0)
    assert [r.split for r in out] == ["val", "val", "test", "test", "test", "test", "val", "val"] + ["test"] * 4
    assert rep.leaked_patients == 0 and rep.patients_in_several_official_splits == 6
    assert rep.source_split_kept == 6 and rep.source_split_overridden == 6 and "most protected" in rep.warnings[0]
    regrouped = assign_splits(pairs, FR, seed=0, respect_source_split=False)
    assert all(regrouped[i].split == regrouped[i + 1].split for i in range(0, 12, 2))
    # a patient with one official record and one without: the other record follows
    mixed = [_rec("images/a.png", "a" * 64, "a.png", "same", "m", extra={"source_split": "test"}),
             _rec("images/b.png", "b" * 64, "b.png", "same", "m")]
    assert [r.split for r in assign_splits(mixed, FR, seed=0)] == ["test", "test"]


def test_official_test_split_of_a_later_dataset_wins_everywhere():
    """Two datasets share patients (one namespace); the second one's official test split must pull the
    patient's records of the first dataset into test too (before: the earlier placement won, or the patient
    was silently in two splits)."""
    a = [_rec(f"images/a{i}.png", f"a{i:063d}", f"a{i}.png", f"k{i}", "a_first", extra={"source_split": "train"})
         for i in range(10)]
    b = [_rec(f"images/b{i}.png", f"b{i:063d}", f"b{i}.png", f"k{i}", "b_second",
              extra={"source_split": "test" if i < 3 else "train"}) for i in range(10)]
    out, rep = assign_splits_with_report(a + b, FR, seed=0)
    where = defaultdict(set)
    for r in out:
        where[r.patient_key].add(r.split)
    assert all(len(s) == 1 for s in where.values()) and rep.leaked_patients == 0
    assert {k for k, s in where.items() if s == {"test"}} == {"k0", "k1", "k2"}
    assert rep.source_split_overridden == 3 and rep.warnings


def test_links_keep_patient_keys_together():
    recs = _synthetic(60)
    keys = sorted({r.patient_key for r in recs})
    links = [(keys[i], keys[i + 1]) for i in range(0, 20, 2)]
    out, rep = assign_splits_with_report(recs, FR, seed=5, links=links)
    split_of = {r.patient_key: r.split for r in out}
    assert all(split_of[a] == split_of[b] for a, b in links) and rep.straddling_links == 0
    assert rep.linked_groups == 10


def test_patient_shared_by_two_datasets_stays_in_one_split():
    recs = [_rec(f"images/{d}{i}.png", hashlib.sha256(f"{d}{i}".encode()).hexdigest(), f"{d}{i}.png", f"k{i}", d)
            for d in ("cls_view", "seg_view") for i in range(40)]
    out, rep = assign_splits_with_report(recs, FR, seed=11)
    first = {r.patient_key: r.split for r in out if r.dataset == "cls_view"}
    assert all(first[r.patient_key] == r.split for r in out if r.dataset == "seg_view")
    assert rep.cross_dataset_patients == 40 and sum(rep.patients.values()) == 40


def test_sample_splits_follow_records(real):
    _, recs = real
    kept, _, _ = dedup_records(recs)
    kept = assign_splits(kept, FR, seed=0)
    dropped_rec = recs[0]
    t = [Turn("user", "Describe the image."), Turn("assistant", "A fundus photograph.")]
    samples = [Sample(r.id + "#caption#en#0", [r.image], t, "caption", "en", r.id) for r in recs]
    samples.append(Sample("text#0", [], t, "text", "en"))
    out, dropped = assign_sample_splits(samples, kept, FR, seed=0)
    split_of = {r.id: r.split for r in kept}
    assert [s.split for s in out[:2]] == [split_of[recs[1].id], split_of[recs[2].id]]
    assert out[2].split in FR and out[2].split == assign_sample_splits(samples, kept, FR, seed=0)[0][2].split
    assert len(dropped) == 1 and dropped_rec.id in dropped[0].reason and dropped[0].stage == "split"


def test_curate_records_runs_dedup_exclusion_and_split(real):
    out, recs = real
    md5 = hashlib.md5((out / recs[1].image).read_bytes()).hexdigest()
    ex = out / "exclude.txt"
    ex.write_text(md5 + "\n")
    cfg = CurationConfig(splits={"train": 0.5, "test": 0.5}, exclude_file=str(ex))
    kept, rejects, report = curate_records(recs, cfg, out, seed=0)
    assert [r.source_file for r in kept] == ["a/retina.png"] and kept[0].split in ("train", "test")
    assert [r.stage for r in rejects] == ["dedup", "audit"]
    assert len(kept) + len(rejects) == len(recs) and sum(report.split.records.values()) == 1


def test_dedup_merges_the_copies_annotations(real):
    """The NIH case: an image both in the labels CSV (classification, with the view) and in the box list
    (detection): one record keeps the boxes, gains the labels and the view the other copy had (before: the
    box record was kept and the finding "effusion" and the view were lost)."""
    from medvl.core.records import Region

    _, recs = real
    f_rel, f_sha = recs[0].image, recs[0].sha256
    cls = _rec(f_rel, f_sha, "a/x.png", "p1", dataset="labels", labels=["cardiomegaly", "effusion"], view="PA",
               extra={"labels_exhaustive": True})
    det = _rec(f_rel, f_sha, "z/x.png", "p1", dataset="boxes", labels=["cardiomegaly"],
               regions=[Region("cardiomegaly", (1.0, 2.0, 30.0, 40.0))], extra={"labels_exhaustive": False})
    det.task = "det"
    kept, rejects, merges = dedup_records([cls, det])
    assert len(kept) == 1 and kept[0].dataset == "boxes" and kept[0].task == "det"
    assert kept[0].labels == ["cardiomegaly", "effusion"] and kept[0].view == "PA" and len(kept[0].regions) == 1
    assert kept[0].extra["merged_from"] == [cls.id] and kept[0].extra["labels_exhaustive"] is False
    assert det.labels == ["cardiomegaly"]  # inputs untouched
    assert "merged into it: labels effusion; view PA" in rejects[0].reason and kept[0].id in rejects[0].reason
    assert merges[0].added_labels == ["effusion"] and not merges[0].same_dataset


def test_groups_name_by_smallest_key_and_add_weights():
    from medvl.core.groups import Groups

    g = Groups()
    for k, n in (("k3", 2), ("k1", 1), ("k2", 4)):
        g.add(k, n)
    assert g.union("k3", "k2") == "k2" and g.size("k3") == 6
    assert g.union("k2", "k1") == "k1" and g.find("k3") == "k1" and g.size("k2") == 7
    assert g.union("k1", "k3") == "k1" and g.size("k1") == 7 and g.find("new") == "new" and g.size("new") == 0
