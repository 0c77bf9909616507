"""Issue 10, part 1: text-only sources (MedQA, MedMCQA, CMExam, PubMedQA, ShareGPT / messages dialogue) in their
published layouts become text-only samples that flow through curation (exact and MinHash near-duplicate removal,
official splits), the exports (LLaVA JSON without `image`, messages without images, Parquet with a null image), the
mixture and the card, and that the training data reader loads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medvl.core.records import Reject
from medvl.pipeline.build import run_build
from medvl.pipeline.recipe import parse_recipe
from medvl.sources.base import Unit
from medvl.sources.config import SourceConfig
from medvl.sources.read import get_source

MEDQA = [  # data_clean/questions/US/*.jsonl, as released
    {"question": "A 23-year-old woman presents with fever, dysuria and flank pain. Which organism is most likely?",
     "answer": "Escherichia coli", "options": {"A": "Staphylococcus aureus", "B": "Escherichia coli",
                                               "C": "Proteus mirabilis", "D": "Klebsiella", "E": "Enterococcus"},
     "meta_info": "step1", "answer_idx": "B"},
    {"question": "A 60-year-old man has crushing chest pain radiating to the left arm. What is the first test?",
     "answer": "Electrocardiogram", "options": {"A": "Electrocardiogram", "B": "Chest CT", "C": "Troponin",
                                                "D": "Echocardiogram"}, "meta_info": "step2&3", "answer_idx": "A"},
    {"question": "Which nerve is injured?", "answer": "Radial nerve",
     "options": {"A": "Ulnar nerve", "B": "Median nerve"}, "meta_info": "step1", "answer_idx": "C"},  # bad idx
]
MEDMCQA = [  # {train,dev}.json, JSON lines, cop 1-4 as released
    {"question": "Drug of choice for absence seizures is", "exp": "Ethosuximide is the drug of choice.",
     "cop": 3, "opa": "Phenytoin", "opb": "Carbamazepine", "opc": "Ethosuximide", "opd": "Phenobarbitone",
     "subject_name": "Pharmacology", "topic_name": "Antiepileptics", "id": "e9ad821a-1", "choice_type": "single"},
    {"question": "Most common site of carcinoid tumour is", "exp": None, "cop": 4, "opa": "Stomach",
     "opb": "Colon", "opc": "Rectum", "opd": "Appendix", "subject_name": "Surgery", "topic_name": None,
     "id": "e9ad821a-2", "choice_type": "single"},
]
PQAL = {
    "21645374": {"QUESTION": "Do mitochondria play a role in remodelling lace plant leaves during programmed cell death?",
                 "CONTEXTS": ["Programmed cell death is a process in plants.", "Mitochondria were observed."],
                 "LABELS": ["BACKGROUND", "RESULTS"], "MESHES": ["Mitochondria"], "YEAR": "2011",
                 "reasoning_required_pred": "yes", "reasoning_free_pred": "yes", "final_decision": "yes",
                 "LONG_ANSWER": "Results depict mitochondrial dynamics in vivo as PCD progresses."},
    "16418930": {"QUESTION": "Landolt C and snellen e acuity: differences in strabismus amblyopia?",
                 "CONTEXTS": ["Assessment of visual acuity depends on the optotypes used."], "LABELS": ["BACKGROUND"],
                 "MESHES": [], "YEAR": "2006", "final_decision": "no",
                 "LONG_ANSWER": "Using the charts described, there was only a slight overestimation."},
    "9488747": {"QUESTION": "Syncope during bathing in infants, a pediatric form of water-induced urticaria?",
                "CONTEXTS": ["Apparent life-threatening events in infants are a difficult problem."],
                "LABELS": ["BACKGROUND"], "MESHES": [], "YEAR": "1998", "final_decision": "perhaps",
                "LONG_ANSWER": "Water-induced urticaria may be involved."},  # not yes/no/maybe
}
SHAREGPT = [
    {"id": "d1", "conversations": [
        {"from": "system", "value": "You are a careful physician."},
        {"from": "human", "value": "I have had a headache for three days. Should I worry?"},
        {"from": "gpt", "value": "A headache lasting three days deserves attention. Do you have fever or neck stiffness?"},
        {"from": "human", "value": "No fever, but light hurts my eyes."},
        {"from": "gpt", "value": "Sensitivity to light often accompanies migraine; please see a doctor if it worsens."}]},
    {"id": "d2", "conversations": [{"from": "human", "value": "Hello?"}, {"from": "doctor", "value": "Hi."}]},
    {"id": "d3", "conversations": [{"from": "gpt", "value": "Hi."}, {"from": "human", "value": "Hello"}]},
]
MESSAGES = [
    {"messages": [{"role": "user", "content": "我最近总是咳嗽，夜里更厉害，需要做什么检查？"},
                  {"role": "assistant", "content": "夜间咳嗽加重可能与哮喘或胃食管反流有关，建议先做肺功能检查和胸部X线。"}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}},
                                               {"type": "text", "text": "What is this?"}]},
                  {"role": "assistant", "content": "A rash."}]},
]
CMEXAM_HEADER = ["Question", "Options", "Answer", "Explanation", "Disease Group", "Clinical Department",
                 "Medical Discipline", "Competency", "Difficulty level"]
CMEXAM = [["患者男，45岁，反复上腹痛3年，进食后缓解。最可能的诊断是", "A 胃溃疡\nB 十二指肠溃疡\nC 胃癌\nD 慢性胃炎\nE 胆囊炎",
           "B", "空腹痛、进食后缓解是十二指肠溃疡的典型表现。", "消化系统疾病", "消化内科", "临床医学", "诊断", "中"],
          ["下列哪项不是糖尿病的典型症状", "A 多饮\nB 多尿\nC 多食\nD 体重增加", "Z", "", "", "", "", "", ""]]


def write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text")
    us = root / "medqa" / "data_clean" / "questions" / "US"
    write_jsonl(us / "train.jsonl", MEDQA[:1] + MEDQA[2:])
    (us / "test.jsonl").write_text(json.dumps(MEDQA[1]) + "\n{broken json\n", encoding="utf-8")
    dup = dict(MEDMCQA[0], id="e9ad821a-9", question="Drug of choice for ABSENCE seizures is:")  # exact dup
    near = dict(MEDMCQA[1], id="e9ad821a-10", question="The most common site of carcinoid tumour is")
    write_jsonl(root / "medmcqa" / "train.json", MEDMCQA + [dup, near])
    hub = [dict(r, cop=r["cop"] - 1) for r in MEDMCQA]  # the Hugging Face copy: cop 0-3
    write_jsonl(root / "medmcqa_hub" / "validation.json",
                hub + [dict(MEDMCQA[0], id="e9ad821a-3", question="Drug of choice for status epilepticus", cop=0)])
    write_jsonl(root / "medmcqa_ambiguous" / "dev.json", hub)  # cops 2 and 3 only: either convention
    write_jsonl(root / "medmcqa_test" / "test.json", [dict(MEDMCQA[0], cop=-1)])
    (root / "pubmedqa").mkdir()
    (root / "pubmedqa" / "ori_pqal.json").write_text(json.dumps(PQAL), encoding="utf-8")
    (root / "pubmedqa" / "test_ground_truth.json").write_text(json.dumps({"16418930": "no"}), encoding="utf-8")
    write_jsonl(root / "dialogue" / "sharegpt_train.jsonl", SHAREGPT)
    (root / "dialogue" / "messages.json").write_text(json.dumps(MESSAGES, ensure_ascii=False), encoding="utf-8")
    (root / "cmexam").mkdir()
    with open(root / "cmexam" / "train.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CMEXAM_HEADER)
        w.writerows(CMEXAM)
    return root


def items(fmt: str, path: Path, **options) -> tuple[list, list[Reject]]:
    src = get_source(SourceConfig(name=path.name, format=fmt, path=str(path), options=options))
    got, rejects = [], []
    for u in src.units():
        if isinstance(u, Reject):
            rejects.append(u)
            continue
        for obj in src.load_text(u):
            (rejects if isinstance(obj, Reject) else got).append(obj)
    return got, rejects


def test_medqa_layout(data):
    got, rejects = items("mcq_jsonl", data / "medqa")
    assert [(i.split, i.meta["answer"]) for i in got] == [("test", "A"), ("train", "B")]
    train = got[1]
    assert train.turns[0][1].endswith("E. Enterococcus") and train.turns[1][1] == "The answer is B. Escherichia coli."
    assert train.lang == "en" and train.task == "qa" and train.meta["meta_info"] == "step1"
    reasons = sorted(r.reason for r in rejects)
    assert any("test.jsonl line 2: not valid JSON" in r for r in reasons)
    assert any("answer_idx 'C' is not one of the options" in r for r in reasons)


def test_medmcqa_cop_conventions_and_hidden_test_answers(data):
    got, _ = items("mcq_jsonl", data / "medmcqa")
    assert [i.meta["answer"] for i in got[:2]] == ["C", "D"]  # cop 1-4 detected (a 4 is present)
    assert got[0].turns[1][1] == "The answer is C. Ethosuximide.\nExplanation: Ethosuximide is the drug of choice."
    assert got[1].turns[1][1] == "The answer is D. Appendix."  # exp null: no explanation
    hub, _ = items("mcq_jsonl", data / "medmcqa_hub")
    assert [i.meta["answer"] for i in hub] == ["C", "D", "A"] and {i.split for i in hub} == {"val"}  # 0-3 detected
    test, rejects = items("mcq_jsonl", data / "medmcqa_test")
    assert not test and "answers are not released" in rejects[0].reason
    ambiguous, rej = items("mcq_jsonl", data / "medmcqa_ambiguous")
    assert not ambiguous and "set options.cop_base" in rej[0].reason
    forced, _ = items("mcq_jsonl", data / "medmcqa_ambiguous", cop_base=0)
    assert [i.meta["answer"] for i in forced] == ["C", "D"]


def test_cmexam_chinese_exam(data):
    got, rejects = items("mcq_jsonl", data / "cmexam")
    [q] = got
    assert q.lang == "zh" and q.meta["answer"] == "B" and q.meta["Clinical Department"] == "消化内科"
    assert q.turns[0][1].endswith("E. 胆囊炎") and q.turns[1][1].startswith("答案是 B. 十二指肠溃疡\n解析：")
    assert "Answer 'Z' is not among the options" in rejects[0].reason


def test_pubmedqa_layout_and_official_test_split(data):
    got, rejects = items("pubmedqa", data / "pubmedqa")
    by = {i.key: i for i in got}
    assert by["16418930"].split == "test" and by["21645374"].split == "train"
    user, answer = by["21645374"].turns[0][1], by["21645374"].turns[1][1]
    assert user.startswith("Context:\nBackground: Programmed cell death") and user.endswith("cell death?")
    assert answer.endswith("\nAnswer: yes")
    assert "final_decision 'perhaps' is not yes/no/maybe" in rejects[0].reason


def test_conversations_roles_validated_and_normalized(data):
    got, rejects = items("conversations", data / "dialogue")
    by = {i.key: i for i in got}
    d1 = by["d1"]
    assert [r for r, _ in d1.turns] == ["user", "assistant", "user", "assistant"]
    assert d1.meta["system"] == "You are a careful physician." and d1.split == "train" and d1.task == "dialogue"
    zh = next(i for i in got if i.key != "d1")
    assert zh.lang == "zh" and zh.split is None
    reasons = " | ".join(r.reason for r in rejects)
    assert "unknown role 'doctor'" in reasons and "expected a user turn, got assistant" in reasons
    assert "holds an image" in reasons


@pytest.fixture(scope="module")
def build(data, tmp_path_factory):
    from medvl.demo import corpus as demo

    root = tmp_path_factory.mktemp("textbuild")
    (root / "corpus").mkdir()
    demo.write_ihc(root / "corpus", tile=128, stride=128)
    r = demo.demo_recipe()
    r["sources"] = [s for s in r["sources"] if s["path"] == "corpus/ihc_tiles"]
    r["sources"][0]["path"] = str(root / "corpus" / "ihc_tiles")
    r["sources"] += [{"name": "medqa", "format": "mcq_jsonl", "path": str(data / "medqa")},
                     {"name": "medmcqa", "format": "mcq_jsonl", "path": str(data / "medmcqa")},
                     {"name": "pubmedqa", "format": "pubmedqa", "path": str(data / "pubmedqa")},
                     {"name": "dialogue", "format": "conversations", "path": str(data / "dialogue")}]
    r["generation"] = {"kinds": {"caption": 1}, "languages": ["en"]}
    r["exports"] = ["llava", "messages", "parquet", "mixture", "card"]
    r["export_options"] = {"mixture": {"text_share": 0.3}}
    return run_build(parse_recipe(r), root / "out", workers=1)


def test_text_samples_flow_through_curation_and_exports(build):
    out = build.out_dir
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    text = [s for s in samples if s["kind"] == "text"]
    ids = {s["id"] for s in text}
    assert "text#qa#medqa#test#medqa-1" not in ids and any(i.startswith("text#qa#medqa#test#") for i in ids)
    assert "text#qa#pubmedqa#test#16418930" in ids and "text#dialogue#dialogue#train#d1" in ids
    assert all(s["images"] == [] and s["record_id"] is None for s in text)
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    dedup = [r for r in rejects if r["stage"] == "dedup" and r["source"] == "medmcqa"]
    assert len(dedup) == 2 and any("same text as text#qa#medmcqa" in r["reason"] for r in dedup)
    assert any("near-duplicate of text#qa#medmcqa" in r["reason"] for r in dedup)
    summary = build.summary
    assert summary["text_only"]["samples"] == len(text) and summary["samples_by_kind"]["text"] == len(text)
    assert summary["text_only"]["duplicates_dropped"] == 2
    assert summary["sources"]["medqa"]["units"] == 2  # two data files
    llava = {x["id"]: x for split in ("train", "val", "test") if (out / "llava" / f"{split}.json").is_file()
             for x in json.loads((out / "llava" / f"{split}.json").read_text())}
    d1 = llava["text#dialogue#dialogue#train#d1"]
    assert "image" not in d1 and "<image>" not in json.dumps(d1) and len(d1["conversations"]) == 4
    msgs = [json.loads(x) for x in (out / "messages" / "train.jsonl").read_text().splitlines()]
    assert next(m for m in msgs if m["id"] == d1["id"])["images"] == []
    import pyarrow.parquet as pq

    table = pq.read_table(next((out / "parquet").glob("test-*.parquet"))).to_pylist()
    row = next(t for t in table if t["id"] == "text#qa#pubmedqa#test#16418930")
    assert row["image"] is None
    mixture = json.loads((out / "mixture.json").read_text())
    text_ds = {"medqa", "medmcqa", "pubmedqa", "dialogue"} & set(mixture)
    weight = {k: v["sample_ratio"] * v["length"] for k, v in mixture.items()}
    share = sum(weight[k] for k in text_ds) / sum(weight.values())
    assert text_ds and share == pytest.approx(0.3, abs=1e-4)  # the recipe's text share of the stage-III mixture
    card = (out / "dataset_card.md").read_text()
    assert "Text-only samples" in card
    totals = json.loads((out / "manifest.json").read_text())["samples_by_format_and_split"]
    assert totals["mixture-json"] == totals["llava-json"] == totals["messages-jsonl"]  # each row counted once


def test_the_training_reader_loads_text_only_samples(build):
    from medvl.train.data import load_training_data

    convs, rejects = load_training_data([str(build.out_dir / "llava" / "train.json")])
    text = [c for c in convs if c.id.startswith("text#")]
    assert text and all(not c.images for c in text) and not rejects


def test_the_contamination_audit_finds_a_benchmark_question_in_text_only_data(tmp_path):
    """A MedXpertQA question pasted into a dialogue dataset is found by `medvl audit` (n-gram overlap)."""
    from eval_fixtures import MEDXPERTQA_ROWS, write_medxpertqa

    from medvl.curate.audit import load_benchmark, load_train, run_audit

    bench = write_medxpertqa(tmp_path / "bench")
    _, stem, opts, *_ = MEDXPERTQA_ROWS[2]
    stem = stem + "\nAnswer Choices: " + " ".join(f"({L}) {t}" for L, t in zip("ABCDE", opts))  # as published
    write_jsonl(tmp_path / "chat" / "train.jsonl", [
        {"id": "leak", "messages": [{"role": "user", "content": f"Quiz time. {stem} Think it through."},
                                    {"role": "assistant", "content": "HER2 is stained."}]},
        {"id": "clean", "messages": [{"role": "user", "content": "How long does a cold usually last?"},
                                     {"role": "assistant", "content": "About a week to ten days."}]}])
    r = {"name": "t", "seed": 0, "salt": "s", "workers": 1,
         "sources": [{"name": "chat", "format": "conversations", "path": str(tmp_path / "chat")}],
         "curation": {"splits": {"train": 1.0}}, "exports": ["llava"]}
    b = run_build(parse_recipe(r), tmp_path / "out", workers=1)
    assert b.summary["text_only"]["samples"] == 2 and b.summary["records"] == 0
    result = run_audit(load_train(b.out_dir), [load_benchmark("medxpertqa", bench)])
    hits = {h["train_record"] for h in result.text_overlaps}
    assert any("text#dialogue#chat#train#leak" in h for h in hits), result.text_overlaps
    assert not any("#clean" in h for h in hits)


def test_a_build_killed_in_the_text_step_resumes_to_the_same_outputs(data, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    import yaml
    from build_helpers import tree

    r = {"name": "t", "seed": 0, "salt": "s", "workers": 1,
         "sources": [{"name": "medqa", "format": "mcq_jsonl", "path": str(data / "medqa")},
                     {"name": "pubmedqa", "format": "pubmedqa", "path": str(data / "pubmedqa")},
                     {"name": "dialogue", "format": "conversations", "path": str(data / "dialogue")}],
         "exports": ["llava", "messages", "mixture", "card"]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))

    def cli(out, *extra, env=None):
        return subprocess.run([sys.executable, "-c", "from medvl.cli.main import main; main()", "build", str(path),
                               "-o", str(out), *extra], capture_output=True, text=True, timeout=300,
                              env={**os.environ, **(env or {})})

    assert cli(tmp_path / "ref").returncode == 0
    killed = cli(tmp_path / "out", env={"MEDVL_FAILPOINT": "text/@2"})
    assert killed.returncode == -signal.SIGKILL
    done = cli(tmp_path / "out", "--resume")
    assert done.returncode == 0, done.stderr[-1500:]
    assert tree(tmp_path / "out") == tree(tmp_path / "ref")
