"Input×Gradient attributions: a linear map by hand, and per-clip attributions of a small fusion model against autograd."
import numpy as np
import pytest
import torch

from ssl_mepr.attribution import ATTRIBUTION_TARGETS, input_x_gradient, modality_attributions
from ssl_mepr.fusion import FusionModel, example_inputs
from ssl_mepr.labels import TRAITS


def test_input_x_gradient_of_a_linear_map():
    w = torch.tensor([[2.0, 0.0], [-1.0, 3.0]])
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    out = input_x_gradient(lambda t: (t["x"] @ w).sum(1) + 0 * t["unused"].sum(1), {"x": x, "unused": torch.ones(3, 2)})
    expected = (x * w.sum(1)).sum(1)  # d/dx_j of sum_k (x @ w)_k = sum_k w_jk
    torch.testing.assert_close(out["x"], expected)
    torch.testing.assert_close(out["unused"], torch.zeros(3))


def test_attributions_are_per_clip_and_match_autograd():
    model = FusionModel(hidden_dim=16, num_heads=2, disabled_modalities=("body", "scene", "text"), seed=1).eval()
    f, l, s = example_inputs(model.config, batch_size=4, seed=3)
    batch = {"features": f, "emotion_logits": l, "personality_scores": s}
    attr = modality_attributions(model, batch)
    assert attr.shape == (4, len(ATTRIBUTION_TARGETS), 2)
    alone = modality_attributions(model, {k: {m: v[m][2:3] for m in v} for k, v in batch.items()})
    np.testing.assert_allclose(alone[0], attr[2], atol=1e-5)
    # the trait target "extraversion" for the audio modality (second active node), by hand
    xs = [t[:1].clone().requires_grad_(True) for t in (f["audio"], l["audio"], s["audio"])]
    swap = lambda d, t: {**{m: v[:1] for m, v in d.items()}, "audio": t}
    score = model(swap(f, xs[0]), swap(l, xs[1]), swap(s, xs[2])).personality_scores[0, TRAITS.index("extraversion")]
    grads = torch.autograd.grad(score, xs, allow_unused=True)
    by_hand = sum(float((x * g).sum().detach()) for x, g in zip(xs, grads) if g is not None)
    assert attr[0, ATTRIBUTION_TARGETS.index("extraversion"), 1] == pytest.approx(by_hand, abs=1e-5)
