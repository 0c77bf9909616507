"""The training commands as a user runs them: `medvl model init`, `medvl train`, `medvl chat`, and
`medvl demo --train --tiny` end to end (tiny random parts, real demo data, real DICOM for chat)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from medvl.cli.main import cli

pytestmark = pytest.mark.torch


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "init"
    _ok(CliRunner().invoke(cli, ["model", "init", str(out), "--vision", "tiny-clip", "--lm", "tiny-llama"]))
    return out


def test_model_init_writes_a_plain_transformers_folder(tiny_model: Path):
    names = {p.name for p in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "chat_template.jinja", "processor_config.json",
            "tokenizer.json", "medvl_model.json"} <= names
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "llava" and config["vision_feature_layer"] == -2
    again = CliRunner().invoke(cli, ["model", "init", str(tiny_model), "--vision", "tiny-clip", "--lm", "tiny-llama"])
    assert again.exit_code != 0 and "--overwrite" in again.output


def test_model_init_names_a_bad_part(tmp_path: Path):
    res = CliRunner().invoke(cli, ["model", "init", str(tmp_path / "m"), "--vision", str(tmp_path / "nope"),
                                   "--lm", "tiny-llama"])
    assert res.exit_code != 0 and "vision part" in res.output and "not a transformers folder" in res.output


def _llava_json(tmp_path: Path, n: int = 6) -> Path:
    """A user's LLaVA JSON over real medical images (pydicom CT rendered to PNG, scikit-image retina)."""
    import numpy as np
    from PIL import Image
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from skimage import data

    ct = dcmread(get_testdata_file("CT_small.dcm")).pixel_array.astype(np.float64)
    ct = ((ct - ct.min()) / (ct.max() - ct.min()) * 255).astype(np.uint8)
    Image.fromarray(ct).save(tmp_path / "ct.png")
    Image.fromarray(data.retina()[::8, ::8]).save(tmp_path / "retina.png")
    items = []
    for i in range(n):
        img, mod = (("ct.png", "CT"), ("retina.png", "fundus photograph"))[i % 2]
        items.append({"id": f"s{i}", "image": img, "conversations": [
            {"from": "human", "value": "<image>\nWhich imaging modality is this?"},
            {"from": "gpt", "value": f"This is a {mod} image."}]})
    items.append({"id": "bad", "image": "missing.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A scan."}]})
    path = tmp_path / "train.json"
    path.write_text(json.dumps(items))
    return path


def test_train_then_chat_and_resume(tiny_model: Path, tmp_path: Path):
    data = _llava_json(tmp_path)
    cfg = {"model": str(tiny_model), "output_dir": "runs", "data": [data.name], "max_length": 256,
           "stages": [{"preset": "stage1", "max_steps": 2, "batch_size": 1},
                      {"preset": "stage3", "max_steps": 2, "batch_size": 1}]}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = _ok(CliRunner().invoke(cli, ["train", str(path)]))
    assert "stage3: trained" in res.output
    stage = json.loads((tmp_path / "runs" / "stage1" / "stage.json").read_text())
    assert stage["status"] == "done" and stage["rejected"] == 1
    rejects = (tmp_path / "runs" / "stage1" / "rejects.jsonl").read_text()
    assert "missing.png" in rejects
    # a second run refuses to mix runs, --resume skips finished stages
    again = CliRunner().invoke(cli, ["train", str(path)])
    assert again.exit_code != 0 and "--resume" in again.output
    res = _ok(CliRunner().invoke(cli, ["train", str(path), "--resume"]))
    assert "skipped (done earlier)" in res.output
    # chat with the trained model on a real DICOM file (rendered like the build) and text only
    from pydicom.data import get_testdata_file

    final = tmp_path / "runs" / "stage3"
    for args in (["--image", get_testdata_file("CT_small.dcm")], []):
        chat = CliRunner().invoke(cli, ["chat", str(final), "which modality?", "--max-new-tokens", "4", *args])
        _ok(chat)


def test_train_config_errors_name_the_key(tmp_path: Path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"model": "m", "output_dir": "o", "data": ["d.json"],
                                    "stages": [{"preset": "stage1", "lr": {"projector": -1}}]}))
    res = CliRunner().invoke(cli, ["train", str(path)])
    assert res.exit_code != 0 and "stages.0.lr.projector" in res.output
    path.write_text(yaml.safe_dump({"model": "m", "output_dir": "o", "stages": ["stage9"]}))
    res = CliRunner().invoke(cli, ["train", str(path)])
    assert res.exit_code != 0 and "unknown preset 'stage9'" in res.output


@pytest.mark.slow
def test_demo_train_tiny_end_to_end(tmp_path: Path):
    out = tmp_path / "demo"
    _ok(CliRunner().invoke(cli, ["demo", str(out), "--train", "--tiny"]))
    report = json.loads((out / "train_report.json").read_text())
    names = [r["model"] for r in report["rows"]]
    assert names == ["random choice", "most frequent answer per kind", "untrained (stage 0)", "after stage1",
                     "after stage2", "after stage3"]
    assert report["questions"] > 0 and 0 < report["rows"][0]["accuracy"] < 1
    for row in report["rows"][2:]:
        assert row["n"] == report["questions"] and "modality" in row["by_kind"]
    for stage in ("stage1", "stage2", "stage3"):
        assert (out / "train" / stage / "final" / "config.json").is_file()
    assert "Held-out images, not held-out subjects" in (out / "train_report.md").read_text()


def test_a_stage_never_starts_from_the_wrong_model(tiny_model: Path, tmp_path: Path):
    """`--stage stage3` before stage2 has run is an error naming stage2, not a silent start from stage1 or init."""
    data = _llava_json(tmp_path, n=2)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"model": str(tiny_model), "output_dir": "runs", "data": [data.name],
                                    "max_length": 256, "stages": [{"preset": p, "max_steps": 1, "batch_size": 1}
                                                                  for p in ("stage1", "stage2", "stage3")]}))
    _ok(CliRunner().invoke(cli, ["train", str(path), "--stage", "stage1"]))
    res = CliRunner().invoke(cli, ["train", str(path), "--stage", "stage3"])
    assert res.exit_code != 0 and "run stage stage2 first" in res.output


def test_transformers_serve_loads_the_folder_and_answers_like_medvl_chat(tiny_model: Path, tmp_path: Path):
    """The saved folder is plain transformers: `transformers serve` (OpenAI-compatible) loads it without medvl,
    renders the same prompt (same token count, image tokens included) and gives medvl's greedy answer."""
    import base64
    import time
    import urllib.request

    from serve_helpers import transformers_serve

    pytest.importorskip("fastapi")
    from medvl.eval.adapters.hf import HFAdapter
    from medvl.eval.types import Request

    data = _llava_json(tmp_path, n=2)
    image = (data.parent / "ct.png").read_bytes()
    question = "Which imaging modality is this?"
    adapter = HFAdapter(str(tiny_model))
    text = adapter.build_text(Request(id="q", prompt=question, images=[image]))
    n_prompt = len(adapter.processor(text=[text], images=[adapter_image(image)], return_tensors="pt")["input_ids"][0])
    expected = adapter.generate([Request(id="q", prompt=question, images=[image], max_new_tokens=6)])[0]

    with transformers_serve(tiny_model) as url:
        body = {"model": str(tiny_model), "max_tokens": 6, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(image).decode()}},
            {"type": "text", "text": question}]}]}
        req = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        reply = None
        for _ in range(120):
            try:
                reply = json.loads(urllib.request.urlopen(req, timeout=60).read())
                break
            except OSError:
                time.sleep(0.5)
        assert reply is not None, "transformers serve did not answer"
    assert reply["usage"]["prompt_tokens"] == n_prompt
    assert reply["choices"][0]["message"]["content"].strip() == expected


def adapter_image(data: bytes):
    from medvl.eval.adapters._images import load_pil

    return load_pil(data)
