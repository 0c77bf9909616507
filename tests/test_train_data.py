"""Training data: medvl's exports read back (LLaVA JSON/JSONL, Parquet, messages, mixture lists with sample
ratios), a user's LLaVA JSON with bad items, and tokenizing (loss mask, ids as the chat template renders them,
truncation that never splits an image block)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from medvl.train.data import DataError, ImageRef, load_training_data, read_spec
from medvl.train.tokenize import IGNORE, tokenize_all, tokenize_conversation
from train_demo import N_IMAGE_TOKENS, chat_template, demo_build, demo_samples, tokenizer


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    return demo_build(tmp_path_factory)


def _by_id(convs) -> dict:
    out = {}
    for c in convs:
        assert c.id not in out, f"duplicate id {c.id}"
        out[c.id] = (c.messages, [im.key for im in c.images])
    return out


def _file_sha(p: str) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ formats

def test_every_export_gives_the_same_conversations(build):
    manifest = {f["path"]: f for f in json.loads((build / "manifest.json").read_text())["files"]}
    ref_convs, rej = load_training_data(build / "llava" / "train.json", seed=0)
    assert not rej
    assert len(ref_convs) == manifest["llava/train.json"]["samples"] > 2000
    ref = _by_id(ref_convs)
    # the LLaVA file's paths are relative to the build folder (medvl's layout), not to llava/
    for c in ref_convs[:50]:
        assert Path(c.images[0].path).parents[2] == build / "images"  # images/<2 hex>/<2 hex>/<sha>.png
        assert c.images[0].key == _file_sha(c.images[0].path)
    for rel in ("llava/train.jsonl", "parquet/train-00000-of-00001.parquet", "messages/train.jsonl",
                "mixture.json", "mixture/train.json"):
        convs, rej = load_training_data(build / rel, seed=0)
        assert not rej, (rel, rej[:3])
        assert _by_id(convs) == ref, rel
    parquet, _ = load_training_data(build / "parquet" / "train-00000-of-00001.parquet", seed=0)
    assert all(im.data is not None and im.path is None for c in parquet for im in c.images)
    assert parquet[0].images[0].open().mode == "RGB"
    # one record per dataset file: the mixture's per-file sources are the dataset names
    mix, _ = load_training_data(build / "mixture.json", seed=0)
    assert {c.source for c in mix} == set(json.loads((build / "mixture.json").read_text()))


def test_sample_ratio_on_a_file_is_seeded_and_exact(build):
    path = build / "llava" / "train.jsonl"
    n = len(load_training_data(path, seed=0)[0])
    half0 = [c.id for c in load_training_data({"path": path, "sample_ratio": 0.5}, seed=0)[0]]
    half0b = [c.id for c in load_training_data({"path": path, "sample_ratio": 0.5}, seed=0)[0]]
    half1 = [c.id for c in load_training_data({"path": path, "sample_ratio": 0.5}, seed=1)[0]]
    assert len(half0) == len(half1) == int(n * 0.5 + 0.5) and len(set(half0)) == len(half0)
    assert half0 == half0b and half0 != half1
    double = [c.id for c in load_training_data({"path": path, "sample_ratio": 2.0}, seed=0)[0]]
    assert len(double) == 2 * n and sorted(double) == sorted(2 * [c.id for c in load_training_data(path)[0]])
    one_and_half = [c.id for c in load_training_data({"path": path, "sample_ratio": 1.5}, seed=3)[0]]
    counts = {i: one_and_half.count(i) for i in set(one_and_half)}
    assert len(counts) == n and sum(v == 2 for v in counts.values()) == int(n * 0.5 + 0.5)
    assert load_training_data({"path": path, "sample_ratio": 0}, seed=0)[0] == []


def test_mixture_ratios_per_file(build, tmp_path):
    mix = json.loads((build / "mixture.json").read_text())
    ratios = {"mni152": 0.5, "ihc_tiles": 2.0, "retina_seg": 0.25}
    for ds, e in mix.items():  # a user's mixture file elsewhere, with absolute paths
        e["annotations"] = str(build / e["annotations"])
        e["image_dir"] = str(build)
        e["sample_ratio"] = ratios.get(ds, 1.0)
    (tmp_path / "mix.json").write_text(json.dumps(mix))
    parts = read_spec(tmp_path / "mix.json", seed=0)
    for sd in parts:
        n = mix[sd.name]["length"]
        assert sd.n_items == sd.n_valid == n and not sd.rejects
        r = ratios.get(sd.name, 1.0)
        assert len(sd.conversations) == int(r) * n + int((r - int(r)) * n + 0.5), sd.name
    again = read_spec(tmp_path / "mix.json", seed=0)
    other = read_spec(tmp_path / "mix.json", seed=7)
    ids = lambda ps: {p.name: [c.id for c in p.conversations] for p in ps}
    assert ids(parts) == ids(again)
    assert ids(parts)["mni152"] != ids(other)["mni152"] and ids(parts)["xray_csv"] == ids(other)["xray_csv"]
    # a spec-level ratio multiplies the file ratios
    scaled = read_spec({"path": tmp_path / "mix.json", "sample_ratio": 2.0}, seed=0)
    assert {p.name: len(p.conversations) for p in scaled}["mni152"] == mix["mni152"]["length"]


# ------------------------------------------------------------------------------------------------ user data

def _user_dataset(build: Path, root: Path) -> list[dict]:
    """A user's LLaVA JSON next to an image folder: real demo images copied under new names."""
    imgs = sorted((build / "images").rglob("*.png"))[:2]
    (root / "pics").mkdir(parents=True)
    for i, p in enumerate(imgs):
        shutil.copy(p, root / "pics" / f"scan{i}.png")
    H, G = "human", "gpt"
    t = lambda f, v: {"from": f, "value": v}
    return [
        {"id": "ok-single", "image": "pics/scan0.png", "conversations": [t(H, "<image>\nWhat is it?"), t(G, "A scan.")]},
        {"id": "ok-no-placeholder", "image": "pics/scan1.png", "conversations": [t(H, "Describe."), t(G, "Tissue.")]},
        {"id": "ok-text-only", "conversations": [t("system", "Be brief."), t(H, "What is CT?"),
                                                 t(G, "Computed tomography.")]},
        {"id": "ok-two-images", "image": ["pics/scan0.png", str(root / "pics" / "scan1.png")],
         "conversations": [t("USER", "<image>\n<image>\nCompare."), t("Assistant", "Similar."),
                           t("Human", "Sure?"), t("Model", "Yes.")]},
        {"id": "bad-missing-file", "image": "pics/nope.png", "conversations": [t(H, "<image>\nQ"), t(G, "A")]},
        {"id": "bad-role", "conversations": [t(H, "Q"), t("doctor", "A")]},
        {"id": "bad-count", "image": "pics/scan0.png", "conversations": [t(H, "<image>\n<image>\nQ"), t(G, "A")]},
        {"id": "bad-empty", "conversations": []},
        {"id": "bad-ends-with-user", "conversations": [t(H, "Q"), t(G, "A"), t(H, "Q2")]},
        {"id": "bad-order", "conversations": [t(G, "A"), t(H, "Q")]},
        {"id": "bad-image-in-answer", "image": "pics/scan0.png", "conversations": [t(H, "Q"), t(G, "<image>")]},
        {"id": "bad-placeholder-no-image", "conversations": [t(H, "<image>\nQ"), t(G, "A")]},
        {"id": "bad-empty-answer", "conversations": [t(H, "Q"), t(G, "  ")]},
    ]


REASONS = {"bad-missing-file": "image file not found: {root}/pics/nope.png", "bad-role": "unknown role 'doctor'",
           "bad-count": "2 <image> placeholder(s) for 1 image(s)", "bad-empty": "no conversation turns",
           "bad-ends-with-user": "the last turn is a user turn", "bad-order": "turn 0: expected a user turn",
           "bad-image-in-answer": "turn 1: '<image>' in the assistant turn", "bad-empty-answer": "turn 1: empty answer",
           "bad-placeholder-no-image": "1 <image> placeholder(s) for 0 image(s)"}


def test_user_llava_json_bad_items_rejected_with_reasons(build, tmp_path):
    items = _user_dataset(build, tmp_path / "user")
    path = tmp_path / "user" / "data.json"
    path.write_text(json.dumps(items))
    (sd,) = read_spec(path, seed=0)
    assert sd.n_items == len(items) == sd.n_valid + len(sd.rejects)
    kept = {c.id: c for c in sd.conversations}
    assert sorted(kept) == sorted(i["id"] for i in items if i["id"].startswith("ok"))
    got = {r.item.split(": ", 1)[1]: r.reason for r in sd.rejects}
    assert sorted(got) == sorted(REASONS)
    for k, want in REASONS.items():
        assert want.format(root=tmp_path / "user") in got[k], (k, got[k])
    assert all(r.item.startswith(str(path)) for r in sd.rejects)
    # LLaVA's rule: an image without a placeholder goes before the first question
    assert kept["ok-no-placeholder"].messages[0]["content"] == "<image>\nDescribe."
    assert [m["role"] for m in kept["ok-two-images"].messages] == ["user", "assistant"] * 2
    assert kept["ok-text-only"].images == [] and kept["ok-text-only"].messages[0]["role"] == "system"
    # relative paths resolve against the JSON's folder, or an explicit image_root
    assert kept["ok-single"].images[0].path == str(tmp_path / "user" / "pics" / "scan0.png")
    moved = tmp_path / "elsewhere.json"
    moved.write_text(json.dumps(items[:1]))
    assert load_training_data(moved)[1][0].reason.startswith("image file not found")
    convs, rej = load_training_data({"path": moved, "image_root": tmp_path / "user"})
    assert not rej and convs[0].images[0].key == _file_sha(tmp_path / "user" / "pics" / "scan0.png")


def test_jsonl_bad_line_and_bad_files(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}\n'
                  b"{not json\n\n"
                  b'{"id": 5, "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}\n'
                  b'{"id": 6, "conversations": [{"from": "human", "value": "caf\xe9"}]}\n')
    convs, rej = load_training_data(p)
    assert [c.id for c in convs] == ["d.jsonl:1", "5"]
    assert [(r.item, r.reason) for r in rej] == [(f"{p}: line 2", ("invalid JSON (Expecting property name enclosed "
                                                   "in double quotes)")), (f"{p}: line 5", "not UTF-8 text")]
    with pytest.raises(DataError, match="nowhere.json: file not found"):
        load_training_data(tmp_path / "nowhere.json")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"x\.csv: unknown format"):
        load_training_data(tmp_path / "x.csv")
    (tmp_path / "obj.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="obj.json: a JSON object that is not a mixture list"):
        load_training_data(tmp_path / "obj.json")
    (tmp_path / "broken.json").write_text('[{"id": ')
    with pytest.raises(DataError, match="broken.json: not readable JSON"):
        load_training_data(tmp_path / "broken.json")
    with pytest.raises(DataError, match="sample_ratio"):
        load_training_data({"path": p, "sample_ratio": -1})
    with pytest.raises(DataError, match="ratio"):  # misspelt key named
        load_training_data({"path": p, "ratio": 0.5})


def test_image_ref_bytes_and_key():
    import io

    from PIL import Image
    from skimage import data

    arr = data.retina()[::8, ::8]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    ref = ImageRef(data=buf.getvalue())
    assert ref.key == hashlib.sha256(buf.getvalue()).hexdigest() and ref.read_bytes() == buf.getvalue()
    im = ref.open()
    assert im.mode == "RGB" and im.size == (arr.shape[1], arr.shape[0])


# ------------------------------------------------------------------------------------------------ tokenizing

def _runs(labels: list[int]) -> list[list[int]]:
    """Contiguous runs of labelled tokens."""
    runs, cur = [], []
    for x in labels:
        if x == IGNORE:
            if cur:
                runs.append(cur)
            cur = []
        else:
            cur.append(x)
    return runs + ([cur] if cur else [])


def test_loss_only_on_answers(tmp_path_factory):
    convs, samples, rejects, stats = demo_samples(tmp_path_factory)
    assert not rejects and stats.kept == len(convs) == len(samples) and stats.truncated == 0
    tok = tokenizer()
    for conv, s in zip(convs, samples):
        answers = [m["content"] + "<|im_end|>" for m in conv.messages if m["role"] == "assistant"]
        assert [tok.decode(r) for r in _runs(s.labels)] == answers, conv.id
        assert all(lab in (IGNORE, i) for lab, i in zip(s.labels, s.input_ids))
    assert stats.label_tokens == sum(len(s.labels) - s.labels.count(IGNORE) for s in samples)


def test_ids_equal_the_chat_template_with_images_expanded(tmp_path_factory):
    convs, samples, _, stats = demo_samples(tmp_path_factory)
    tok = tokenizer()
    image_id = tok.convert_tokens_to_ids("<image>")
    for conv, s in list(zip(convs, samples))[::13]:
        plain = tok.apply_chat_template(conv.messages, chat_template=chat_template(), tokenize=True)
        plain = plain["input_ids"] if isinstance(plain, dict) or hasattr(plain, "keys") else plain
        expanded = [t for i in plain for t in ([i] * N_IMAGE_TOKENS if i == image_id else [i])]
        assert s.input_ids == expanded, conv.id
        assert s.input_ids.count(image_id) == N_IMAGE_TOKENS * len(conv.images) == N_IMAGE_TOKENS * len(s.images)
        one = tokenize_conversation(conv, tok, chat_template=chat_template(), image_token_id=image_id,
                                    n_image_tokens=N_IMAGE_TOKENS, max_length=2048)
        assert (one.input_ids, one.labels) == (s.input_ids, s.labels)  # batched == one by one
    assert stats.image_tokens == N_IMAGE_TOKENS * sum(len(c.images) for c in convs)


def _two_image_conv(build: Path, tmp_path: Path):
    items = _user_dataset(build, tmp_path / "u")
    p = tmp_path / "u" / "d.json"
    p.write_text(json.dumps([i for i in items if i["id"] in ("ok-two-images", "ok-text-only")]))
    convs, _ = load_training_data(p)
    conv = next(c for c in convs if c.id == "ok-two-images")
    conv.messages[2]["content"] = "Sure? <image>\nThis one too."  # the second image in the second question
    conv.messages[0]["content"] = "<image>\nCompare."
    return conv, convs


def test_truncation_never_splits_an_image_block(build, tmp_path, tmp_path_factory):
    tok = tokenizer()
    image_id = tok.convert_tokens_to_ids("<image>")
    kw = {"chat_template": chat_template(), "image_token_id": image_id, "n_image_tokens": N_IMAGE_TOKENS}
    conv, _ = _two_image_conv(build, tmp_path)
    full = tokenize_conversation(conv, tok, max_length=4096, **kw)
    blocks = [i for i, t in enumerate(full.input_ids) if t == image_id and full.input_ids[i - 1] != image_id]
    assert len(blocks) == 2 and not full.truncated
    cut = tokenize_conversation(conv, tok, max_length=blocks[1] + 10, **kw)  # inside the second block
    assert cut.truncated and len(cut.input_ids) == blocks[1] and cut.images == conv.images[:1]
    assert cut.input_ids == full.input_ids[:blocks[1]] and cut.labels == full.labels[:blocks[1]]
    assert tok.decode(_runs(cut.labels)[0]) == "Similar.<|im_end|>"
    lost = tokenize_conversation(conv, tok, max_length=blocks[0] + 5, **kw)  # inside the first: nothing to learn
    assert lost.reason == f"longer than max_length ({len(full.input_ids)} tokens) with no answer left"
    # the whole demo at a short max_length: counts add up, no sample holds a partial block
    convs, *_ = demo_samples(tmp_path_factory)
    samples, rejects, stats = tokenize_all(convs, tok, max_length=230, **kw)
    assert stats.kept + stats.rejected == len(convs) and len(rejects) == stats.rejected
    assert stats.truncated == sum(s.truncated for s in samples) > 0
    assert all(len(s.input_ids) <= 230 and s.input_ids.count(image_id) == N_IMAGE_TOKENS * len(s.images)
               for s in samples)
    assert stats.images_dropped == sum(len(c.images) for c in convs if c.id in {s.id for s in samples}) - \
        sum(len(s.images) for s in samples)
    assert all("with no answer left" in r.reason for r in rejects)


def test_text_only_samples_mix_with_image_samples(build, tmp_path):
    tok = tokenizer()
    _, convs = _two_image_conv(build, tmp_path)
    samples, rejects, stats = tokenize_all(convs, tok, chat_template=chat_template(),
                                           image_token_id=tok.convert_tokens_to_ids("<image>"),
                                           n_image_tokens=N_IMAGE_TOKENS, max_length=2048)
    assert not rejects and stats.text_only == 1 and stats.kept == 2
    text = next(s for s in samples if s.id == "ok-text-only")
    assert text.images == [] and tok.decode(_runs(text.labels)[0]) == "Computed tomography.<|im_end|>"


def test_tokenizer_without_the_image_token_is_refused():
    tok = tokenizer()
    with pytest.raises(ValueError, match="encodes '<image>'"):
        tokenize_all([], tok, chat_template=chat_template(), image_token_id=tok.eos_token_id, n_image_tokens=4,
                      max_length=64)


def test_template_without_generation_markers_rejects_instead_of_training_nothing(tmp_path_factory):
    convs, *_ = demo_samples(tmp_path_factory)
    tok = tokenizer()
    plain = chat_template().replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")
    assert plain != chat_template()
    samples, rejects, stats = tokenize_all(convs[:20], tok, chat_template=plain,
                                           image_token_id=tok.convert_tokens_to_ids("<image>"),
                                           n_image_tokens=N_IMAGE_TOKENS, max_length=2048)
    assert not samples and stats.rejected == 20 and "{% generation %}" in rejects[0].reason


def test_a_template_error_rejects_only_that_sample(tmp_path_factory):
    convs, *_ = demo_samples(tmp_path_factory)
    convs = [c for c in convs if len(c.messages) == 2][:6]
    bad = convs[2]
    bad = type(bad)(bad.id, [dict(m) for m in bad.messages], bad.images, bad.source)
    bad.messages[1]["content"] = "FORBIDDEN"
    tpl = "{%- if 'FORBIDDEN' in messages[1]['content'] %}{{ raise_exception('no FORBIDDEN') }}{% endif -%}" + \
        chat_template()
    tok = tokenizer()
    samples, rejects, stats = tokenize_all(convs[:2] + [bad] + convs[3:], tok, chat_template=tpl,
                                           image_token_id=tok.convert_tokens_to_ids("<image>"),
                                           n_image_tokens=N_IMAGE_TOKENS, max_length=2048)
    assert [s.id for s in samples] == [c.id for i, c in enumerate(convs) if i != 2]
    assert [(r.item, r.reason) for r in rejects] == [(bad.id, "chat template failed: no FORBIDDEN")]
