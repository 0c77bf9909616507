"""Training behaviour on a tiny random model and a small real medvl corpus (demo X-ray + IHC build): freezing,
per-module learning rates and the schedule, the loss mask, packing without cross-sample attention, exact
resume, the frozen-tower feature cache, truncation and rejects. Runs are a few optimizer steps each."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from train_helpers import TEXT_ONLY, corpus_json, cosine_with_warmup, metrics, tiny_init, weights  # noqa: E402
from train_helpers import one_torch_thread, write_config  # noqa: E402,F401

from medvl.train.config import TrainConfigError, load_config  # noqa: E402
from medvl.train.run import run  # noqa: E402

MAX_LENGTH = 256
LORA_R = 4
# the three stages as a user would write them: presets with a few overrides (distinct per-module rates so a
# group carrying another module's rate shows; warmup long enough to see; weight decay to split groups)
STAGE1 = {"preset": "stage1", "max_steps": 4, "batch_size": 2, "warmup_ratio": 0.5, "save_steps": 2}
STAGE2 = {"preset": "stage2", "max_steps": 3, "batch_size": 2, "warmup_ratio": 0.0, "weight_decay": 0.1,
          "lr": {"projector": 2e-4, "vision": 1e-4}}
STAGE3 = {"preset": "stage3", "max_steps": 4, "batch_size": 2, "warmup_ratio": 0.25, "save_steps": 2,
          "lora": {"r": LORA_R, "dropout": 0.1}, "lr": {"projector": 2e-4, "vision": 1e-4, "lm": 1e-3}}


class Interrupted(Exception):
    """Stands for a killed process in the resume tests."""


def _module(key: str) -> str:
    return "projector" if "multi_modal_projector" in key else "vision" if "vision_tower" in key else "lm"


def _split(before: dict, after: dict) -> dict[str, tuple[int, int]]:
    """Per module: (tensors bit-identical, tensors changed)."""
    assert set(before) == set(after)
    out: dict[str, list[int]] = {}
    for k in before:
        same = torch.equal(before[k], after[k])
        counts = out.setdefault(_module(k), [0, 0])
        counts[0 if same else 1] += 1
    return {m: tuple(c) for m, c in out.items()}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def data(base) -> Path:
    return corpus_json(base, every_kind=True)


@pytest.fixture(scope="module")
def init(base) -> Path:
    return tiny_init(base)


@pytest.fixture(scope="module")
def recipe(base, data, init) -> dict:
    """The whole recipe run once: stage1 (feature cache on), stage2, stage3 with LoRA."""
    logs: list[str] = []
    cfg = write_config(base / "recipe" / "train.yaml", model=init, data=data, stages=[STAGE1, STAGE2, STAGE3],
                       feature_cache_dir=str(base / "features"))
    results = run(load_config(cfg), log=logs.append)
    return {"dir": base / "recipe" / "run", "logs": logs, "results": results, "config": cfg}


# ------------------------------------------------------------------------------------------------ freezing

def test_stage1_changes_only_the_projector(recipe, init):
    split = _split(weights(init), weights(recipe["dir"] / "stage1" / "final"))
    assert split["vision"][1] == 0 and split["lm"][1] == 0, split
    assert split["projector"] == (0, 4), split  # both linear layers' weights and biases moved


def test_stage1_with_the_tower_in_the_forward_still_freezes_it(cache_off, init):
    """Without the cache the tower runs every step: it and the LM must still not move."""
    split = _split(weights(init), weights(cache_off["dir"] / "stage1" / "final"))
    assert split["vision"][1] == 0 and split["lm"][1] == 0 and split["projector"] == (0, 4), split


def test_stage2_freezes_the_lm_and_trains_tower_and_projector(recipe):
    split = _split(weights(recipe["dir"] / "stage1" / "final"), weights(recipe["dir"] / "stage2" / "final"))
    assert split["lm"][1] == 0, split
    assert split["projector"] == (0, 4), split
    assert split["vision"][1] >= split["vision"][0], split  # most tower tensors moved


def test_lora_stage_changes_the_lm_only_through_merged_low_rank_adapters(recipe):
    from transformers import LlavaForConditionalGeneration

    final = recipe["dir"] / "stage3" / "final"
    before, after = weights(recipe["dir"] / "stage2" / "final"), weights(final)
    assert not [k for k in after if "lora" in k or "base_layer" in k]
    _, info = LlavaForConditionalGeneration.from_pretrained(final, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for k in before:
        if _module(k) != "lm":
            continue
        if any(f".{t}." in k for t in targets):
            delta = (after[k] - before[k]).double()
            s = torch.linalg.svdvals(delta)
            assert s[0] > 0, k  # the adapter learned something ...
            assert s[LORA_R] < 1e-4 * s[0], (k, s[:LORA_R + 2])  # ... of rank <= r
        else:  # norms and embeddings are not adapted
            assert torch.equal(before[k], after[k]), k
    split = _split(before, after)
    assert split["projector"] == (0, 4) and split["vision"][1] > 0, split


# ------------------------------------------------------------------------------------------- learning rates

def test_param_groups_carry_each_modules_rate_and_leave_frozen_modules_out(init):
    from medvl.train.config import ModuleLR
    from medvl.train.run import load_model
    from medvl.train.trainer import apply_freezing, param_groups

    model, _ = load_model(init)
    lr = ModuleLR(projector=3e-4, vision=0.0, lm=2e-5)
    apply_freezing(model, lr)
    groups = {g["name"]: g for g in param_groups(model, lr, weight_decay=0.1)}
    assert set(groups) == {"projector", "projector_no_decay", "lm", "lm_no_decay"}
    names = {id(p): n for n, p in model.named_parameters()}
    for name, g in groups.items():
        module = name.removesuffix("_no_decay")
        assert g["lr"] == getattr(lr, module)
        assert g["weight_decay"] == (0.0 if name.endswith("_no_decay") else 0.1)
        for p in g["params"]:
            n = names[id(p)]
            assert ("multi_modal_projector" in n) == (module == "projector") and "vision_tower" not in n
            assert (p.dim() == 1 or "embed_tokens" in n) == name.endswith("_no_decay"), n
    grouped = {id(p) for g in groups.values() for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("stage,modules", [(STAGE1, ["projector"]), (STAGE2, ["projector", "vision"]),
                                           (STAGE3, ["projector", "vision", "lm"])], ids=["stage1", "stage2", "stage3"])
def test_logged_group_rates_follow_cosine_with_warmup(recipe, stage, modules):
    """metrics.jsonl ``lr_groups`` at step s = the rate the optimizer used for step s, per group."""
    name = stage["preset"]
    cfg = load_config(recipe["config"]).stage(name)
    total, warmup = stage["max_steps"], math.ceil(stage["warmup_ratio"] * stage["max_steps"])
    lines = [m for m in metrics(recipe["dir"] / name) if "loss" in m]
    assert [m["step"] for m in lines] == list(range(1, total + 1))
    for m in lines:
        groups = m["lr_groups"]
        assert {g.removesuffix("_no_decay") for g in groups} == set(modules), groups
        for g, value in groups.items():
            want = cosine_with_warmup(m["step"] - 1, getattr(cfg.lr, g.removesuffix("_no_decay")), total, warmup)
            assert value == pytest.approx(want, rel=1e-9, abs=1e-15), (name, m["step"], g)


# ------------------------------------------------------------------------------------ loss mask, text-only

@pytest.fixture(scope="module")
def tokenized(data, init):
    from transformers import AutoProcessor

    from medvl.model.assemble import image_tokens_per_image
    from medvl.train.data import load_training_data
    from medvl.train.tokenize import tokenize_all

    processor = AutoProcessor.from_pretrained(init)
    convs, _ = load_training_data([str(data)])
    tok = processor.tokenizer
    kw = dict(chat_template=processor.chat_template, image_token_id=tok.convert_tokens_to_ids("<image>"),
              n_image_tokens=image_tokens_per_image(processor), max_length=MAX_LENGTH)
    samples, _, _ = tokenize_all(convs, tok, **kw)
    return {"convs": {c.id: c for c in convs}, "samples": samples, "processor": processor, "kw": kw}


def _label_runs(tok, labels: list[int]) -> list[str]:
    runs, cur = [], []
    for t in labels + [-100]:
        if t != -100:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    return runs


def test_only_answers_and_their_end_tokens_carry_labels(tokenized):
    tok = tokenized["processor"].tokenizer
    multi = [s for s in tokenized["samples"] if len(tokenized["convs"][s.id].messages) >= 4 and not s.truncated]
    assert multi, "the demo corpus has multi-turn conversations"
    for s in multi + [s for s in tokenized["samples"][:5] if not s.truncated]:
        answers = [m["content"] for m in tokenized["convs"][s.id].messages if m["role"] == "assistant"]
        assert _label_runs(tok, s.labels) == [a + "<|im_end|>" for a in answers]
        # labelled positions hold the input token there (the model shifts them itself)
        assert all(l == i for l, i in zip(s.labels, s.input_ids) if l != -100)


def test_changing_the_question_changes_no_label(tokenized):
    import dataclasses

    from medvl.train.tokenize import tokenize_conversation

    tok = tokenized["processor"].tokenizer
    conv = next(c for c in tokenized["convs"].values() if c.images and len(c.messages) == 2)
    question = conv.messages[0]["content"]
    other = dataclasses.replace(conv, messages=[{"role": "user", "content": question + " Please answer briefly."},
                                                conv.messages[1]])
    a = tokenize_conversation(conv, tok, **tokenized["kw"])
    b = tokenize_conversation(other, tok, **tokenized["kw"])
    assert a.input_ids != b.input_ids

    def labelled_from_end(s):  # (distance from the end, label) of every labelled position
        return [(len(s.labels) - i, t) for i, t in enumerate(s.labels) if t != -100]

    assert labelled_from_end(a) == labelled_from_end(b)
    assert _label_runs(tok, b.labels) == [conv.messages[1]["content"] + "<|im_end|>"]


def _model_inputs(items, processor):
    from medvl.train.trainer import Collator

    return Collator(processor.tokenizer.pad_token_id, processor.image_processor)(items)


def _token_losses(model, batch) -> torch.Tensor:
    """Per-token cross-entropy of every labelled position (sum over the batch), independent of the model's loss."""
    inputs = {k: v for k, v in batch.items() if k not in ("n_tokens", "n_samples")}
    labels = inputs.pop("labels")
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits.double()
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    mask = shift_labels != -100
    return torch.nn.functional.cross_entropy(shift_logits[mask], shift_labels[mask], reduction="sum")


def test_text_only_batch_has_no_pixels_and_trains(tokenized, init):
    from medvl.train.packing import PackedDataset
    from medvl.train.run import load_model

    text = [s for s in tokenized["samples"] if not s.images]
    assert len(text) == len(TEXT_ONLY)
    batch = _model_inputs([PackedDataset(text, MAX_LENGTH, seed=0)[0]], tokenized["processor"])
    assert "pixel_values" not in batch and "image_features" not in batch
    model, _ = load_model(init)
    model.train()
    inputs = {k: v for k, v in batch.items() if k not in ("n_tokens", "n_samples")}
    out = model(**inputs, use_cache=False)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.model.language_model.embed_tokens.weight.grad.abs().sum() > 0


def test_a_stage_whose_batches_are_all_text_only_runs(base, init):
    """Stage I on text-only data: nothing it trains is used by the loss; the step must run and move nothing."""
    path = base / "text_only" / "text.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(TEXT_ONLY))
    cfg = write_config(base / "text_only" / "train.yaml", model=init, data=path,
                       stages=[{"preset": "stage1", "max_steps": 2, "batch_size": 1, "warmup_ratio": 0.0}])
    run(load_config(cfg), log=lambda _: None)
    lines = [m for m in metrics(base / "text_only" / "run" / "stage1") if "loss" in m]
    assert len(lines) == 2 and all(math.isfinite(m["loss"]) for m in lines)
    split = _split(weights(init), weights(base / "text_only" / "run" / "stage1" / "final"))
    assert all(changed == 0 for _, changed in split.values()), split


# ------------------------------------------------------------------------------------------------- packing

def test_packed_and_unpacked_losses_are_equal(tokenized, init):
    from medvl.train.packing import PackedDataset
    from medvl.train.run import load_model

    model, processor = load_model(init)
    model.eval()
    samples = [s for s in tokenized["samples"] if s.images][:3] + [s for s in tokenized["samples"] if not s.images][:1]
    packs = PackedDataset(samples, max_length=4 * MAX_LENGTH, seed=0, packed=True)
    assert len(packs) == 1 and packs[0]["n_samples"] == 4
    singles = PackedDataset(samples, max_length=4 * MAX_LENGTH, seed=0, packed=False)
    packed = _token_losses(model, _model_inputs([packs[0]], processor))
    alone = sum(_token_losses(model, _model_inputs([singles[i]], processor)) for i in range(len(singles)))
    assert packed.item() == pytest.approx(alone.item(), rel=1e-5)
    # the model's own loss over the pack is the token mean of the same terms
    batch = _model_inputs([packs[0]], processor)
    n_labels = int((batch["labels"][:, 1:] != -100).sum())
    inputs = {k: v for k, v in batch.items() if k not in ("n_tokens", "n_samples")}
    with torch.no_grad():
        loss = model(**inputs, use_cache=False).loss
    assert loss.item() == pytest.approx(packed.item() / n_labels, rel=1e-5)


def test_no_attention_crosses_samples_in_a_pack(tokenized, init):
    """Changing the first sample of a pack leaves the second one's logits as they are when it runs alone."""
    from medvl.train.packing import collate_packs
    from medvl.train.run import load_model

    model, processor = load_model(init)
    model.eval()
    a, b = [s for s in tokenized["samples"] if not s.images][:2]
    pad = processor.tokenizer.pad_token_id

    def logits(*seqs):
        item = {"input_ids": sum((s for s in seqs), []), "labels": sum(([-100] * len(s) for s in seqs), []),
                "position_ids": sum((list(range(len(s))) for s in seqs), []), "images": []}
        batch = collate_packs([item], pad)
        with torch.no_grad():
            return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]

    changed = list(a.input_ids)
    changed[3:6] = reversed(changed[3:6])
    assert changed != a.input_ids
    alone = logits(b.input_ids)
    n = len(b.input_ids)
    after_a = logits(a.input_ids, b.input_ids)[-n:]
    after_changed = logits(changed, b.input_ids)[-n:]
    assert torch.allclose(after_a, alone, rtol=0, atol=1e-5), (after_a - alone).abs().max()
    # (and, causally, the first sample's logits do not depend on what follows it)
    assert torch.allclose(logits(a.input_ids, b.input_ids)[:len(a.input_ids)], logits(a.input_ids), rtol=0, atol=1e-5)
    assert torch.allclose(after_changed, alone, rtol=0, atol=1e-5)
    # ... while without per-sample positions the same pack would mix them (the check can fail)
    item = {"input_ids": a.input_ids + b.input_ids}
    with torch.no_grad():
        mixed = model(input_ids=torch.tensor([item["input_ids"]]), use_cache=False).logits[0][-n:]
    assert not torch.allclose(mixed, alone, rtol=0, atol=1e-3)


# -------------------------------------------------------------------------------------------- feature cache

@pytest.fixture(scope="module")
def cache_off(base, data, init) -> dict:
    """Stage I exactly as the recipe's, encoding images on the fly."""
    cfg = write_config(base / "cache_off" / "train.yaml", model=init, data=data,
                       stages=[{**STAGE1, "feature_cache": "off"}])
    run(load_config(cfg), log=lambda _: None)
    return {"dir": base / "cache_off" / "run"}


def test_feature_cache_gives_the_same_losses_as_encoding_on_the_fly(recipe, cache_off):
    on = [m for m in metrics(recipe["dir"] / "stage1") if "loss" in m]
    off = [m for m in metrics(cache_off["dir"] / "stage1") if "loss" in m]
    assert [m["step"] for m in on] == [m["step"] for m in off] == [1, 2, 3, 4]
    for a, b in zip(on, off):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-6), (a, b)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5), (a, b)
    wa, wb = weights(recipe["dir"] / "stage1" / "final"), weights(cache_off["dir"] / "stage1" / "final")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=1e-6), k
    assert json.loads((cache_off["dir"] / "stage1" / "stage.json").read_text())["feature_cache"] is None


def test_feature_cache_is_keyed_by_tower(recipe, base, init):
    from medvl.train.features import tower_key
    from medvl.train.run import load_model

    stage1_key = json.loads((recipe["dir"] / "stage1" / "stage.json").read_text())["feature_cache"]
    assert (base / "features" / stage1_key).is_dir()
    n_images = len({p.name for p in (base / "features" / stage1_key).rglob("*.npy")})
    assert any(f"{n_images} images encoded" in line for line in recipe["logs"])
    keys = {}
    for name, folder in (("init", init), ("stage1", recipe["dir"] / "stage1" / "final"),
                         ("stage2", recipe["dir"] / "stage2" / "final")):
        model, processor = load_model(folder)
        keys[name] = tower_key(model, processor.image_processor)
    assert keys["init"] == keys["stage1"] == stage1_key  # stage I leaves the tower as it was
    assert keys["stage2"] != keys["init"]  # stage II trained it: its features are other files
    model.config.vision_feature_layer = -1
    assert tower_key(model, processor.image_processor) != keys["stage2"]


# ---------------------------------------------------------------------------------- truncation and rejects

def test_truncation_is_counted_and_rejects_are_listed(recipe, data, init):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(init)
    n_image_tokens = json.loads((init / "medvl_model.json").read_text())["image_tokens"]
    items = json.loads(data.read_text())
    rejected = {"overlong-question", "missing-image", "two-placeholders"}
    roles = {"human": "user", "gpt": "assistant"}
    too_long = 0
    for it in items:
        if it["id"] in rejected:
            continue
        messages = [{"role": roles[t["from"]], "content": t["value"]} for t in it["conversations"]]
        if "image" in it and "<image>" not in messages[0]["content"]:
            messages[0]["content"] = "<image>\n" + messages[0]["content"]
        n = len(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
        too_long += n + (n_image_tokens - 1) * ("image" in it) > MAX_LENGTH
    assert too_long >= 1  # the overlong answer at least
    for name in ("stage1", "stage2", "stage3"):
        state = json.loads((recipe["dir"] / name / "stage.json").read_text())
        assert state["status"] == "done"
        assert state["tokenize"]["truncated"] == too_long
        assert state["conversations"] == len(items) and state["rejected"] == len(rejected)
        assert state["tokenize"]["kept"] + len(rejected) == len(items)
        assert state["tokenize"]["text_only"] == len(TEXT_ONLY)
        lines = [json.loads(x) for x in (recipe["dir"] / name / "rejects.jsonl").read_text().splitlines()]
        by_item = {r["item"].rsplit(": ", 1)[-1] if ": " in r["item"] else r["item"]: r["reason"] for r in lines}
        assert set(by_item) == rejected, by_item
        assert "no answer left" in by_item["overlong-question"]
        assert "not found" in by_item["missing-image"] and "placeholder" in by_item["two-placeholders"]
    assert any(f"{too_long} truncated to {MAX_LENGTH} tokens" in line for line in recipe["logs"])


# --------------------------------------------------------------------------------------------------- resume

def _interrupt_after_step(monkeypatch, step: int) -> None:
    """Kill the run (raise) right after step ``step`` is logged, as a crash between checkpoints would."""
    from medvl.train import trainer

    original = trainer.MetricsLog.on_log

    def on_log(self, args, state, control, logs=None, **kw):
        original(self, args, state, control, logs=logs, **kw)
        if state.global_step == step and logs and "loss" in logs:
            raise Interrupted(step)

    monkeypatch.setattr(trainer.MetricsLog, "on_log", on_log)


def _resume_case(base: Path, name: str, model: Path, data: Path, stage: dict, monkeypatch) -> tuple[Path, list]:
    cfg = write_config(base / name / "train.yaml", model=model, data=data, stages=[stage],
                       feature_cache_dir=str(base / "features"))
    logs: list[str] = []
    with monkeypatch.context() as m:
        _interrupt_after_step(m, 3)
        with pytest.raises(Interrupted):
            run(load_config(cfg), log=logs.append)
    stage_dir = base / name / "run" / stage["preset"]
    assert json.loads((stage_dir / "stage.json").read_text())["status"] == "running"
    assert sorted(p.name for p in (stage_dir / "checkpoints").iterdir()) == ["checkpoint-2"]
    with pytest.raises(TrainConfigError, match="holds an earlier run; pass --resume"):
        run(load_config(cfg))  # neither --resume nor --overwrite
    run(load_config(cfg), resume=True, log=logs.append)
    return stage_dir, logs


def test_resume_equals_uninterrupted_training(recipe, base, data, init, monkeypatch):
    """Stage I killed after step 3 (last checkpoint: step 2), resumed: same weights and losses as straight."""
    stage_dir, logs = _resume_case(base, "resume1", init, data, STAGE1, monkeypatch)
    # the recipe's stage I filled the shared feature cache: neither this run nor its resumption encodes an image
    assert [line.split(": ")[-1].split(" images")[0] for line in logs if "images encoded" in line] == ["0", "0"]
    straight = recipe["dir"] / "stage1"
    a, b = weights(straight / "final"), weights(stage_dir / "final")
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    ma = [(m["step"], m["loss"]) for m in metrics(straight) if "loss" in m]
    mb = [(m["step"], m["loss"]) for m in metrics(stage_dir) if "loss" in m]
    assert mb == ma  # every step once, with the same loss


def test_resume_of_a_lora_stage_equals_uninterrupted_training(recipe, base, data, monkeypatch):
    """Stage III (LoRA with dropout, tower and projector learning) run alone from stage II's output, killed and
    resumed, ends where the recipe's uninterrupted stage III ended: adapters, projector, tower, RNG all restored,
    and the adapters' initialisation depends on the seed only, not on what the process did before."""
    torch.manual_seed(1234)  # this process ran other things than the recipe's did before its stage III
    stage_dir, _ = _resume_case(base, "resume3", recipe["dir"] / "stage2" / "final", data, STAGE3, monkeypatch)
    a, b = weights(recipe["dir"] / "stage3" / "final"), weights(stage_dir / "final")
    bad = [k for k in a if not torch.allclose(a[k], b[k], rtol=0, atol=1e-7)]
    assert not bad, bad[:5]
    ma = [(m["step"], m["loss"]) for m in metrics(recipe["dir"] / "stage3") if "loss" in m]
    mb = [(m["step"], m["loss"]) for m in metrics(stage_dir) if "loss" in m]
    assert [s for s, _ in mb] == [s for s, _ in ma]
    assert [x for _, x in mb] == pytest.approx([x for _, x in ma], rel=1e-6)


def test_resume_with_a_changed_config_is_refused_naming_the_key(base, data, init, monkeypatch):
    cfg = write_config(base / "changed" / "train.yaml", model=init, data=data, stages=[STAGE1],
                       feature_cache_dir=str(base / "features"))
    with monkeypatch.context() as m:
        _interrupt_after_step(m, 1)
        with pytest.raises(Interrupted):
            run(load_config(cfg), log=lambda _: None)
    changed = write_config(base / "changed" / "train.yaml", model=init, data=data,
                           stages=[{**STAGE1, "lr": {"projector": 5e-4}}], feature_cache_dir=str(base / "features"))
    with pytest.raises(TrainConfigError, match=r"stage\.lr\.projector: 0\.001 -> 0\.0005"):
        run(load_config(changed), resume=True)
