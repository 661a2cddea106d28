"The explorer on a real (tiny) run: data loading, attributions, filters and callbacks, without a browser."
import os

import matplotlib
matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from ssl_mepr.analysis import stage3_predictions
from ssl_mepr.explore import Explorer, clip_summary, filter_clips, load_explorer_data
from ssl_mepr.labels import EMOTIONS, TRAITS
from ssl_mepr.run import run_spec
from ssl_mepr.stages import run_stages

OUTPUTS = [f"p_{e}" for e in EMOTIONS] + [f"s_{t}" for t in TRAITS]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    "A three-stage run on the tiny demo, face and audio, one epoch per stage (about 15 s)."
    spec = run_spec(run_name="t", runs_root=tmp_path_factory.mktemp("runs"), demo_size="tiny", modalities=("face", "audio"),
                    model_width=16, max_layers=1, stage1_epochs=1, stage2_epochs=1, stage3_epochs=1, progress=False)
    run_stages(spec, 3)
    return spec, load_explorer_data(spec.run_dir), stage3_predictions(spec.run_dir)


def test_loaded_data_matches_the_prediction_table(tiny_run):
    _, data, reference = tiny_run
    pd.testing.assert_frame_equal(data.clips[reference.columns], reference, atol=1e-6)
    n, m = len(reference), len(data.modalities)
    assert data.modalities == ("face", "audio")
    assert data.graph_attention.shape == (n, m, m) and data.attributions.shape == (n, 6, m)
    np.testing.assert_allclose(data.graph_attention.sum(-1), 1, atol=1e-5)  # every attention row is a distribution
    np.testing.assert_allclose(data.graph_weights.sum(-1), 1, atol=1e-5)
    for query in ("emotion", "personality"):
        np.testing.assert_allclose(data.cross_attention[query].sum(-1), 1, atol=1e-5)
    assert (data.graph_attention >= 0).all() and np.isfinite(data.attributions).all()
    summary = clip_summary(data, reference.clip_id.iloc[3])
    np.testing.assert_allclose(summary["attribution"].to_numpy(), data.attributions[3])


def test_filters(tiny_run):
    _, data, _ = tiny_run
    assert set(filter_clips(data.clips, corpus="mosei").corpus) == {"mosei"}
    assert set(filter_clips(data.clips, split="test").split) == {"test"}
    lo, hi = data.clips.s_agreeableness.quantile([0.2, 0.6])
    kept = filter_clips(data.clips, trait="agreeableness", trait_range=(lo, hi))
    assert 0 < len(kept) < len(data.clips) and kept.s_agreeableness.between(lo, hi).all()
    top = data.clips.dominant_emotion.iloc[0]
    assert (filter_clips(data.clips, dominant=top)[[f"p_{e}" for e in EMOTIONS]].idxmax(1) == f"p_{top}").all()
    with pytest.raises(ValueError, match="dominant="):
        filter_clips(data.clips, dominant="Joy")


def test_explorer_callbacks(tiny_run):
    _, data, reference = tiny_run
    ex = Explorer(data, display_output=False)
    assert ex.clip_id == reference.clip_id.iloc[0] and len(ex.filtered) == len(reference)
    ex.corpus.value = "mosei"
    assert set(ex.filtered.corpus) == {"mosei"} and list(ex.picker.options) == ex.filtered.clip_id.tolist()
    assert ex.clip_id in list(ex.picker.options)
    ex.split.value = "dev"
    pick = ex.filtered.clip_id.iloc[-1]
    ex.picker.value = pick
    row = reference.set_index("clip_id").loc[pick]
    assert ex.clip_id == pick
    np.testing.assert_allclose(ex.rendered["outputs"].predicted.to_numpy(), row[OUTPUTS].to_numpy(float))
    labels = row[[f"y_{e}" for e in EMOTIONS] + [f"y_{t}" for t in TRAITS]].to_numpy(float)
    np.testing.assert_allclose(ex.rendered["outputs"].label.to_numpy(), labels)
    scatter = ex.rendered["figure"].axes[2].collections
    assert len(scatter[0].get_offsets()) == len(ex.filtered)
    np.testing.assert_allclose(scatter[1].get_offsets()[0], row[["p_Happiness", "s_openness"]].to_numpy(float))  # the trait dropdown's trait
    ex.emotion.value = "Sadness"
    np.testing.assert_allclose(ex.rendered["figure"].axes[2].collections[1].get_offsets()[0], row[["p_Sadness", "s_openness"]].to_numpy(float))
    ex.trait.value, ex.trait_range.value = "openness", (0.0, float(row.s_openness))
    assert ex.filtered.s_openness.le(row.s_openness).all() and ex.clip_id == pick  # the picked clip still passes: kept
    ex.trait_range.value = (1.0, 1.0)
    assert len(ex.filtered) == 0 and ex.clip_id is None and ex.rendered == {}
