"""Contamination audit: a fake build output of real medical images against VQA-RAD (MEVF layout, file
paths) and SLAKE (hub layout, image bytes from a zip), written by the benchmark fixture writers."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from eval_fixtures import write_slake, write_vqa_rad
from medvl.core.records import ImageRecord
from medvl.curate.audit import fingerprint, load_benchmark, load_train, run_audit, write_audit
from medvl.curate.audit_text import match_questions, normalize_question
from medvl.curate.dedup import exclude_by_md5, read_exclusions
from medvl.curate.phash import PHASH_THRESHOLD, canonical_rgb, hamming, near_pairs, perceptual_hashes

TEMPLATE_Q = "<image>\nWhat is the modality of this image?"


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_train_build(root: Path, rad: Path) -> dict[str, str]:
    """records.jsonl + images + samples.jsonl; returns case name -> image path relative to ``root``."""
    from skimage import data as skd

    src = rad / "images"
    cases: dict[str, tuple[bytes, str, str]] = {  # name -> (bytes, extension, split)
        "identical": ((src / "synpic54610.jpg").read_bytes(), "jpg", "train"),
        "jpeg95": (_jpeg(Image.open(src / "synpic29265.jpg"), 95), "jpg", "train"),
        "resized": (_png(np.asarray(Image.open(src / "synpic100176.jpg").resize((150, 150), Image.Resampling.BICUBIC))),
                    "png", "train"),
        "png": (_png(np.asarray(Image.open(src / "synpic31232.jpg"))), "png", "train"),
        "retina": (_png(np.asarray(Image.fromarray(skd.retina()).resize((200, 200)))), "png", "train"),
        "ihc": (_png(np.ascontiguousarray(skd.immunohistochemistry()[100:260, 50:210])), "png", "train"),
        "micro": (_png(skd.microaneurysms()), "png", "train"),
        "test_copy": ((src / "synpic42202.jpg").read_bytes(), "jpg", "test"),
        "corrupt": (b"\x89PNG\r\n\x1a\nthis is not a png", "png", "train"),
    }
    rels: dict[str, str] = {}
    records, samples = [], []
    for name, (data, ext, split) in cases.items():
        sha = hashlib.sha256(data).hexdigest()
        rel = f"images/{sha[:2]}/{sha}.{ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        rels[name] = rel
        rec = ImageRecord(image=rel, sha256=sha, width=1, height=1, modality="CT", dataset="mix", source_format="image_folder",
                          task="cls", dimension="2d", source_file=f"{name}.{ext}", patient_key=sha[:16],
                          labels=[name], split=split)
        row = json.loads(rec.to_json())
        if name != "png":  # an older build's record without the source fingerprints
            row["source_md5"] = hashlib.md5(f"source bytes of {name}".encode()).hexdigest()
            row["pixel_md5"] = hashlib.md5(f"source pixels of {name}".encode()).hexdigest()
        records.append(json.dumps(row, sort_keys=True))
        if name not in ("corrupt", "test_copy"):
            samples.append({"id": f"{name}#q0", "images": [rel], "turns": [{"role": "user", "text": TEMPLATE_Q},
                            {"role": "assistant", "text": "CT"}], "kind": "perception_qa", "lang": "en",
                            "record_id": json.loads(rec.to_json())["id"], "split": split})
    extra = {"retina": "<image>\nAre regions of the brain infarcted?",
             "ihc": "Look at the picture. Which is bigger in this image, left lung or right lung? Answer in one word.",
             "micro": "<image>\nDescribe the staining pattern of this slide."}
    for name, q in extra.items():
        samples.append({"id": f"{name}#q1", "images": [rels[name]], "turns": [{"role": "user", "text": q}],
                        "kind": "instruction_qa", "lang": "en", "split": "train"})
    samples.append({"id": "text#0", "images": [], "turns": [{"role": "user", "text": "Is the heart enlarged?"}],
                    "kind": "text", "lang": "en", "split": "train"})
    (root / "records.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    (root / "samples.jsonl").write_text("\n".join(json.dumps(s) for s in samples) + "\n", encoding="utf-8")
    return rels


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("audit")
    rad = write_vqa_rad(root / "rad")
    slake = write_slake(root / "slake", layout="hub")
    build = root / "build"
    rels = make_train_build(build, rad)
    benches = [load_benchmark("vqa-rad", rad), load_benchmark("slake", slake)]
    result = run_audit(load_train(build), benches)
    out = root / "out"
    write_audit(result, out)
    return {"root": root, "rad": rad, "slake": slake, "build": build, "rels": rels, "benches": benches,
            "result": result, "out": out}


def _items_using(env: dict, bench: str, image_name: str) -> set[str]:
    b = next(b for b in env["benches"] if b.name == bench)
    return {str(it.id) for it in b.items for im in it.images if isinstance(im, str) and Path(im).name == image_name}


def _items_with_bytes_of(env: dict, bench: str, data: bytes) -> set[str]:
    b = next(b for b in env["benches"] if b.name == bench)
    return {str(it.id) for it in b.items for im in it.images if isinstance(im, bytes) and im == data}


def _hits(env: dict, case: str, match: str | None = None) -> list[dict]:
    return [e for e in env["result"].overlaps if e["train_image"] == env["rels"][case] and (match is None or e["match"] == match)]


def test_identical_file_is_an_md5_hit(env: dict) -> None:
    hits = _hits(env, "identical", "md5")
    assert {e["benchmark_item"] for e in hits} == _items_using(env, "vqa-rad", "synpic54610.jpg") != set()
    assert all(e["md5_of"] == "file" and e["distance"] == 0 and e["benchmark"] == "vqa-rad" for e in hits)
    assert hits[0]["md5"] == hashlib.md5((env["build"] / env["rels"]["identical"]).read_bytes()).hexdigest()
    assert hits[0]["train_record"].endswith("identical.jpg") and hits[0]["bench_image"] == "images/synpic54610.jpg"


def test_reencoded_and_resized_copies_are_perceptual_hits(env: dict) -> None:
    for case, name in (("jpeg95", "synpic29265.jpg"), ("resized", "synpic100176.jpg")):
        assert not _hits(env, case, "md5"), f"{case}: the bytes/pixels differ, md5 must miss"
        hits = _hits(env, case, "perceptual")
        assert _items_using(env, "vqa-rad", name) <= {e["benchmark_item"] for e in hits if e["benchmark"] == "vqa-rad"}
        assert all(0 <= e["distance"] <= PHASH_THRESHOLD and "phash" in e["matched_hashes"] for e in hits)
    # SLAKE's zip holds the same chest X-ray as bytes: the JPEG-95 copy is found there too
    slake_xray = _items_with_bytes_of(env, "slake", (env["rad"] / "images" / "synpic29265.jpg").read_bytes())
    assert slake_xray and slake_xray <= {e["benchmark_item"] for e in _hits(env, "jpeg95") if e["benchmark"] == "slake"}


def test_lossless_reencode_is_a_pixel_md5_hit(env: dict) -> None:
    hits = _hits(env, "png", "md5")
    assert hits and all(e["md5_of"] == "pixels" for e in hits)
    assert _items_using(env, "vqa-rad", "synpic31232.jpg") <= {e["benchmark_item"] for e in hits}


def test_unrelated_images_do_not_match(env: dict) -> None:
    for case in ("retina", "ihc", "micro"):
        assert not [e for e in _hits(env, case) if e["match"] != "question"], case
    assert not _hits(env, "test_copy"), "test-split records are not audited by default"


def test_question_hits_templates_and_text_only(env: dict) -> None:
    res = env["result"]
    exact = _hits(env, "retina", "question")
    assert [(e["benchmark"], e["benchmark_item"], e["text_overlap"]) for e in exact] == [("vqa-rad", "1", 1.0)]
    ngram = _hits(env, "ihc", "question")
    assert [(e["benchmark"], e["bench_question"]) for e in ngram] == [
        ("slake", "Which is bigger in this image, left lung or right lung?")]
    assert not _hits(env, "micro", "question")
    assert res.summary["template_questions_skipped"] == 1  # "what is the modality of this image" on 7 images
    assert [(e["benchmark_item"], e["match"], e["md5"]) for e in res.text_overlaps] == [("5", "question", None)]


def test_overlaps_file_feeds_build_exclusion(env: dict) -> None:
    doc = json.loads((env["out"] / "overlaps.json").read_text())
    assert set(doc) == {"overlaps", "text_overlaps", "summary", "errors"}
    for e in doc["overlaps"]:
        assert {"md5", "train_image", "train_record", "benchmark", "benchmark_item", "match", "distance"} <= set(e)
    md5s = read_exclusions(env["out"] / "overlaps.json")
    flagged = {"identical", "jpeg95", "resized", "png", "retina", "ihc"}
    expected = {hashlib.md5((env["build"] / env["rels"][c]).read_bytes()).hexdigest() for c in flagged}
    assert expected == {e["md5"] for e in doc["overlaps"]}
    # the reader takes the image MD5s, and (once it knows them) the other fingerprints the entries carry
    listed = {e[k] for e in doc["overlaps"] for k in ("md5", "source_md5", "pixel_md5", "bench_md5", "bench_pixel_md5")}
    assert expected <= md5s <= listed
    fields = set(ImageRecord.__dataclass_fields__)
    recs = [ImageRecord.from_dict({k: v for k, v in json.loads(x).items() if k in fields})
            for x in (env["build"] / "records.jsonl").read_text().splitlines()]
    kept, rejected = exclude_by_md5(recs, md5s, env["build"])
    assert len(rejected) == len(flagged) and len(kept) == len(recs) - len(flagged)
    assert [err for err in doc["errors"] if "cannot decode" in err] == [
        next(err for err in doc["errors"] if err.startswith(f"training image {env['rels']['corrupt']}: cannot decode"))]
    md = (env["out"] / "overlaps.md").read_text()
    assert "| vqa-rad |" in md and "exclude_file" in md


def test_overlaps_carry_source_and_pixel_md5s(env: dict) -> None:
    """Each image overlap names the training record's source_md5 / pixel_md5 (None for records that lack
    them) and the benchmark image's file and pixel MD5s, so exclusions survive a rebuild with other settings."""
    doc = json.loads((env["out"] / "overlaps.json").read_text())
    rows = {json.loads(x)["id"]: json.loads(x) for x in (env["build"] / "records.jsonl").read_text().splitlines()}
    for e in doc["overlaps"]:
        rec = rows[e["train_record"]]
        assert (e["source_md5"], e["pixel_md5"]) == (rec.get("source_md5"), rec.get("pixel_md5"))
        assert e["match"] == "question" or (e["bench_md5"] and e["bench_pixel_md5"])
    jpeg_hits = _hits(env, "jpeg95")
    assert jpeg_hits and jpeg_hits[0]["source_md5"] == hashlib.md5(b"source bytes of jpeg95").hexdigest()
    png_hits = _hits(env, "png")
    assert png_hits and all(e["source_md5"] is None and e["pixel_md5"] is None for e in png_hits)
    rad = [e for e in png_hits if e["benchmark"] == "vqa-rad"][0]
    bench = Image.open(env["rad"] / rad["bench_image"])
    assert bench.mode in ("L", "RGB")  # 8-bit: its canonical pixels are its RGB pixels
    rgb = np.asarray(bench.convert("RGB"))  # the definition: MD5 over "HxWx3:" + the RGB bytes
    want = hashlib.md5(f"{rgb.shape[0]}x{rgb.shape[1]}x3:".encode() + rgb.tobytes()).hexdigest()
    assert rad["bench_pixel_md5"] == want
    assert rad["bench_md5"] == hashlib.md5((env["rad"] / rad["bench_image"]).read_bytes()).hexdigest()


def test_all_splits_llava_and_folder_inputs(env: dict, tmp_path: Path) -> None:
    res = run_audit(load_train(env["build"], all_splits=True), env["benches"][:1])
    items = {e["benchmark_item"] for e in res.overlaps if e["train_image"] == env["rels"]["test_copy"]}
    assert items == _items_using(env, "vqa-rad", "synpic42202.jpg")
    llava = [{"id": "a", "image": env["rels"]["identical"], "conversations": [
        {"from": "human", "value": "<image>\nIs this a CT or an MRI?"}, {"from": "gpt", "value": "mri"}]}]
    (env["build"] / "train_llava.json").write_text(json.dumps(llava))
    res = run_audit(load_train(env["build"] / "train_llava.json"), env["benches"][:1])
    assert {(e["match"], e["benchmark_item"]) for e in res.overlaps} == {("md5", "1"), ("question", "7")}
    folder = tmp_path / "imgs"
    for case in ("resized", "retina"):
        (folder / "sub").mkdir(parents=True, exist_ok=True)
        shutil.copy(env["build"] / env["rels"][case], folder / "sub" / Path(env["rels"][case]).name)
    res = run_audit(load_train(folder), env["benches"][:1])
    assert {e["match"] for e in res.overlaps} == {"perceptual"} and res.summary["train"]["source"] == "folder"
    assert all(e["train_image"].startswith("sub/") for e in res.overlaps)


def test_cli_writes_deterministic_files(env: dict, tmp_path: Path) -> None:
    from medvl.cli.main import cli

    args = ["audit", str(env["build"]), "--bench", f"vqa-rad:{env['rad']}", "--bench", f"slake:{env['slake']}"]
    r1 = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a")])
    assert r1.exit_code == 0, r1.output
    assert "overlaps by benchmark" in r1.output and "exclude_file" in r1.output
    r2 = CliRunner().invoke(cli, [*args, "--option", "vqa-rad:layout=mevf", "--option", "split=test",
                                  "-o", str(tmp_path / "b")])
    assert r2.exit_code == 0
    assert (tmp_path / "a" / "overlaps.json").read_bytes() == (tmp_path / "b" / "overlaps.json").read_bytes()
    assert (tmp_path / "a" / "overlaps.json").read_bytes() == (env["out"] / "overlaps.json").read_bytes()
    bad = CliRunner().invoke(cli, ["audit", str(env["build"]), "--bench", "no-such-bench:/x", "-o", str(tmp_path / "c")])
    assert bad.exit_code != 0 and "no-such-bench" in bad.output
    bad = CliRunner().invoke(cli, ["audit", str(env["build"]), "--bench", "vqa-rad", "-o", str(tmp_path / "c")])
    assert bad.exit_code != 0 and "NAME:DATA_DIR" in bad.output


def test_phash_robustness_and_search() -> None:
    from skimage import data as skd

    retina = np.asarray(Image.fromarray(skd.retina()).resize((256, 256)))
    jpeg = canonical_rgb(Image.open(io.BytesIO(_jpeg(Image.fromarray(retina), 95))))
    small = np.asarray(Image.fromarray(retina).resize((180, 180), Image.Resampling.BILINEAR))
    ihc = np.asarray(Image.fromarray(skd.immunohistochemistry()).resize((256, 256)))
    (rp, rd), (jp, _), (sp, _), (ip, idh) = map(perceptual_hashes, (retina, jpeg, small, ihc))
    assert hamming(rp, jp) <= 2 and hamming(rp, sp) <= 4
    assert hamming(rp, ip) > 12 and hamming(rd, idh) > 12
    assert fingerprint(_png(np.full((40, 40, 3), 7, np.uint8))).phash is None  # flat: nothing to hash
    bad = fingerprint(b"GIF89a-broken", "x/bad.gif")
    assert bad.error and "x/bad.gif" in bad.error and bad.md5 == hashlib.md5(b"GIF89a-broken").hexdigest()
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 2**63, 300, dtype=np.uint64)
    queries = np.concatenate([refs[:40] ^ np.uint64(0b1011), rng.integers(0, 2**63, 200, dtype=np.uint64)])
    got = list(near_pairs(queries, refs, 5))
    brute = [(q, r, bin(int(queries[q]) ^ int(refs[r])).count("1")) for q in range(len(queries)) for r in range(len(refs))
             if bin(int(queries[q]) ^ int(refs[r])).count("1") <= 5]
    assert got == brute and len(got) >= 40


def test_question_normalization_and_matching() -> None:
    assert normalize_question("<image>\nWhere is the <ref>liver</ref> <box>[[0.1, 0.2, 0.3, 0.4]]</box>?") == "where is the liver"
    assert normalize_question("Is THIS an MRI?!") == "is this an mri"
    assert normalize_question("图中有肺吗?") == "图 中 有 肺 吗"
    train = [normalize_question(t) for t in ("Is this an MRI?", "please tell me which organ is abnormal in this scan today")]
    bench = [normalize_question(t) for t in ("is this an mri", "which organ is abnormal in this scan", "is this a ct")]
    got = [(m.train, m.bench, m.kind) for m in match_questions(train, bench)]
    assert got == [(0, 0, "exact"), (1, 1, "ngram")]
