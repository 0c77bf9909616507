"""Exports (LLaVA JSON, messages JSONL, Parquet, mixture, dataset card) and the manifest, on real medical
images from installed packages written the way the pipeline writes them (content-addressed PNGs)."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvl.core.records import ImageRecord, Region, Reject, Sample, Turn
from medvl.export import EXPORTS, run_exports, write_manifest

ALL = ["llava", "messages", "parquet", "mixture", "card"]


def _write_png(out: Path, arr: np.ndarray) -> tuple[str, str, int, int]:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    data = buf.getvalue()
    h = hashlib.sha256(data).hexdigest()
    rel = f"images/{h[:2]}/{h}.png"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / rel).write_bytes(data)
    return rel, h, arr.shape[1], arr.shape[0]


def _real_images() -> dict[str, np.ndarray]:
    import pydicom
    from pydicom.data import get_testdata_file
    from skimage import data
    from skimage.transform import resize

    retina = (resize(data.retina(), (192, 192), anti_aliasing=True) * 255).round().astype(np.uint8)
    histo = data.immunohistochemistry()[:160, :200]  # 200 wide, 160 high: width != height
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    lo, hi = 40 - 200, 40 + 200  # soft-tissue window
    ct = (np.clip((hu - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
    return {"retina": retina, "histo": histo, "ct": ct}


def _record(out: Path, arr: np.ndarray, **kw) -> ImageRecord:
    rel, h, w, ht = _write_png(out, arr)
    base = dict(image=rel, sha256=h, width=w, height=ht, source_format="image_folder", task="cls", dimension="2d")
    base.update(kw)
    return ImageRecord(**base)


def build_corpus(out: Path) -> tuple[list[ImageRecord], list[Sample], list[Reject]]:
    """Three real images (fundus, histology, CT) and hand-written samples of every kind."""
    imgs = _real_images()
    fundus = _record(out, imgs["retina"], modality="fundus photography", dataset="retina_demo",
                     source_file="eyes/retina.png", patient_key="a1", labels=["normal"], department="Ophthalmology",
                     clinical_task="Disease Diagnosis", split="train", licence="CC BY 4.0")
    histo = _record(out, imgs["histo"], modality="pathology", dataset="ihc_demo", source_file="slides/ihc.png",
                    patient_key="b2", labels=["tumor"], department="Pathology", clinical_task="Disease Diagnosis",
                    split="train", licence="CC BY 4.0")
    ct = _record(out, imgs["ct"], modality="CT", dataset="ct_demo", source_format="dicom", task="seg",
                 source_file="ct/CT_small.dcm", patient_key="c3", department="Radiology",
                 clinical_task="Organ Recognition", split="test", licence="CC BY 4.0",
                 regions=[Region("liver", (40.0, 65.0, 95.0, 106.0), 1500, "mask")])
    box = "<box>[[0.31, 0.51, 0.74, 0.83]]</box>"
    samples = [
        Sample(fundus.id + "#caption#en#0", [fundus.image], [Turn("user", "Describe this fundus photograph."),
               Turn("assistant", "A colour fundus photograph showing the optic disc and retinal vessels.")],
               "caption", "en", fundus.id, split="train"),
        Sample(ct.id + "#perception_qa#en#0", [ct.image],
               [Turn("user", f"Focus on the area {box} of this CT image. What target is most likely depicted?"),
                Turn("assistant", "The area most likely depicts <ref>liver</ref>.")], "perception_qa", "en", ct.id,
               split="test"),
        Sample(histo.id + "#instruction_qa#zh#0", [histo.image], [Turn("user", "这张病理图像显示了什么？"),
               Turn("assistant", "图像显示免疫组化染色的组织切片，提示肿瘤。")], "instruction_qa", "zh", histo.id,
               split="train"),
        Sample(ct.id + "#conversation#en#0", [ct.image], [
            Turn("user", "<image>\nWhat modality is this?"), Turn("assistant", "It is an axial CT slice."),
            Turn("user", "Which organ is outlined? <image>"), Turn("assistant", "The liver.")],
            "conversation", "en", ct.id, split="test"),
        Sample("multi#fundus+histo#en#0", [fundus.image, histo.image], [Turn("user", "Compare the two images."),
               Turn("assistant", "The first is a fundus photograph, the second a stained tissue section.")],
               "conversation", "en", None, split="train", meta={"dataset": "retina_demo"}),
        Sample("text#medqa#en#0", [], [Turn("user", "What does HU stand for in CT?"),
               Turn("assistant", "Hounsfield units.")], "text", "en", None, split="train"),
    ]
    rejects = [Reject("ct_demo", "ct/bad.dcm", "ct/bad.dcm: no pixel data", "read"),
               Reject("ct_demo", "ct/bad2.dcm", "ct/bad2.dcm: no pixel data", "read"),
               Reject("retina_demo", "eyes/x.png", "x: duplicate of y", "dedup")]
    return [fundus, histo, ct], samples, rejects


def _recipe():
    """A recipe object built without source-format validation (the source modules are not needed here)."""
    from medvl.pipeline.recipe import Recipe, SourceConfig

    src = SourceConfig.model_construct(name="retina_demo", format="image_folder", path="/data/private/site",
                                       modality="fundus photography", licence="CC BY 4.0")
    return Recipe.model_construct(name="medvl-test", salt="s3cr3t-salt-value", sources=[src])


@pytest.fixture()
def corpus(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    recs, samples, rejects = build_corpus(out)
    return out, recs, samples, rejects


def _tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_registry_lists_every_export():
    assert set(ALL) <= set(EXPORTS.names())


def test_llava_json_layout_and_placeholders(corpus):
    out, recs, samples, _ = corpus
    entries = run_exports(["llava"], recs, samples, out)
    train = json.loads((out / "llava/train.json").read_text(encoding="utf-8"))
    test = json.loads((out / "llava/test.json").read_text(encoding="utf-8"))
    assert [e.path for e in entries] == ["llava/train.json", "llava/train.jsonl", "llava/test.json", "llava/test.jsonl"]
    assert {e.path: e.samples for e in entries}["llava/train.json"] == len(train) == 4
    assert len(test) == 2 and [i["id"] for i in train] == sorted(i["id"] for i in train)
    by_id = {i["id"]: i for i in train + test}
    for s in samples:
        item = by_id[s.id]
        assert list(item)[:2] == ["id", "image"] if s.images else list(item) == ["id", "conversations"]
        conv = item["conversations"]
        assert [c["from"] for c in conv] == ["human" if t.role == "user" else "gpt" for t in s.turns]
        n_img = len(s.images)
        assert conv[0]["value"].startswith("<image>\n" * n_img)
        assert conv[0]["value"].count("<image>") == n_img
        assert all("<image>" not in c["value"] for c in conv[1:])
        if n_img:
            paths = item["image"] if isinstance(item["image"], list) else [item["image"]]
            assert paths == s.images
            for p, w, h in zip(paths, np.atleast_1d(item["width"]), np.atleast_1d(item["height"])):
                assert not Path(p).is_absolute()
                with Image.open(out / p) as im:  # image_folder = output folder
                    assert im.size == (w, h)
    ct_conv = by_id[samples[3].id]["conversations"]
    assert ct_conv[0]["value"] == "<image>\nWhat modality is this?" and ct_conv[2]["value"] == "Which organ is outlined?"
    assert "<box>[[0.31, 0.51, 0.74, 0.83]]</box>" in by_id[samples[1].id]["conversations"][0]["value"]
    assert "这张病理图像显示了什么" in (out / "llava/train.json").read_text(encoding="utf-8")  # ensure_ascii=False
    jl = [json.loads(x) for x in (out / "llava/train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert jl == train


def test_messages_jsonl_layout(corpus):
    out, recs, samples, _ = corpus
    run_exports(["messages"], recs, samples, out)
    rows = [json.loads(x) for x in (out / "messages/train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4
    for r in rows:
        assert list(r) == ["id", "messages", "images"]
        assert {m["role"] for m in r["messages"]} <= {"user", "assistant"}
        assert sum(m["content"].count("<image>") for m in r["messages"]) == len(r["images"])
        assert all((out / p).is_file() and not p.startswith("/") for p in r["images"])
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["medvl_train"]["file_name"] == "messages/train.jsonl"
    assert info["medvl_test"]["columns"] == {"messages": "messages", "images": "images"}


def test_parquet_round_trips_through_datasets(corpus, tmp_path):
    datasets = pytest.importorskip("datasets")
    out, recs, samples, _ = corpus
    entries = run_exports(["parquet"], recs, samples, out, options={"parquet": {"rows_per_shard": 3}})
    train_files = sorted(str(out / e.path) for e in entries if e.split == "train")
    assert [Path(f).name for f in train_files] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    ds = datasets.load_dataset("parquet", data_files={"train": train_files}, split="train",
                               cache_dir=str(tmp_path / "hf_cache"))
    assert isinstance(ds.features["image"], datasets.Image)
    assert len(ds) == 4
    by_image = {r.image: r for r in recs}
    src = {s.id: s for s in samples}
    seen_image = 0
    for row in ds:
        s = src[row["id"]]
        assert row["kind"] == s.kind and row["lang"] == s.lang
        if not s.images:
            assert row["image"] is None
            continue
        rec = by_image[s.images[0]]
        img = row["image"]
        assert img.size == (rec.width, rec.height) == (row["width"], row["height"])
        with Image.open(out / rec.image) as orig:
            assert np.array_equal(np.asarray(img), np.asarray(orig))
        assert len(row["extra_images"]) == len(s.images) - 1
        assert row["conversations"][0]["value"].count("<image>") == len(s.images)
        seen_image += 1
    assert seen_image == 3
    zh = [r for r in ds if r["lang"] == "zh"][0]
    assert zh["modality"] == "pathology" and zh["department"] == "Pathology" and zh["dataset"] == "ihc_demo"


def test_mixture_shape(corpus):
    out, recs, samples, _ = corpus
    run_exports(["mixture"], recs, samples, out, options={"mixture": {"ratios": {"ct_demo": 0.5}}})
    mix = json.loads((out / "mixture.json").read_text())
    assert sorted(mix) == ["ihc_demo", "retina_demo", "text"]
    for name, e in mix.items():
        assert list(e) == ["image_dir", "annotations", "sample_ratio", "length"]
        lines = (out / e["annotations"]).read_text(encoding="utf-8").splitlines()
        assert e["length"] == len(lines) > 0 and e["sample_ratio"] == 1.0
        for line in lines:
            item = json.loads(line)
            if "image" in item:
                assert (out / e["image_dir"] / (item["image"] if isinstance(item["image"], str) else item["image"][0])).is_file()
    test_mix = json.loads((out / "mixture/test.json").read_text())
    assert test_mix == {"ct_demo": {"image_dir": ".", "annotations": "mixture/test/ct_demo.jsonl",
                                    "sample_ratio": 0.5, "length": 2}}


def test_card_counts_plots_and_no_secrets(corpus):
    out, recs, samples, rejects = corpus
    recipe = _recipe()
    entries = run_exports(["parquet", "card"], recs, samples, out, recipe=recipe, rejects=rejects)
    md = (out / "dataset_card.md").read_text(encoding="utf-8")
    page = (out / "dataset_card.html").read_text(encoding="utf-8")
    fm = md.split("---\n")[1]
    import yaml

    meta = yaml.safe_load(fm)
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en", "zh"]
    assert meta["size_categories"] == ["n<1K"] and "visual-question-answering" in meta["task_categories"]
    assert meta["configs"][0]["data_files"][0] == {"split": "train", "path": "parquet/train-*.parquet"}
    assert "| CT | 1 | 33.3% |" in md and "| pathology | 1 | 33.3% |" in md
    assert "| perception_qa | 1 | 16.7% |" in md and "| zh | 1 | 16.7% |" in md
    assert "| ct_demo | 0 | 1 | 1 |" in md  # records by dataset and split (train, test)
    assert "| read | no pixel data | 2 |" in md  # reasons grouped with the file names blanked
    assert "parquet/train-*.parquet" in md and "llava/train.json" not in md  # only formats that were written
    assert md.count("](card/") == 6 and len(list((out / "card").glob("*.png"))) == 6
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 6
    import base64

    with Image.open(io.BytesIO(base64.b64decode(imgs[0]))) as im:
        assert im.format == "PNG" and im.size[0] > 100
    for secret in ("s3cr3t-salt-value", "/data/private"):
        assert secret not in md and secret not in page
    assert {"dataset_card.md", "dataset_card.html"} <= {e.path for e in entries}


def test_card_reads_rejects_file_when_not_given(corpus):
    out, recs, samples, rejects = corpus
    (out / "rejects.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rejects), encoding="utf-8")
    run_exports(["card"], recs, samples, out)
    md = (out / "dataset_card.md").read_text(encoding="utf-8")
    assert "| rejected items | 3 |" in md and "| dedup | 1 | 33.3% |" in md


def test_all_exports_and_manifest_are_byte_identical(tmp_path):
    hashes = []
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        recs, samples, rejects = build_corpus(out)
        if run == "b":  # input order must not matter
            recs, samples = recs[::-1], samples[::-1]
        rows = sorted(r.to_json() + "\n" for r in recs)  # the pipeline's file, written in a fixed order
        (out / "records.jsonl").write_text("".join(rows), encoding="utf-8")
        entries = run_exports(ALL, recs, samples, out, rejects=rejects)
        write_manifest(out, entries, info={"name": "medvl-test"})
        hashes.append(_tree_hashes(out))
    assert hashes[0] == hashes[1]
    man = json.loads((tmp_path / "a/manifest.json").read_text())
    paths = [f["path"] for f in man["files"]]
    assert paths == sorted(paths) and "images/" in paths and "records.jsonl" in paths
    files = {f["path"]: f for f in man["files"]}
    assert files["images/"]["images"] == 3 and files["records.jsonl"]["images"] == 3
    assert files["llava/train.json"]["samples"] == 4 and files["llava/train.json"]["split"] == "train"
    for p, f in files.items():
        if not p.endswith("/"):
            assert f["sha256"] == hashlib.sha256((tmp_path / "a" / p).read_bytes()).hexdigest()
    on_disk = set(_tree_hashes(tmp_path / "a")) - {"manifest.json"}
    assert on_disk - {p for p in paths} == {p for p in on_disk if p.startswith("images/")}


def test_bad_samples_are_skipped_and_named(corpus):
    out, recs, samples, _ = corpus
    bad = [Sample("bad#missing-image", ["images/zz/nothere.png"], [Turn("user", "Q"), Turn("assistant", "A")],
                  "caption", "en", split="train"),
           Sample("bad#role", [recs[0].image], [Turn("doctor", "Q"), Turn("assistant", "A")], "caption", "en",
                  recs[0].id, split="train")]
    entries = run_exports(["llava"], recs, samples + bad, out)
    e = [x for x in entries if x.path == "llava/train.json"][0]
    assert e.samples == 4 and e.extra["skipped"] == 2
    msgs = " ".join(e.extra["skipped_examples"])
    assert "bad#missing-image" in msgs and "nothere.png" in msgs and "'doctor'" in msgs
    with pytest.raises(ValueError, match="export 'parquet': unknown option 'rows'"):
        run_exports(["parquet"], recs, samples, out, options={"parquet": {"rows": 1}})


def test_images_listing_is_streamed_in_sorted_string_order(tmp_path):
    """The manifest's images/ entry hashes the sorted listing without holding it: the folder walk gives the
    order sorted() gives the path strings, also where a file name sorts between a folder and its files."""
    import hashlib

    from medvl.export.manifest import standard_entries

    names = ["images/ab/cd/1.png", "images/ab.png", "images/ab-x.png", "images/a/z.png", "images/ab/c.png",
             "images/b/0/0.png", "images/ab/cd.png"]
    for i, n in enumerate(names):
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"x" * (i + 1))
    (e,) = [e for e in standard_entries(tmp_path) if e.path == "images/"]
    listing = "\n".join(sorted(names))
    assert e.images == len(names)
    assert e.extra == {"bytes": sum(range(1, len(names) + 1)),
                       "listing_sha256": hashlib.sha256(listing.encode()).hexdigest()}


def test_parquet_tables_built_from_buffers_equal_from_pylist(corpus):
    """rows_table (columns assembled from their buffers, no pandas import) equals pyarrow's own from_pylist on the
    export's real rows (a text-only sample with a null image, a two-image sample, a sample without a record) and
    on rows with every column null or empty, and the Parquet bytes written from both are the same."""
    import io
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    from medvl.export.base import MemoryCorpus
    from medvl.export.parquet import _row, arrow_schema, rows_table

    out, recs, samples, _ = corpus
    mem = MemoryCorpus(recs, samples, out)
    rows = [_row(v, out, True, {}) for split in mem.splits() for v in mem.views(split)]
    rows.append({"id": "x", "image": None, "extra_images": [], "conversations": [], "kind": None, "lang": None,
                 "modality": None, "department": None, "clinical_task": None, "dataset": None, "record_id": None,
                 "width": None, "height": None})
    rows.append({**rows[0], "extra_images": [{"bytes": None, "path": "images/a.png"}, {"bytes": b"", "path": ""}],
                 "conversations": [{"from": "human", "value": "é 中文"}, {"from": None, "value": None}]})
    assert any(r["image"] is None for r in rows) and any(len(r["extra_images"]) == 1 for r in rows)
    schema = arrow_schema()
    ours, theirs = rows_table(rows, schema), pa.Table.from_pylist(rows, schema=schema)
    assert ours.equals(theirs) and ours.to_pylist() == rows

    def parquet(table) -> bytes:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        return buf.getvalue()

    assert parquet(ours) == parquet(theirs)
    with pytest.raises(TypeError, match="string column holds int"):
        rows_table([{**rows[0], "kind": 7}], schema)
    code = ("import sys; from medvl.export.parquet import rows_table, arrow_schema; "
            "rows_table([{'id': 'a', 'image': {'bytes': b'x', 'path': 'p'}, 'extra_images': [], 'conversations': [],"
            " 'kind': 'k', 'lang': 'en', 'modality': None, 'department': None, 'clinical_task': None, 'dataset': None,"
            " 'record_id': None, 'width': 1, 'height': 2}], arrow_schema()); print('pandas' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.parametrize("name", ["webdataset", "parquet"])
def test_per_split_exports_equal_the_whole_export(corpus, tmp_path, name):
    """A build writes each split of the image-embedding exports as its own task: the files and manifest entries,
    split by split, equal one call for every split; a split's task replaces only that split's files (a split
    named like another plus "-1" included), and leaves an earlier run's files of that split no trace."""
    from medvl.export.base import MemoryCorpus
    from medvl.export.stage import PER_SPLIT

    assert name in PER_SPLIT
    out, recs, samples, _ = corpus
    # a third split whose name extends another's: "train-1" files must survive the "train" task's clearing
    samples = samples + [Sample(s.id + "#t1", s.images, s.turns, s.kind, s.lang, s.record_id, split="train-1",
                                meta=s.meta) for s in samples if s.split == "train"]
    mem = MemoryCorpus(recs, samples, out)
    assert mem.splits() == ["train", "test", "train-1"]
    whole = EXPORTS.get(name)(mem, out, None, options={}, entries=[])
    whole_files = _tree_hashes(out / name)
    stale = out / name / ("train-000007.tar" if name == "webdataset" else "train-00003-of-00009.parquet.tmp")
    stale.write_bytes(b"left by a killed run")
    parts = []
    for split in ["train-1", "test", "train"]:  # any order: each task touches its own split only
        parts.append(EXPORTS.get(name)(mem, out, None, options={}, entries=[], split=split))
        assert all(e.split == split for e in parts[-1])
    assert _tree_hashes(out / name) == whole_files
    by_split = {p[0].split: p for p in parts}
    assert [e.to_dict() for s in mem.splits() for e in by_split[s]] == [e.to_dict() for e in whole]


def test_parquet_row_groups_end_at_row_group_bytes(corpus):
    """A row group ends when its rows reach ``row_group_rows`` or the images it embeds reach ``row_group_bytes``
    (at least one row each); the rows read back are the same however they are grouped; 0 is refused."""
    import pyarrow.parquet as pq

    out, recs, samples, _ = corpus
    sizes = {r.image: (out / r.image).stat().st_size for r in recs}

    def groups(**opts) -> tuple[list[list[int]], list[dict]]:
        (entry,) = [e for e in run_exports(["parquet"], recs, samples, out, options={"parquet": opts})
                    if e.split == "train"]
        f = pq.ParquetFile(out / entry.path)
        per_group = [f.read_row_group(i).to_pylist() for i in range(f.num_row_groups)]
        return [[sum(sizes[p] for p in [r["image"]["path"] if r["image"] else None, *[x["path"] for x in
                 r["extra_images"]]] if p) for r in g] for g in per_group], [r for g in per_group for r in g]

    whole, rows = groups()
    assert len(whole) == 1 and len(rows) == sum(1 for s in samples if s.split == "train") >= 3
    limit = max(sizes.values()) + 1  # more than any one image: a group ends on its second image
    cut, cut_rows = groups(row_group_bytes=limit)
    assert cut_rows == rows and len(cut) > 1
    for g in cut:
        assert sum(g[:-1]) < limit  # the group went on while below the limit ...
    for g in cut[:-1]:
        assert sum(g) >= limit  # ... and ended once it reached it
    by_rows, _ = groups(row_group_rows=1)
    assert [len(g) for g in by_rows] == [1] * len(rows)
    with pytest.raises(ValueError, match="row_group_bytes"):
        groups(row_group_bytes=0)


def test_parquet_entries_carry_the_footer_sizes_the_card_reports(corpus):
    """Each Parquet entry records its shard's data size before compression (``num_bytes``, the footer's row-group
    sizes, taken from the writer), and the card's dataset_info reports the same sizes as reading the footers."""
    import pyarrow.parquet as pq

    from medvl.export.card_hub import hub_metadata

    out, recs, samples, _ = corpus
    entries = [e for e in run_exports(["parquet"], recs, samples, out, options={"parquet": {"rows_per_shard": 2}})
               if e.format == "parquet"]
    assert len(entries) > 2
    for e in entries:
        meta = pq.read_metadata(out / e.path)
        assert e.extra["num_bytes"] == sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) > 0
    from_entries = hub_metadata(entries, out)
    for e in entries:
        del e.extra["num_bytes"]
    assert hub_metadata(entries, out) == from_entries  # read from the footers instead
