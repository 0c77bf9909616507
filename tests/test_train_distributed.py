"""Scale-out: `medvl train` under `torchrun` on this CPU (2 processes, gloo) against one process at the same
global batch, plus the shipped DeepSpeed / FSDP configuration files and the config keys that pass them on.

The two-process run must give the one-process loss curve (the Trainer averages tokens across processes, so the
logged loss is the global token mean) and the same final weights, through an epoch boundary, over a stage that
trains the projector from cached features (stage 1) and one that trains the tower (stage 2)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from train_helpers import corpus_json, metrics, tiny_init, weights, write_config

pytestmark = pytest.mark.torch
REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "src" / "medvl" / "train" / "configs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(config: Path, nproc: int, timeout: float = 150) -> subprocess.CompletedProcess:
    """`medvl train CONFIG --overwrite` in 1 process, or under torchrun with ``nproc`` processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cli = ["-m", "medvl.cli.main", "train", str(config), "--overwrite"]
    if nproc == 1:
        cmd = [sys.executable, *cli]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *cli]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=config.parent, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    return res


def _stages(batch: int) -> list[dict]:
    # 256 tokens: the corpus makes 17 packs, so 2 packs per step leave a short last step per epoch (before the
    # packs are evened out); 11 steps of stage 1 cross the epoch boundary
    return [{"preset": "stage1", "max_steps": 11, "batch_size": batch, "save_steps": 100, "warmup_ratio": 0.0,
             "lr": {"projector": 1.0e-2}},
            {"preset": "stage2", "max_steps": 3, "batch_size": batch, "save_steps": 100, "warmup_ratio": 0.0,
             "lr": {"projector": 1.0e-3, "vision": 1.0e-3}}]


def _earlier_run(stage_dir: Path, files: int = 400) -> None:
    """An earlier run's folder (many files) for --overwrite to delete, as a relaunch finds it."""
    for i in range(files):
        d = stage_dir / "checkpoints" / f"checkpoint-{i % 20}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"shard-{i}.bin").write_bytes(b"x" * 64)
    (stage_dir / "stage.json").write_text(json.dumps({"status": "running", "fingerprint": {}}))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(init model, data, run folder) of the one-process reference run (2 packs per step)."""
    base = tmp_path_factory.getbasetemp()
    data, init = corpus_json(base), tiny_init(base)
    one = write_config(tmp_path_factory.mktemp("one") / "train.yaml", model=init, data=data, stages=_stages(2))
    _train(one, 1)
    return init, data, one.parent / "run"


def _assert_same_run(run1: Path, run2: Path, init: Path) -> None:
    """Same loss at every step (within 1e-4 relative) and the same final weights, in both stages."""
    init_w = weights(init)
    for stage in ("stage1", "stage2"):
        m1 = [r for r in metrics(run1 / stage) if "loss" in r]
        m2 = [r for r in metrics(run2 / stage) if "loss" in r]  # written once (by the main process)
        assert [r["step"] for r in m2] == [r["step"] for r in m1] == list(range(1, len(m1) + 1))
        for a, b in zip(m1, m2):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (stage, a["step"], a["loss"], b["loss"])
        assert m2[0]["epoch"] == pytest.approx(m1[0]["epoch"])
        w1, w2 = weights(run1 / stage / "final"), weights(run2 / stage / "final")
        assert w1.keys() == w2.keys()
        moved = max((w1[k] - init_w[k]).abs().max().item() for k in w1)
        assert moved > 1e-3  # training changed the weights, so agreeing means something
        for k in w1:
            assert torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-6), (stage, k, (w1[k] - w2[k]).abs().max())
        assert json.loads((run2 / stage / "stage.json").read_text())["status"] == "done"
        assert (run2 / stage / "rejects.jsonl").read_text() == (run1 / stage / "rejects.jsonl").read_text()
    assert metrics(run1 / "stage1")[-1]["epoch"] > 1.0  # stage 1 crossed an epoch boundary
    cache = run2 / "feature_cache"
    assert not list(cache.rglob("*.tmp")) and len(list(cache.rglob("*.npy"))) > 0


def test_two_processes_match_one_process_at_the_same_global_batch(one_process, tmp_path):
    init, data, run1 = one_process
    two = write_config(tmp_path / "two" / "train.yaml", model=init, data=data, stages=_stages(1))
    for stage in ("stage1", "stage2"):
        _earlier_run(tmp_path / "two" / "run" / stage)
    _train(two, 2)
    _assert_same_run(run1, tmp_path / "two" / "run", init)
    for stage in ("stage1", "stage2"):
        assert not (tmp_path / "two" / "run" / stage / "checkpoints" / "checkpoint-19").exists()  # --overwrite


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_two_processes_match_one_process(one_process, tmp_path, zero):
    """The shipped DeepSpeed configs under torchrun (DeepSpeed's CPU accelerator, gloo): medvl's optimizer and
    schedule are used, ZeRO-3's partitioned tower is gathered for the feature cache and its weights for the
    saved folder."""
    pytest.importorskip("deepspeed")
    init, data, run1 = one_process
    two = write_config(tmp_path / "train.yaml", model=init, data=data, stages=_stages(1), deepspeed=zero)
    _train(two, 2, timeout=240)
    _assert_same_run(run1, tmp_path / "run", init)
    assert (tmp_path / "run" / "stage1" / "checkpoints").is_dir()


def test_text_only_batches_in_stages_that_train_no_lm(tmp_path_factory, tmp_path):
    """A step whose batch (on one process: its share) holds only text-only samples, in stage 1 (projector on
    cached features) and stage 2 (projector + tower): nothing that learns is in the loss's graph. The step must
    run (zero gradient), not fail; under DDP every process must use the same parameters."""
    from medvl.train.config import load_config
    from medvl.train.run import run

    base = tmp_path_factory.getbasetemp()
    items = json.loads(corpus_json(base).read_text())
    images = [it for it in items if it.get("image") and "#" in it["id"]][:3]  # from the medvl build
    text = [it for it in items if it["id"].startswith("text-")]  # the hand-made text-only items
    assert len(images) == 3 and len(text) >= 3
    data = tmp_path / "mixed.json"
    data.write_text(json.dumps(images + text))
    stages = [{"preset": "stage1", "epochs": 1, "batch_size": 1, "save_steps": 100},
              {"preset": "stage2", "epochs": 1, "batch_size": 1, "save_steps": 100}]
    cfg = load_config(write_config(tmp_path / "train.yaml", model=tiny_init(base), data=data, stages=stages,
                                   packing=False))
    results = run(cfg, overwrite=True, log=lambda m: None)  # one sample per step: every text-only one alone
    assert [r.name for r in results] == ["stage1", "stage2"]
    for stage in ("stage1", "stage2"):
        losses = [r["loss"] for r in metrics(tmp_path / "run" / stage) if "loss" in r]
        assert len(losses) == len(images) + len(text) and all(math.isfinite(x) and x > 0 for x in losses)


def test_fill_global_batches_splits_packs_until_every_step_is_full():
    from medvl.train.packing import PackedDataset
    from medvl.train.run import fill_global_batches
    from medvl.train.tokenize import TokenizedSample

    lengths = [30, 50, 20, 70, 40, 10, 60, 35, 25, 45, 15, 55, 65]
    samples = [TokenizedSample(f"s{i}", [1] * n, [1] * n, [], False, "t") for i, n in enumerate(lengths)]
    for global_batch in (1, 2, 3, 4, 8):
        ds = PackedDataset(samples, 100, seed=0)
        before = len(ds)
        assert fill_global_batches(ds, global_batch) == 0
        assert len(ds) % global_batch == 0 and before <= len(ds) < before + global_batch
        assert sorted(i for p in ds.packs for i in p) == list(range(len(samples)))  # each sample once, whole
        assert all(sum(lengths[i] for i in p) <= 100 for p in ds.packs)
        assert ds.stats["packs"] == len(ds) and ds.stats["tokens"] == sum(lengths)
    ds = PackedDataset(samples, 100, seed=0, packed=False)  # one sample per item: nothing to split
    assert fill_global_batches(ds, 4) == -len(samples) % 4 == 3


# ------------------------------------------------------------------------------------------ shipped configs

def test_deepspeed_configs_load_in_training_arguments(tmp_path):
    pytest.importorskip("deepspeed")
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    for stage in (2, 3):
        path = CONFIGS / f"deepspeed_zero{stage}.json"
        raw = json.loads(path.read_text())
        assert raw["zero_optimization"]["stage"] == stage
        args = TrainingArguments(output_dir=str(tmp_path / f"z{stage}"), deepspeed=str(path), use_cpu=True,
                                 per_device_train_batch_size=3, gradient_accumulation_steps=2, learning_rate=1e-4,
                                 max_grad_norm=0.5, report_to=[])
        hf = args.hf_deepspeed_config
        assert isinstance(hf, HfTrainerDeepSpeedConfig) and hf.is_zero3() == (stage == 3)
        cfg = hf.config  # the "auto" values the Trainer filled from the arguments
        assert cfg["train_micro_batch_size_per_gpu"] == 3 and cfg["gradient_accumulation_steps"] == 2
        assert cfg["gradient_clipping"] == 0.5 and cfg["train_batch_size"] == 6  # 3 x 2 x 1 process
        # no optimizer / scheduler of DeepSpeed's own: medvl's per-module learning rates and schedule are used
        assert "optimizer" not in cfg and "scheduler" not in cfg and cfg["zero_allow_untested_optimizer"]


def test_accelerate_yamls_name_only_keys_accelerate_knows(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    options = {o for a in launch_command_parser()._actions for o in a.option_strings}
    files = sorted(CONFIGS.glob("*.yaml"))
    assert {"fsdp.yaml", "accelerate_multi_gpu.yaml", "accelerate_multi_node.yaml"} <= {f.name for f in files}
    for path in files:
        cfg = load_config_from_file(str(path))  # accelerate's own reader: unknown top-level keys raise
        for key in cfg.fsdp_config:  # `accelerate launch` turns fsdp_config.X into its --X option
            assert f"--{key}" in options, (path.name, key)
    fsdp = load_config_from_file(str(CONFIGS / "fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "fsdp.yaml").read_text() + "fsdp_shard_everything: true\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_config_from_file(str(bad))  # the check above can fail


def test_config_keys_pass_deepspeed_and_fsdp_to_the_trainer(tmp_path):
    from medvl.train.config import TrainConfigError, load_config

    base = {"model": "m", "output_dir": "o", "data": ["d.json"], "stages": ["stage1"]}
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))

    def cfg(**kw):
        path = tmp_path / "t.yaml"
        path.write_text(yaml.safe_dump({**base, **kw}))
        return load_config(path)

    assert cfg().engine_args() == {}
    assert cfg(deepspeed="ds.json").engine_args() == {"deepspeed": str(tmp_path / "ds.json")}
    shipped = cfg(deepspeed="zero3").engine_args()["deepspeed"]
    assert Path(shipped).read_text() == (CONFIGS / "deepspeed_zero3.json").read_text()
    fsdp = cfg(fsdp="full_shard auto_wrap", fsdp_config={"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]})
    assert fsdp.engine_args() == {"fsdp": "full_shard auto_wrap",
                                  "fsdp_config": {"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}}
    with pytest.raises(TrainConfigError, match="deepspeed: no such file .*missing.json"):
        cfg(deepspeed="missing.json")
    with pytest.raises(TrainConfigError, match="exclude each other"):
        cfg(deepspeed="zero2", fsdp="full_shard")
