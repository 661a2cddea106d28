"Property and hand-computed tests of ssl_mepr.metrics (the notebook nbs/05_metrics.ipynb holds more, next to the code)."
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, assume, strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import balanced_accuracy_score

from ssl_mepr.labels import PRESENT_EMOTIONS, TRAITS, soft_emotion_targets
from ssl_mepr.metrics import (baseline_metrics, ccc, emotion_metrics, emotion_metrics_from_presence,
                              metrics_table, personality_metrics, selection_scalars)

FAST = settings(max_examples=30, deadline=None)
bool_matrix = st.integers(2, 40).flatmap(lambda n: st.tuples(arrays(bool, (n, 6)), arrays(bool, (n, 6))))
unit = st.floats(0, 1, allow_nan=False, width=64)


@FAST
@given(bool_matrix)
def test_wacc_is_cmu_weighted_accuracy(pair):
    "Per emotion with both classes in the truth: WACC = (TP*N/P + TN)/(2N) = balanced accuracy."
    truth, pred = pair
    m = emotion_metrics_from_presence(pred, truth)
    for i, e in enumerate(PRESENT_EMOTIONS):
        t, p = truth[:, i], pred[:, i]
        P, N = t.sum(), (~t).sum()
        if P == 0 or N == 0: continue
        TP, TN = (t & p).sum(), (~t & ~p).sum()
        assert m[f"WACC/{e}"] == pytest.approx((TP * N / P + TN) / (2 * N))
        assert m[f"WACC/{e}"] == pytest.approx(balanced_accuracy_score(t, p))


@FAST
@given(bool_matrix)
def test_degenerate_columns_follow_sklearn_macro_recall(pair):
    "One class in truth: 1.0 if the prediction agrees everywhere, else (recall of the true class)/2."
    truth, pred = pair
    truth[:, 0] = False; truth[:, 1] = True
    m = emotion_metrics_from_presence(pred, truth)
    p = pred[:, 0]
    assert m["WACC/Anger"] == pytest.approx(1.0 if not p.any() else (~p).mean() / 2)
    p = pred[:, 1]
    assert m["WACC/Disgust"] == pytest.approx(1.0 if p.all() else p.mean() / 2)


@FAST
@given(bool_matrix)
def test_means_and_ranges(pair):
    truth, pred = pair
    m = emotion_metrics_from_presence(pred, truth)
    assert m["mWACC"] == pytest.approx(np.mean([m[f"WACC/{e}"] for e in PRESENT_EMOTIONS]))
    assert m["mF1"] == pytest.approx(np.mean([m[f"F1/{e}"] for e in PRESENT_EMOTIONS]))
    assert all(0 <= v <= 1 and type(v) is float for v in m.values())


def test_hand_computed_emotion_case():
    # Anger: TP 2, FN 1, FP 1, TN 2 -> WACC (2/3 + 2/3)/2, F1 (4/6 + 4/6)/2
    # Happiness: TP 0, FN 0, FP 0, TN 6 -> 1, 1 (one class, all right)
    # Surprise: TP 3, FN 0, FP 3, TN 0 -> WACC (1 + 0)/2, F1 (6/9 + 0)/2
    # others: all absent in truth and prediction -> 1, 1
    truth = np.zeros((6, 6), bool); pred = np.zeros((6, 6), bool)
    truth[:3, 0] = True; pred[[0, 1, 3], 0] = True
    truth[:3, 5] = True; pred[:, 5] = True
    m = emotion_metrics_from_presence(pred, truth)
    assert m["WACC/Anger"] == pytest.approx(2 / 3) and m["F1/Anger"] == pytest.approx(2 / 3)
    assert m["WACC/Happiness"] == 1.0 and m["F1/Happiness"] == 1.0
    assert m["WACC/Surprise"] == pytest.approx(0.5) and m["F1/Surprise"] == pytest.approx(1 / 3)
    assert m["mWACC"] == pytest.approx((2 / 3 + 0.5 + 4) / 6)


def test_neutral_veto_and_threshold():
    # clip 0: p(Neutral) = 6/7 exactly, Anger = 1/7 exactly -> vetoed; clip 1: Neutral just below -> Anger present
    p = np.array([[6 / 7, 1 / 7, 0, 0, 0, 0, 0], [6 / 7 - 1e-3, 1 / 7, 1e-3, 0, 0, 0, 0]])
    with np.errstate(divide="ignore"): z = np.log(p)
    targets = np.array([[1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0]], float)  # clip 0 Neutral, clip 1 Anger
    m = emotion_metrics(z, targets)
    assert m["WACC/Anger"] == 1.0 and m["mWACC"] == 1.0


def test_uniform_logits_predict_every_emotion():
    rng = np.random.default_rng(1)
    y = soft_emotion_targets(rng.random((50, 6)) * (rng.random((50, 6)) < 0.4))
    m = emotion_metrics(np.zeros((50, 7)), y)
    P = (y[:, 1:] > 0).sum(0)
    assert ((P > 0) & (P < 50)).all()
    for i, e in enumerate(PRESENT_EMOTIONS):
        assert m[f"WACC/{e}"] == pytest.approx(0.5)
        assert m[f"F1/{e}"] == pytest.approx(P[i] / (P[i] + 50))


def test_tensors_and_nan_rows():
    rng = np.random.default_rng(2)
    z, y = rng.normal(size=(40, 7)), soft_emotion_targets(rng.random((40, 6)) * (rng.random((40, 6)) < 0.3))
    s, t = rng.random((25, 5)), rng.random((25, 5))
    ref_e, ref_p = emotion_metrics(z, y), personality_metrics(s, t)
    assert emotion_metrics(torch.tensor(z, requires_grad=True), torch.tensor(y)) == ref_e
    assert personality_metrics(torch.tensor(s), torch.tensor(t)) == ref_p
    # a mixed batch: MOSEI rows have NaN trait targets, FIv2 rows NaN emotion targets
    z_all = np.vstack([z, rng.normal(size=(25, 7))]); y_all = np.vstack([y, np.full((25, 7), np.nan)])
    s_all = np.vstack([rng.random((40, 5)), s]); t_all = np.vstack([np.full((40, 5), np.nan), t])
    assert emotion_metrics(z_all, y_all) == ref_e
    assert personality_metrics(s_all, t_all) == ref_p
    t_bad = t.copy(); t_bad[0, 2] = np.nan
    with pytest.raises(ValueError, match="partly NaN"): personality_metrics(s, t_bad)


def test_hand_computed_personality_case():
    x = np.array([0.2, 0.4, 0.6, 0.8])        # mean 0.5, population variance 0.05
    d = np.array([0, 0.1, -0.1, 0.2, 0])       # per-trait shift of the predictions
    y = np.repeat(x[:, None], 5, 1)
    m = personality_metrics(y + d, y)
    assert m["mACC"] == pytest.approx(1 - np.abs(d).mean())
    assert [m[f"CCC/{t}"] for t in TRAITS] == pytest.approx(0.1 / (0.1 + d ** 2))
    assert m["CCC_pooled"] == pytest.approx(25 / 28)   # 0.1 / (0.05 + 0.0604 + 0.04**2)
    assert m["mCCC"] != pytest.approx(m["CCC_pooled"])


def test_pooled_and_per_trait_ccc_differ_for_trait_means():
    x = np.array([0.2, 0.4, 0.6, 0.8]); off = np.array([0.0, 0.1, 0.2, -0.1, 0.3])
    y = x[:, None] + off
    m = personality_metrics(np.broadcast_to(y.mean(0), y.shape), y)
    assert m["mCCC"] == 0.0
    assert m["CCC_pooled"] == pytest.approx(2 * off.var() / (2 * off.var() + 0.05))


vectors = st.integers(3, 30).flatmap(lambda n: st.tuples(arrays(np.float64, n, elements=unit), arrays(np.float64, n, elements=unit)))


@FAST
@given(vectors, st.floats(0.01, 1))
def test_ccc_properties(pair, shift):
    x, y = pair
    assume(np.ptp(x) > 1e-3 and np.ptp(y) > 1e-3)
    c = ccc(x, y)
    r = np.corrcoef(x, y)[0, 1]
    assert -1 - 1e-9 <= c <= 1 + 1e-9
    assert abs(c) <= abs(r) + 1e-9                 # CCC never exceeds |Pearson|
    assert c == pytest.approx(ccc(y, x))           # symmetric
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, x + shift) < 1.0                 # a shift is penalised, Pearson would say 1
    assert ccc(x - x.mean(), x.mean() - x) == pytest.approx(-1.0)
    assert ccc(x, -x) < 0


def test_ccc_constants():
    assert ccc([0.3] * 5, [0.3] * 5) == 1.0
    assert ccc([0.3] * 5, [0.4] * 5) == 0.0
    assert ccc([0.1, 0.5, 0.9], [0.4] * 3) == 0.0


def test_selection_and_table():
    rng = np.random.default_rng(3)
    tr_e = soft_emotion_targets(rng.random((60, 6)) * (rng.random((60, 6)) < 0.3))
    ev_e = soft_emotion_targets(rng.random((30, 6)) * (rng.random((30, 6)) < 0.3))
    base = baseline_metrics(tr_e, ev_e, rng.random((40, 5)), rng.random((20, 5)))
    for res in base.values():
        sel = selection_scalars(res, res)
        assert res["mean_combo"] == pytest.approx(sel["mean_combo"])
        assert sel["mean_combo"] == pytest.approx((res["mWACC"] + res["mF1"] + res["mACC"] + res["CCC_pooled"]) / 4)
    tab = metrics_table(base, percentages=True)
    assert list(tab.index) == ["train mean", "chance"]
    assert tab.loc["chance", "mACC"] == pytest.approx(100 * base["chance"]["mACC"])
    assert selection_scalars(personality=base["chance"]).keys() == {"mean_pkl"}
