"""csv_labels source on an NIH ChestX-ray14 style ``Data_Entry_2017.csv`` (exact header) and a generic TSV,
with real sample images standing in for the radiographs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from dipy.data import get_fnames
from PIL import Image
from skimage import data

from medvl.core.records import Reject
from medvl.pipeline.recipe import SourceConfig
from medvl.sources import SOURCES, Item

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")


def run(root: Path, **cfg) -> tuple[list[Item], list[Reject]]:
    config = SourceConfig(name="nih", format="csv_labels", path=str(root), **cfg)
    src = SOURCES.get("csv_labels")(config)
    units, rejects, items = [], [], []
    for u in src.units():
        (rejects if isinstance(u, Reject) else units).append(u)
    worker = SOURCES.get("csv_labels")(pickle.loads(pickle.dumps(config)))
    for u in units:
        for out in worker.load(pickle.loads(pickle.dumps(u))):
            (items if isinstance(out, Item) else rejects).append(out)
    return items, rejects


@pytest.fixture(scope="module")
def gray_images() -> list[np.ndarray]:
    t1 = np.load(get_fnames(name="t1_coronal_slice"))
    t1_u8 = np.rint(t1 * 255).astype(np.uint8)
    micro = data.microaneurysms()
    return [t1_u8, t1_u8[::-1].copy(), micro, t1_u8[:, ::-1].copy(), micro.T.copy(), t1_u8.T.copy()]


@pytest.fixture()
def nih_root(tmp_path, gray_images) -> Path:
    root = tmp_path / "chestxray14"
    names = ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png", "00000003_001.png",
             "00000005_000.png"]
    for i, (name, img) in enumerate(zip(names, gray_images)):
        folder = root / f"images_00{1 + i % 2}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / name)
    cut = root / "images_001" / "images" / "00000003_001.png"
    cut.write_bytes(cut.read_bytes()[:300])
    rows = [
        "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143",
        "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143",
        "00000002_000.png,No Finding,0,2,81,M,AP,2500,2048,0.171,0.171",
        "00000003_000.png,Hernia|Infiltration|Hernia,0,3,74,F,PA,2500,2048,0.168,0.168",
        "00000003_001.png,Hernia,1,3,74,F,PA,2500,2048,0.168,0.168",
        "../../etc/passwd,Hernia,2,3,74,F,PA,2500,2048,0.168,0.168",
        "00000099_000.png,Effusion,0,99,40,F,PA,2500,2048,0.168,0.168",
        "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143",
        "00000004_000.png,Mass",
        "00000005_000.png,No Finding|Mass,0,5,33,F,AP,2500,2048,0.171,0.171",
    ]
    (root / "Data_Entry_2017.csv").write_text(NIH_HEADER + "\n" + "\n".join(rows) + "\n")
    return root


def test_nih_data_entry(nih_root):
    items, rejects = run(nih_root, options={"search_subdirs": True,
                                            "extra_columns": ["Patient Age", "Follow-up #"]})
    got = {i.source_file: i for i in items}
    assert sorted(got) == ["images_001/images/00000001_000.png", "images_001/images/00000002_000.png",
                           "images_002/images/00000001_001.png", "images_002/images/00000003_000.png"]
    assert got["images_002/images/00000001_001.png"].labels == ["Cardiomegaly", "Emphysema"]
    assert got["images_002/images/00000003_000.png"].labels == ["Hernia", "Infiltration"]
    assert got["images_001/images/00000002_000.png"].labels == ["No Finding"]
    one = got["images_001/images/00000001_000.png"]
    assert one.patient_raw == "1" and one.view == "PA" and one.labels == ["Cardiomegaly"]
    assert one.extra == {"Patient Age": "58", "Follow-up #": "0"}
    assert got["images_001/images/00000002_000.png"].view == "AP"
    assert one.array.dtype == np.uint8 and one.array.shape == (256, 256)

    reasons = [r.reason for r in rejects]
    assert len(items) + len(rejects) == 10  # one outcome per data row
    assert any("'../../etc/passwd'" in r and "path escapes the dataset folder" in r for r in reasons)
    assert any("00000099_000.png" in r and "file not found" in r for r in reasons)
    assert any("row 9" in r and "already listed in row 2" in r for r in reasons)
    assert any("row 10" in r and "expected at least" in r for r in reasons)
    assert any("row 11" in r and "'No Finding' and Mass" in r for r in reasons)
    assert any("00000003_001.png" in r and "truncated" in r for r in reasons)
    assert all("Data_Entry_2017.csv" in r or ".png" in r for r in reasons)


def test_label_map_and_no_finding_filter(nih_root):
    items, rejects = run(nih_root, label_map={"No Finding": "normal", "Emphysema": "pulmonary emphysema"},
                         options={"search_subdirs": True, "keep_no_finding": False})
    labels = sorted(tuple(i.labels) for i in items)
    assert ("Cardiomegaly", "pulmonary emphysema") in labels
    assert ("normal",) not in labels
    assert any(r.stage == "filter" and "00000002_000.png" in r.reason for r in rejects)


def test_without_index_files_are_not_found(nih_root):
    items, rejects = run(nih_root, options={"images_dir": "images_001/images"})
    assert sorted(i.source_file for i in items) == ["images_001/images/00000001_000.png",
                                                   "images_001/images/00000002_000.png"]
    assert any("00000001_001.png" in r.reason and "file not found" in r.reason for r in rejects)


def test_generic_single_label_tsv(tmp_path):
    root = tmp_path / "derm"
    (root / "img").mkdir(parents=True)
    ihc = data.immunohistochemistry()
    for i in range(3):
        Image.fromarray(ihc[i * 100:i * 100 + 96, :96]).save(root / "img" / f"t{i}.jpg", quality=92)
    (root / "labels.tsv").write_text("file\tdiagnosis\tsite\nt0.jpg\tDAB|positive\tcolon\nt1.jpg\t\tcolon\n"
                                     "t2.jpg\tnegative\tcolon\n")
    items, rejects = run(root, options={"csv": "labels.tsv", "image_column": "file", "label_column": "diagnosis",
                                        "separator": None, "images_dir": "img", "extra_columns": ["site"]})
    assert [(i.source_file, i.labels, i.patient_raw) for i in items] == [
        ("img/t0.jpg", ["DAB|positive"], None), ("img/t2.jpg", ["negative"], None)]
    assert items[0].array.shape == (96, 96, 3) and items[0].extra == {"site": "colon"}
    assert len(rejects) == 1 and "img/t1.jpg" in rejects[0].reason and "empty label" in rejects[0].reason


def test_config_errors(tmp_path, nih_root):
    with pytest.raises(ValueError, match="identifier"):
        SourceConfig(name="x", format="csv_labels", path=str(nih_root), options={"extra_columns": ["Patient ID"]})
    items, rejects = run(nih_root, options={"label_column": "Findings"})
    assert not items and len(rejects) == 1
    assert "Data_Entry_2017.csv: no column 'Findings'" in rejects[0].reason
    items, rejects = run(nih_root, options={"patient_column": "PatientNo"})
    assert not items and "no column 'PatientNo'" in rejects[0].reason
    items, rejects = run(tmp_path / "nowhere")
    assert not items and "table file not found" in rejects[0].reason


@pytest.mark.parametrize("col", ["PatientName", "PatientBirthDate", "StudyDate", "AccessionNumber", "Surname",
                                 "Referring Doctor", "Hospital"])
def test_identifier_like_extra_columns_are_refused(col):
    from medvl.sources.csv_labels import CsvLabelsOptions

    with pytest.raises(ValueError, match="looks like an identifier"):
        CsvLabelsOptions(extra_columns=[col])


@pytest.fixture()
def mixed_table(tmp_path, gray_images) -> Path:
    """A single-label table whose rows come from several modalities, named as datasets write them: a DICOM
    code, a synonym, a Chinese name, an unknown value and an empty cell."""
    root = tmp_path / "mixed"
    (root / "img").mkdir(parents=True)
    for i, img in enumerate(gray_images):
        Image.fromarray(img).save(root / "img" / f"case{i}.png")
    rows = ["case0.png,tumor,CR", "case1.png,tumor,MRI", "case2.png,normal,Fundus Photography",
            "case3.png,normal,磁共振", "case4.png,tumor,hologram", "case5.png,normal,"]
    (root / "labels.csv").write_text("file,finding,Modality\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_modality_column_gives_each_row_its_modality(mixed_table, tmp_path):
    """Issue 6 item 20: modality per row, normalized by the taxonomy; an unknown or empty value rejects the row
    with a reason naming the row, the column and the value."""
    opts = {"csv": "labels.csv", "image_column": "file", "label_column": "finding", "separator": None,
            "images_dir": "img", "modality_column": "Modality"}
    items, rejects = run(mixed_table, options=opts)
    assert [(i.source_file, i.modality) for i in items] == [
        ("img/case0.png", "X-ray"), ("img/case1.png", "MR"), ("img/case2.png", "fundus"), ("img/case3.png", "MR")]
    reasons = sorted(r.reason for r in rejects)
    assert reasons[0].startswith("labels.csv row 6: img/case4.png: modality 'hologram' in column 'Modality' is not "
                                 "a known modality; allowed: CT, MR")
    assert reasons[1] == "labels.csv row 7: img/case5.png: empty modality in column 'Modality'"
    assert all(r.stage == "validate" for r in rejects)

    # through the pipeline's per-unit stage: the record carries the row's modality
    from medvl.pipeline.process import Job, get_source, run_job
    from medvl.pipeline.recipe import ImageConfig
    from medvl.sources import Unit

    cfg = SourceConfig(name="mixed", format="csv_labels", path=str(mixed_table), options=opts)
    mods = []
    for u in get_source(cfg).units():
        if isinstance(u, Unit):
            res = run_job(Job(source=cfg.model_dump(mode="json"), unit=u, out_dir=str(tmp_path / "out"),
                              image=ImageConfig().model_dump(mode="json"), salt="s"))
            mods += [r.modality for r in res.records]
    assert mods == ["X-ray", "MR", "fundus", "MR"]


def test_modality_column_errors(mixed_table):
    from medvl.pipeline.recipe import RecipeError, parse_recipe

    opts = {"csv": "labels.csv", "image_column": "file", "label_column": "finding", "images_dir": "img"}
    items, rejects = run(mixed_table, options={**opts, "modality_column": "Imaging"})
    assert not items
    assert "labels.csv: no column 'Imaging'; columns are 'file', 'finding', 'Modality'" in rejects[0].reason
    with pytest.raises(RecipeError, match=r"`modality` \('CT'\) and options\.modality_column are both set"):
        parse_recipe({"salt": "s", "sources": [{"name": "m", "format": "csv_labels", "path": str(mixed_table),
                                                "modality": "CT", "options": {**opts, "modality_column": "Modality"}}]})


def test_table_is_streamed_like_the_whole_text_is_split(tmp_path):
    """read_table streams the file (block by block) and gives exactly the rows the whole-text split gave:
    BOM, CRLF, a lone CR, a quoted cell spanning lines and a blank row, with a block boundary anywhere."""
    import csv

    from medvl.sources.csv_labels import _lines, read_table

    text = "\ufeffImage Index,Finding Labels\r\na.png,\"Mass\r\nNodule\"\r\n\r\nb.png,Effusion\rc.png,Hernia\n"
    p = tmp_path / "t.csv"
    p.write_bytes(text.encode("utf-8"))
    want = p.read_text(encoding="utf-8-sig").splitlines()
    for block in (1, 2, 3, 5, 1 << 20):
        assert list(_lines(p, block)) == want, block
    header, rows = read_table(p)
    expect = [(i + 1, r) for i, r in enumerate(csv.reader(want)) if any(c.strip() for c in r)][1:]
    assert header == ["Image Index", "Finding Labels"] and list(rows) == expect
    assert [r[0] for _, r in expect] == ["a.png", "b.png", "c.png"]


def test_bad_table_is_refused_before_any_row(tmp_path):
    """Encoding is checked over the whole file first: a bad byte near the end rejects the table, no unit."""
    root = tmp_path / "nih"
    root.mkdir()
    rows = "".join(f"{i:08d}_000.png,Mass,0,{i},50,M,PA,1,1,\n" for i in range(2000))
    (root / "Data_Entry_2017.csv").write_bytes((NIH_HEADER + "\n" + rows).encode() + b"\xff\xfe,Mass\n")
    config = SourceConfig(name="nih", format="csv_labels", path=str(root), modality="X-ray")
    out = list(SOURCES.get("csv_labels")(config).units())
    assert len(out) == 1 and isinstance(out[0], Reject) and "not UTF-8 text" in out[0].reason


def test_search_subdirs_index_finds_nested_and_reports_ambiguous(tmp_path, gray_images):
    root = tmp_path / "nih"
    for folder, name in [("images_001/images", "00000001_000.png"), ("images_002/images", "00000002_000.png"),
                         ("images_001/images", "00000003_000.png"), ("images_002/images", "00000003_000.png")]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(gray_images[0]).save(root / folder / name)
    body = "".join(f"0000000{i}_000.png,Mass,0,{i},50,M,PA,1,1,\n" for i in (1, 2, 3))
    (root / "Data_Entry_2017.csv").write_text(NIH_HEADER + "\n" + body)
    items, rejects = run(root, modality="X-ray", options={"search_subdirs": True})
    assert sorted(i.source_file for i in items) == ["images_001/images/00000001_000.png",
                                                    "images_002/images/00000002_000.png"]
    (amb,) = rejects
    assert "ambiguous, found in 2 places (images_001/images/00000003_000.png, images_002/images/00000003_000.png)" \
        in amb.reason
