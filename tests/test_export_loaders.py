"""Issue 13: a build loads unchanged with the ecosystem's loaders, from any working directory.

Two real builds of the scale benchmark's corpus (benchmarks/make_scale_corpus.py: NIH-layout tables over crops
of pip-shipped images plus an MSD-layout NIfTI crop of MNI152), one with the default options and one writing
absolute image paths (messages) and paths relative to a chosen root (LLaVA). The card's "How to load" lines
(``README.md``) are parsed and run from another folder: ``datasets.load_dataset`` for real; LLaVA, LLaMA-Factory
and ms-swift image paths resolved by those tools' own rules (cited on each resolver) and the images opened."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from build_helpers import scale_corpus_module, tree
from PIL import Image

from medvl.export import run_exports
from medvl.export.card_hub import features_yaml
from medvl.export.parquet import HF_FEATURES

SPLITS = ["train", "val", "test"]


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(base folder, default build, build with image_paths/image_root options), both under base/builds/."""
    from medvl.pipeline.build import run_build
    from medvl.pipeline.recipe import parse_recipe

    base = tmp_path_factory.mktemp("loaders")
    corpus = base / "corpus"
    scale_corpus_module().make_corpus(corpus, images=40, volumes=1, side=32, volume_side=16, jobs=1)
    data = yaml.safe_load((corpus / "recipe.yaml").read_text(encoding="utf-8"))
    plain, rooted = base / "builds" / "plain", base / "builds" / "rooted"
    run_build(parse_recipe(data, base_dir=corpus), plain)
    # image_root ".." starts from the recipe's folder (corpus/), so it is `base`; the build is builds/rooted in it
    data["export_options"] = {"messages": {"image_paths": "absolute"}, "llava": {"image_root": ".."}}
    run_build(parse_recipe(data, base_dir=corpus), rooted)
    return base, plain, rooted


@pytest.fixture()
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A working directory that holds no build."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    monkeypatch.chdir(d)
    monkeypatch.delenv("ROOT_IMAGE_DIR", raising=False)
    return d


def how_to_load(build: Path) -> dict[str, list[str]]:
    """The code spans of each "How to load" line of the build's README.md, by loader name."""
    md = (build / "README.md").read_text(encoding="utf-8")
    section = md.split("## How to load\n", 1)[1].split("\n### ", 1)[0]
    return {m.group(1): re.findall(r"`([^`]*)`", m.group(2)) for m in re.finditer(r"^- ([^:]+): (.*)$", section, re.M)}


def manifest(build: Path) -> dict:
    return json.loads((build / "manifest.json").read_text(encoding="utf-8"))


def fill(text: str, build: Path, image_root: Path | None = None) -> str:
    text = text.replace("BUILD_DIR", build.as_posix())
    return text.replace("IMAGE_ROOT", image_root.as_posix()) if image_root is not None else text


def yaml_keys(spans: list[str], build: Path) -> dict[str, str]:
    """The ``key: value`` spans of a line (LLaMA-Factory's training YAML keys)."""
    return dict(fill(x, build).split(": ", 1) for x in spans if re.fullmatch(r"\w+: \S+", x))


# the tools' own rules for turning a path from a data file into a file to open


def llava_open(path: str, image_folder: str) -> str:
    """LLaVA (llava/train/train.py, LazySupervisedDataset): ``os.path.join(image_folder, image_file)``."""
    return os.path.join(image_folder, path)


def llamafactory_open(path: str, media_dir: str) -> str:
    """LLaMA-Factory (data/converter.py, ``_find_medias``): ``media_dir`` joined when that file exists, else the
    path as written (then opened from the working directory); ``media_dir`` defaults to ``dataset_dir``."""
    joined = os.path.join(media_dir, path)
    return joined if os.path.isfile(joined) else path


def swift_open(path: str) -> str:
    """ms-swift 4.6.0 (swift/template/vision_utils.py, ``_check_path``): the path if it exists from the working
    directory, else joined to the ``ROOT_IMAGE_DIR`` environment variable when set."""
    if os.path.exists(path):
        return os.path.abspath(path)
    root = os.environ.get("ROOT_IMAGE_DIR")
    if root is not None:
        path = os.path.join(root, path)
    return os.path.abspath(os.path.expanduser(path))


def open_all(paths: list[str]) -> int:
    for p in paths:
        with Image.open(p) as im:
            im.verify()
    return len(paths)


def llava_images(path: Path) -> list[str]:
    out: list[str] = []
    for item in json.loads(path.read_text(encoding="utf-8")):
        img = item.get("image")
        out += [] if img is None else [img] if isinstance(img, str) else list(img)
    return out


def messages_images(path: Path) -> list[str]:
    return [p for line in path.read_text(encoding="utf-8").splitlines() for p in json.loads(line)["images"]]


# --------------------------------------------------------------------------------------------------- tests


def test_readme_is_the_card_with_hub_metadata(builds):
    datasets = pytest.importorskip("datasets")
    from datasets import Features

    _, plain, _ = builds
    assert (plain / "README.md").read_bytes() == (plain / "dataset_card.md").read_bytes()
    files = {f["path"]: f for f in manifest(plain)["files"]}
    assert files["README.md"]["format"] == "dataset-card-readme" and len(files["README.md"]["sha256"]) == 64
    meta = yaml.safe_load((plain / "README.md").read_text(encoding="utf-8").split("---\n")[1])
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": s, "path": f"parquet/{s}-*.parquet"} for s in SPLITS]}]
    info = meta["dataset_info"]
    assert [s["name"] for s in info["splits"]] == SPLITS
    counts = manifest(plain)["samples_by_format_and_split"]["parquet"]
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == counts
    # the features block is what datasets itself writes, and reads back to the Parquet shards' features
    assert features_yaml(HF_FEATURES) == Features.from_dict(HF_FEATURES)._to_yaml_list() == info["features"]
    assert Features._from_yaml_list(info["features"])["image"] == datasets.Image()
    card = datasets.load.LocalDatasetModuleFactory(str(plain)).get_module()
    assert card.dataset_infos["default"].splits["val"].num_examples == counts["val"]


def test_load_dataset_from_another_folder(builds, elsewhere):
    datasets = pytest.importorskip("datasets")
    _, plain, _ = builds
    spans = how_to_load(plain)["Hugging Face `datasets`"]
    call = fill(spans[0], plain)
    assert call == f'load_dataset("{plain.as_posix()}")'
    ds = datasets.load_dataset(call.split('"')[1], cache_dir=str(elsewhere / "cache"))
    counts = manifest(plain)["samples_by_format_and_split"]["parquet"]
    assert list(ds) == SPLITS and {s: ds[s].num_rows for s in SPLITS} == counts
    for s in SPLITS:
        row = ds[s][0]
        assert isinstance(row["image"], Image.Image) and row["image"].size == (row["width"], row["height"])
        assert row["conversations"][0]["value"].startswith("<image>")
    one = re.fullmatch(r'load_dataset\("parquet", data_files=\{"(\w+)": "([^"]+)"\}\)', fill(spans[-1], plain))
    alone = datasets.load_dataset("parquet", data_files={one.group(1): one.group(2)}, cache_dir=str(elsewhere / "c2"))
    assert alone[one.group(1)].num_rows == counts[one.group(1)]
    # what an upload of README.md + parquet/ to the Hub holds (upload_folder allow_patterns) loads the same way
    hub = elsewhere / "hub_copy"
    (hub / "parquet").mkdir(parents=True)
    for p in [plain / "README.md", *sorted((plain / "parquet").glob("*.parquet"))]:
        (hub / p.relative_to(plain)).write_bytes(p.read_bytes())
    copy = datasets.load_dataset(str(hub), cache_dir=str(elsewhere / "c3"))
    assert {s: copy[s].num_rows for s in copy} == counts


def test_default_paths_resolve_the_documented_way(builds, elsewhere, monkeypatch):
    _, plain, _ = builds
    lines = how_to_load(plain)
    # the default files keep the build's relative paths, exactly as in samples.jsonl
    written = {json.loads(x)["id"]: json.loads(x)["images"] for x in (plain / "samples.jsonl").read_text().splitlines()}
    for s in SPLITS:
        for x in (plain / f"messages/{s}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(x)
            assert row["images"] == written[row["id"]] and not row["images"][0].startswith("/")
    # relative paths do not open from another folder on their own: the documented roots are needed
    first = messages_images(plain / "messages/train.jsonl")[0]
    assert not Path(first).exists() and not Path(swift_open(first)).exists()

    llava = re.fullmatch(r"--data_path (\S+) --image_folder (\S+)", fill(lines["LLaVA"][0], plain))
    folder = llava.group(2)
    assert folder == plain.as_posix()
    n = sum(open_all([llava_open(p, folder) for p in llava_images(Path(llava.group(1)).parent / f"{s}.json")])
            for s in SPLITS)
    assert n == sum(manifest(plain)["samples_by_format_and_split"]["llava-json"].values())

    lf = yaml_keys(lines["LLaMA-Factory"], plain)
    info = json.loads((Path(lf["dataset_dir"]) / "dataset_info.json").read_text(encoding="utf-8"))
    data_file = Path(lf["dataset_dir"]) / info[lf["dataset"]]["file_name"]
    assert data_file == plain / "messages/train.jsonl"
    assert open_all([llamafactory_open(p, lf["dataset_dir"]) for p in messages_images(data_file)]) > 0

    swift = re.fullmatch(r"ROOT_IMAGE_DIR=(\S+) swift sft --dataset (\S+) \.\.\.", fill(lines["ms-swift"][0], plain))
    monkeypatch.setenv("ROOT_IMAGE_DIR", swift.group(1))
    assert open_all([swift_open(p) for p in messages_images(Path(swift.group(2)))]) > 0
    assert open_all([swift_open(p) for p in llava_images(plain / "llava/train.json")]) > 0


def test_absolute_and_image_root_paths(builds, elsewhere, monkeypatch):
    base, plain, rooted = builds
    lines = how_to_load(rooted)
    files = {f["path"]: f for f in manifest(rooted)["files"]}
    assert files["messages/train.jsonl"]["extra"]["image_paths"] == "absolute"
    assert files["llava/val.json"]["extra"]["image_prefix"] == "builds/rooted/"
    assert "image_paths" not in manifest(plain)["files"][0]["extra"]  # the default adds nothing

    # messages: absolute paths, ms-swift line without ROOT_IMAGE_DIR, opened from another folder
    swift = re.fullmatch(r"swift sft --dataset (\S+) \.\.\.", fill(lines["ms-swift"][0], rooted))
    paths = messages_images(Path(swift.group(1)))
    assert all(p.startswith(rooted.resolve().as_posix() + "/images/") for p in paths)
    assert open_all([swift_open(p) for p in paths]) == len(paths)
    lf = yaml_keys(lines["LLaMA-Factory"], rooted)
    assert open_all([llamafactory_open(p, lf["dataset_dir"]) for p in paths]) == len(paths)

    # LLaVA: relative to image_root (base), the card says where the build sits in it
    assert "`builds/rooted/`" in (rooted / "README.md").read_text(encoding="utf-8")
    llava = re.fullmatch(r"--data_path (\S+) --image_folder (\S+)", fill(lines["LLaVA"][0], rooted, base))
    rel = llava_images(Path(llava.group(1)))
    assert all(p.startswith("builds/rooted/images/") for p in rel)
    assert open_all([llava_open(p, llava.group(2)) for p in rel]) == len(rel)
    monkeypatch.setenv("ROOT_IMAGE_DIR", base.as_posix())  # ms-swift reading the LLaVA file
    assert open_all([swift_open(p) for p in rel]) == len(rel)

    # the options change only the LLaVA and messages files (and what describes them)
    a, b = tree(plain), tree(rooted)
    described = ("llava/", "messages/", "README.md", "dataset_card.", "manifest.json", "recipe.yaml")
    assert {k: v for k, v in a.items() if not k.startswith(described)} == \
        {k: v for k, v in b.items() if not k.startswith(described)}


def test_bad_path_options_name_the_export_and_the_problem(tmp_path):
    from test_export import build_corpus

    out = tmp_path / "out"
    out.mkdir()
    recs, samples, _ = build_corpus(out)
    cases = [({"llava": {"image_path": "absolute"}}, "export 'llava': unknown option 'image_path'; allowed: "
                                                     "image_paths, image_root, jsonl"),
             ({"messages": {"image_paths": "abs"}}, "export 'messages': option image_paths='abs': Input should be "
                                                    "'relative' or 'absolute'"),
             ({"llava": {"image_paths": "absolute", "image_root": "/data"}}, "contradict each other"),
             ({"messages": {"image_root": 3}}, "export 'messages': option image_root=3")]
    for options, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            run_exports(list(options), recs, samples, out, options=options)
    # a root the build lies outside of gives ../ paths, which still open from that root
    entries = run_exports(["messages"], recs, samples, out, options={"messages": {"image_root": str(tmp_path / "x")}})
    assert entries[0].extra["image_prefix"] == "../out/"
    (tmp_path / "x").mkdir()
    rows = [json.loads(x) for x in (out / "messages/train.jsonl").read_text().splitlines()]
    assert open_all([os.path.join(tmp_path / "x", p) for r in rows for p in r["images"]]) == 4


def test_overwrite_replaces_a_readme(tmp_path):
    from medvl.pipeline.workdir import WorkdirError, prepare

    out = tmp_path / "b"
    out.mkdir()
    (out / "README.md").write_text("an earlier card\n")
    with pytest.raises(WorkdirError, match=r"already holds a build \(README.md"):
        prepare(out, {}, overwrite=False, resume=False)
    prepare(out, {}, overwrite=True, resume=False)
    assert not (out / "README.md").exists()
