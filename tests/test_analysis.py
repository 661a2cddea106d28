"Analysis on a real (tiny) run: per-clip stage-3 predictions reproduce the run's metrics; statistics on generated data."
import json

import numpy as np
import pandas as pd
import pytest
import torch
from statsmodels.stats.multitest import multipletests

from ssl_mepr.analysis import (adjust_pvalues, collect_metrics, emotion_trait_correlations, latent_truth_frame,
                               plot_correlation_heatmap, plot_ols_coefficients, results_table, stage3_predictions,
                               trait_on_emotion_ols, traits_by_dominant_emotion)
from ssl_mepr.labels import EMOTIONS, PRESENT_EMOTIONS, TRAITS
from ssl_mepr.run import run_spec
from ssl_mepr.stages import prediction_metrics, run_stages, split_rows, label_tensors
from ssl_mepr.training import TensorData


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    "A three-stage run on the tiny demo, face only, one epoch per stage (a few seconds)."
    root = tmp_path_factory.mktemp("runs")
    spec = run_spec(run_name="tiny", runs_root=root, demo_size="tiny", modalities=("face",), model_width=16, max_layers=1,
                    stage1_epochs=1, stage2_epochs=1, stage3_epochs=1, progress=False)
    run_stages(spec, 3)
    return root, spec


def test_collect_metrics_reads_every_stage(tiny_run):
    root, spec = tiny_run
    tidy = collect_metrics(root)
    models = set(map(tuple, tidy[["stage", "modality", "task"]].drop_duplicates().values.tolist()))
    assert models == {("stage1", "face", "emotion"), ("stage1", "face", "personality"), ("stage2", "face", "both"),
                      ("stage3", "fusion", "both")}
    saved = json.loads((spec.run_dir / "stage3" / "metrics.json").read_text())
    mine = tidy[(tidy.stage == "stage3") & (tidy.split == "test")].set_index("metric").value
    assert mine.to_dict() == pytest.approx(saved["test"])
    assert results_table(tidy).loc[("tiny", "stage3", "fusion", "both"), "mean_combo"] == pytest.approx(saved["test"]["mean_combo"])


def test_stage3_predictions_reproduce_the_run_metrics(tiny_run):
    _, spec = tiny_run
    clips = stage3_predictions(spec.run_dir)
    manifest = spec.manifest
    for split in ("dev", "test"):
        part = clips[clips.split == split]
        rows = pd.concat([split_rows(manifest, c, split) for c in ("mosei", "fiv2")])
        assert part.clip_id.tolist() == rows.clip_id.tolist()
        np.testing.assert_allclose(part[[f"y_{e}" for e in EMOTIONS]].to_numpy(), rows[list(EMOTIONS)].to_numpy(), equal_nan=True)
        np.testing.assert_allclose(part[[f"y_{t}" for t in TRAITS]].to_numpy(), rows[list(TRAITS)].to_numpy(), equal_nan=True)
        probs = part[[f"p_{e}" for e in EMOTIONS]].to_numpy()
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
        assert part[[f"s_{t}" for t in TRAITS]].notna().all().all()  # trait scores for clips of both corpora
        metrics = prediction_metrics(torch.tensor(np.log(probs)), torch.tensor(part[[f"s_{t}" for t in TRAITS]].to_numpy()),
                                     TensorData(label_tensors(rows)))
        saved = json.loads((spec.run_dir / "stage3" / "metrics.json").read_text())[split]
        assert metrics == pytest.approx({k: saved[k] for k in metrics}, abs=1e-6)
        assert set(saved) - set(metrics) == {f"clips_with_{m}" for m in spec.modalities} | {"clips_without_any_modality"}


def test_stage3_predictions_bad_inputs(tiny_run, tmp_path):
    _, spec = tiny_run
    with pytest.raises(FileNotFoundError, match="no trained fusion model"):
        stage3_predictions(tmp_path)
    with pytest.raises(FileNotFoundError, match="stage-2 inputs of audio not exported"):
        stage3_predictions(spec.run_dir, modalities=("face", "audio"))


def planted(n=500, seed=7):
    "Emotion A raises trait u, emotion B lowers trait v, trait w is independent of both."
    rng = np.random.default_rng(seed)
    a, b, w = rng.normal(size=(3, n))
    return pd.DataFrame({"corpus": np.repeat(["x", "y"], n // 2), "p_A": a, "p_B": b, "s_u": 0.5 * a + rng.normal(size=n),
                         "s_v": -0.5 * b + rng.normal(size=n), "s_w": w})


@pytest.mark.parametrize("method", ["pearson", "spearman"])
@pytest.mark.parametrize("correction", ["fdr_bh", "holm"])
def test_correlations_recover_planted_signs(method, correction):
    corr = emotion_trait_correlations(planted(), method, ("A", "B"), ("u", "v", "w"), correction).set_index(["emotion", "trait"])
    assert corr.loc[("A", "u"), "r"] > 0.3 and corr.loc[("A", "u"), "significant"]
    assert corr.loc[("B", "v"), "r"] < -0.3 and corr.loc[("B", "v"), "significant"]
    assert not corr.loc[("A", "w"), "significant"] and not corr.loc[("B", "w"), "significant"]
    np.testing.assert_allclose(corr.p_adj, multipletests(corr.p, method=correction)[1])


def test_holm_is_never_below_bh_and_matches_statsmodels():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    holm, bh = adjust_pvalues(p, "holm")[0], adjust_pvalues(p, "fdr_bh")[0]
    np.testing.assert_allclose(holm, multipletests(p, method="holm")[1])
    np.testing.assert_allclose(bh, multipletests(p, method="fdr_bh")[1])
    assert (holm >= bh - 1e-15).all()
    np.testing.assert_allclose(bh[:2], [0.01, 0.04])  # by hand: 0.001 * 10/1, and 0.008 * 10/2 (no smaller value above it)


def test_ols_recovers_coefficients_within_ci():
    rng = np.random.default_rng(11)
    probs = pd.DataFrame(rng.dirichlet(np.ones(7), size=800), columns=[f"p_{e}" for e in EMOTIONS])
    true = {"const": 0.4, "Anger": 0.0, "Disgust": -0.1, "Fear": 0.0, "Happiness": 0.35, "Sadness": -0.3, "Surprise": 0.0}
    probs["s_extraversion"] = (0.4 + probs[[f"p_{e}" for e in true if e != "const"]].to_numpy() @ np.array(list(true.values())[1:])
                               + 0.05 * rng.normal(size=800))
    table = trait_on_emotion_ols(probs, "extraversion")
    truth = table.term.map(true)
    assert ((table.ci_low <= truth) & (truth <= table.ci_high)).all()
    assert (table.reference == "Neutral").all() and "Neutral" not in table.term.tolist()


def test_kruskal_wallis_detects_group_shift():
    rng = np.random.default_rng(5)
    probs = pd.DataFrame(rng.dirichlet(np.ones(7), size=600), columns=[f"p_{e}" for e in EMOTIONS])
    sad = probs.to_numpy().argmax(1) == EMOTIONS.index("Sadness")
    probs["s_openness"] = 0.5 - 0.1 * sad + 0.1 * rng.normal(size=600)
    probs["s_agreeableness"] = 0.5 + 0.1 * rng.normal(size=600)
    summary, tests = traits_by_dominant_emotion(probs, traits=("openness", "agreeableness"))
    tests = tests.set_index("trait")
    assert tests.loc["openness", "significant"] and tests.loc["openness", "p_adj"] < 1e-6
    assert not tests.loc["agreeableness", "significant"]
    assert set(summary.dominant_emotion) == set(EMOTIONS)


def test_demo_latent_truth_couples_happiness_up_sadness_down(tmp_path):
    from ssl_mepr.demo import make_demo_corpus
    truth = latent_truth_frame(make_demo_corpus(tmp_path / "corpus", size="tiny"))
    corr = emotion_trait_correlations(truth, emotions=PRESENT_EMOTIONS, emotion_prefix="y_", trait_prefix="y_")
    pooled = corr.set_index("emotion")
    assert (pooled.loc["Happiness", "r"] > 0).all() and (pooled.loc["Sadness", "r"] < 0).all()
    assert pooled.loc[["Happiness", "Sadness"], "significant"].all()


def test_plots_write_png_and_svg(tmp_path):
    corr = emotion_trait_correlations(planted(), emotions=("A", "B"), traits=("u", "v", "w"), by="corpus")
    paths = plot_correlation_heatmap(corr, tmp_path / "figs" / "heat")
    assert [p.name for p in paths] == ["heat.png", "heat.svg"] and all(p.stat().st_size > 0 for p in paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in paths[1].read_bytes()
    rng = np.random.default_rng(0)
    probs = pd.DataFrame(rng.dirichlet(np.ones(7), size=100), columns=[f"p_{e}" for e in EMOTIONS]).assign(s_openness=rng.random(100))
    paths = plot_ols_coefficients(trait_on_emotion_ols(probs, "openness"), tmp_path / "ols.svg")
    assert sorted(p.name for p in tmp_path.glob("ols.*")) == ["ols.png", "ols.svg"]
