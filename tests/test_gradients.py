"Tests of ssl_mepr.gradients: TwoWalletGradNorm's paths against the released loop, exact resume, the fusion model and its ablations (nbs/17_gradients.ipynb holds more, next to the code)."
import warnings

import pytest
import torch

import ssl_mepr.recording as recording
from ssl_mepr.gradients import TwoWalletGradNorm, compare_with_reference, per_term_gradients
from ssl_mepr.gradnorm import ReferenceTwoWalletGradNorm, TwoHeadMLP, mixed_batch
from ssl_mepr.losses import MultiTaskLoss

NAN = float("nan")


def close(a, b, eps=1e-6): return abs(a - b) < eps


# ---- the batched implementation against the released loop -------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("switches", [{}, {"shared_parameters": "trunk", "renormalise_over": "all"}])
@pytest.mark.parametrize("path", ["batched", "watched", "two_pass"])
def test_batched_gradnorm_matches_reference(dtype, switches, path):
    "20 Adam steps from one seed: the same wallets and parameters (1e-6), batches covering the presence cases."
    watch = {"batched": {}, "watched": {"watch": True, "independent_rows": False}, "two_pass": {"watch": True}}[path]
    res = compare_with_reference(n_steps=20, dtype=dtype, **watch, **switches)
    seen = set(res["seen"])
    assert res["seen"] == res["seen_reference"]
    assert ("emo_ssl", "emo_sup", "per_ssl", "per_sup") in seen
    assert any("per_sup" not in s and "per_ssl" in s for s in seen)           # a MOSEI-only batch
    assert any("emo_ssl" not in s and {"emo_sup", "per_sup"} <= set(s) for s in seen)  # an SSL term absent
    for part in ("weights", "baselines"):
        assert sorted(res["state"][part]) == sorted(res["state_reference"][part])
        for k, v in res["state"][part].items(): assert close(v, res["state_reference"][part][k]), (part, k)
    assert res["max_parameter_difference"] < 1e-6


def test_set_grads_false_gives_the_same_gradient():
    def run(set_grads, watch):
        torch.manual_seed(0)
        model, gn = TwoHeadMLP(head_scale=10.0).double(), TwoWalletGradNorm()
        if watch: gn.watch(model)
        x, emo_t, per_t = mixed_batch(6, 4, generator=torch.Generator().manual_seed(3))
        total = gn.step(MultiTaskLoss()(*model(x.double()), emo_t, per_t), model, set_grads=set_grads)
        if not set_grads: total.backward()
        return [p.grad for p in model.parameters()]
    ref = run(False, False)
    for set_grads, watch in ((True, False), (True, True), (False, True)):
        for a, b in zip(ref, run(set_grads, watch)): assert torch.allclose(a, b, atol=1e-12)


def test_resume_through_a_saved_file_is_exact(tmp_path):
    "Save model, optimizer, GradNorm and data-order states after 7 steps, load them into new objects, finish: same as 14 in one go."
    def make():
        torch.manual_seed(0)
        model = TwoHeadMLP(head_scale=10.0)
        return model, torch.optim.Adam(model.parameters(), lr=1e-2), TwoWalletGradNorm(renormalise_over="all")

    def run(model, opt, gn, g, steps):
        for step in steps:
            x, emo_t, per_t = mixed_batch(*((6, 4), (8, 0), (0, 8), (9, 1))[step % 4], generator=g)
            opt.zero_grad()
            gn.step(MultiTaskLoss()(*model(x), emo_t, per_t), model, set_grads=True)
            opt.step()

    model, opt, gn = make(); g = torch.Generator().manual_seed(0)
    run(model, opt, gn, g, range(14))

    m2, o2, gn2 = make(); g2 = torch.Generator().manual_seed(0)
    run(m2, o2, gn2, g2, range(7))
    torch.save({"model": m2.state_dict(), "opt": o2.state_dict(), "gradnorm": gn2.state_dict(),
                "generator": g2.get_state()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    m3, o3, gn3 = make(); g3 = torch.Generator()
    m3.load_state_dict(state["model"]); o3.load_state_dict(state["opt"]); gn3.load_state_dict(state["gradnorm"])
    g3.set_state(state["generator"])
    assert gn3.state_dict() == gn2.state_dict() and gn3.baselines  # baselines came back
    run(m3, o3, gn3, g3, range(7, 14))
    assert gn3.state_dict() == gn.state_dict()
    for a, b in zip(model.parameters(), m3.parameters()): assert torch.equal(a, b)


def test_fallback_to_the_loop_warns_and_agrees():
    class ItemScale(torch.autograd.Function):  # its backward reads a value: vmap cannot run it
        @staticmethod
        def forward(ctx, x): return 2 * x

        @staticmethod
        def backward(ctx, g): return 2 * g * float(g.abs().sum().item() >= 0)

    def run(batched):
        torch.manual_seed(0)
        lin = torch.nn.Linear(4, 2)
        y = ItemScale.apply(lin(torch.randn(5, 4)))
        gn = TwoWalletGradNorm(batched=batched)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gn.step({"emo_sup": y[:, 0].square().mean(), "per_sup": y[:, 1].abs().mean()}, lin, set_grads=True)
        return gn, caught, [p.grad for p in lin.parameters()]

    gn_b, caught, grads_b = run(True)
    gn_l, _, grads_l = run(False)
    assert not gn_b.batched and any("one autograd.grad per term" in str(c.message) for c in caught)
    assert gn_b.state_dict() == gn_l.state_dict()
    for a, b in zip(grads_b, grads_l): assert torch.allclose(a, b)


# ---- the fusion model ------------------------------------------------------------------------------------------

def test_fusion_model_batched_gradients_and_watched_step():
    "vmap runs the fusion model's backward (MHA, LayerNorm, cosine similarity, GAT); watched and plain steps agree."
    fusion = pytest.importorskip("ssl_mepr.fusion")
    torch.manual_seed(0)
    model = fusion.FusionModel().double().eval()
    inputs = fusion.example_inputs(batch_size=8, seed=1)
    inputs = tuple({m: t.double() for m, t in d.items()} for d in inputs)
    emo_t = torch.full((8, 7), NAN); per_t = torch.full((8, 5), NAN)
    emo_t[:5] = torch.softmax(torch.randn(5, 7), 1); per_t[5:] = torch.rand(3, 5)
    criterion = MultiTaskLoss(tau_emotion=0.0, tau_personality=0.5)  # all four terms present

    out = model(*inputs)
    terms = criterion(out.emotion_logits, out.personality_scores, emo_t, per_t)
    assert len(terms) == 4
    stacked, params = torch.stack(list(terms.values())), list(model.parameters())
    batched, looped = per_term_gradients(stacked, params, True), per_term_gradients(stacked, params, False)
    for a, b in zip(batched, looped):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-10))

    results = []
    for watch in (False, True):
        model.zero_grad()
        gn = TwoWalletGradNorm(shared_parameters="trunk")
        if watch: gn.watch(model)
        out = model(*inputs)
        gn.step(criterion(out.emotion_logits, out.personality_scores, emo_t, per_t), model, set_grads=True)
        results.append((gn.state_dict(), [p.grad for p in model.parameters()]))
    (s1, g1), (s2, g2) = results
    assert s1["weights"] != TwoWalletGradNorm().weights
    for k in s1["weights"]: assert close(s1["weights"][k], s2["weights"][k], 1e-10)
    for a, b in zip(g1, g2):  # the personality Guide Bank is unused by default: no gradient in either
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-10))


def _fusion_run(kind, n_steps=8, compositions=((6, 4), (8, 0), (0, 8), (9, 1)), config_overrides=None, **switches):
    "Train a narrow float64 fusion model with the reference loop or TwoWalletGradNorm; dropout on, same masks."
    fusion = pytest.importorskip("ssl_mepr.fusion")
    config = fusion.FusionConfig(input_dims=dict(body=24, face=16, scene=20, audio=12, text=12), hidden_dim=16, num_heads=4,
                                 **(config_overrides or {}))
    model = fusion.FusionModel(config, seed=0).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    criterion = MultiTaskLoss(tau_emotion=0.17, tau_personality=0.55)  # near-uniform start: pseudo-labels come and go
    gn = ReferenceTwoWalletGradNorm(**switches) if kind == "reference" else TwoWalletGradNorm(**switches)
    if kind == "two_pass": gn.watch(model)                          # FusionModel declares independent rows
    if kind == "watched": gn.watch(model, independent_rows=False)
    seen, paths = [], []
    for step in range(n_steps):
        n_mosei, n_fiv2 = compositions[step % len(compositions)]
        inputs = fusion.example_inputs(config, batch_size=n_mosei + n_fiv2, seed=step)
        _, emo_t, per_t = mixed_batch(n_mosei, n_fiv2, generator=torch.Generator().manual_seed(step))
        torch.manual_seed(100 + step)                                  # the same dropout masks in every run
        opt.zero_grad()
        out = model(*inputs)
        losses = criterion(out.emotion_logits, out.personality_scores, emo_t, per_t)
        seen.append(tuple(sorted(losses)))
        if kind == "reference": gn.step(losses, model).backward()
        else: gn.step(losses, model, set_grads=True); paths.append(gn.last_path)
        opt.step()
    return model, gn.state_dict(), seen, paths


@pytest.mark.parametrize("switches", [{}, {"shared_parameters": "trunk", "renormalise_over": "all"}])
def test_fusion_model_two_pass_matches_reference(switches):
    "The stage-3 model (narrow, float64, dropout on): 8 Adam steps of the two-pass path and the general watched path equal the reference loop."
    ref_model, ref_state, ref_seen, _ = _fusion_run("reference", **switches)
    assert ("emo_ssl", "emo_sup", "per_ssl", "per_sup") in ref_seen                    # all four terms
    assert ("emo_sup", "per_ssl") in ref_seen                                           # MOSEI only
    assert any("emo_sup" not in s and "per_sup" in s for s in ref_seen)                 # FIv2 only
    assert any({"emo_sup", "per_sup"} <= set(s) and "emo_ssl" not in s for s in ref_seen)  # a pseudo-label term absent
    for kind in ("two_pass", "watched"):
        model, state, seen, paths = _fusion_run(kind, **switches)
        assert seen == ref_seen
        assert set(paths) == ({"two_pass"} if kind == "two_pass" else {"batched"}), paths
        for part in ("weights", "baselines"):
            assert sorted(state[part]) == sorted(ref_state[part])
            for k, v in state[part].items(): assert close(v, ref_state[part][k]), (kind, part, k)
        assert state["weights"] != TwoWalletGradNorm().weights
        for (name, a), b in zip(model.named_parameters(), ref_model.parameters()):
            assert (a - b).abs().max().item() < 1e-6, (kind, name)


def test_fusion_two_pass_adds_to_existing_gradients():
    """Two steps without zero_grad: the two-pass path adds to .grad as backward() does (the attention's in_proj_weight
    row blocks included); the unused trait Guide Bank gets no gradient in either."""
    fusion = pytest.importorskip("ssl_mepr.fusion")
    config = fusion.FusionConfig(input_dims=dict(body=24, face=16, scene=20, audio=12, text=12), hidden_dim=16, num_heads=4)
    grads = {}
    for kind in ("reference", "two_pass"):
        model = fusion.FusionModel(config, seed=0).double()
        gn = ReferenceTwoWalletGradNorm() if kind == "reference" else TwoWalletGradNorm().watch(model)
        for step in range(2):
            inputs = fusion.example_inputs(config, batch_size=10, seed=step)
            _, emo_t, per_t = mixed_batch(6, 4, generator=torch.Generator().manual_seed(step))
            torch.manual_seed(100 + step)                                  # the same dropout masks in both runs
            out = model(*inputs)
            losses = MultiTaskLoss(tau_emotion=0.17, tau_personality=0.55)(out.emotion_logits, out.personality_scores, emo_t, per_t)
            if kind == "reference": gn.step(losses, model).backward()
            else: gn.step(losses, model, set_grads=True); assert gn.last_path == "two_pass"
        grads[kind] = {n: p.grad for n, p in model.named_parameters()}
    assert grads["reference"]["guide_bank_pkl.embeddings"] is None and grads["two_pass"]["guide_bank_pkl.embeddings"] is None
    for name, g in grads["reference"].items():
        if g is not None: assert (grads["two_pass"][name] - g).abs().max().item() < 1e-9, name


@pytest.mark.parametrize("kind", ["two_pass", "watched"])
def test_fusion_with_the_attention_unrecorded_matches_reference(kind, monkeypatch):
    "Where the attention cannot be entered (the probe failed), its parameters take the plain per-term route: the same numbers."
    monkeypatch.setitem(recording._PROBED, "redispatch", None)
    ref_model, ref_state, _, _ = _fusion_run("reference")
    model, state, _, paths = _fusion_run(kind)
    assert set(paths) == ({"two_pass"} if kind == "two_pass" else {"batched"}), paths
    for k, v in state["weights"].items(): assert close(v, ref_state["weights"][k]), (kind, k)
    for (name, a), b in zip(model.named_parameters(), ref_model.parameters()):
        assert (a - b).abs().max().item() < 1e-6, (kind, name)


def test_two_pass_falls_back_when_the_records_do_not_fit():
    "Two forwards before a step (the records cannot tell which made the terms): the general path, the same numbers."
    torch.manual_seed(0)
    model, gn = TwoHeadMLP(head_scale=10.0).double(), TwoWalletGradNorm()
    gn.watch(model)
    x, emo_t, per_t = mixed_batch(6, 4, generator=torch.Generator().manual_seed(3))
    model(x.double())
    gn.step(MultiTaskLoss()(*model(x.double()), emo_t, per_t), model, set_grads=True)
    assert gn.last_path == "batched"
    model.zero_grad()
    gn.step(MultiTaskLoss()(*model(x.double()), emo_t, per_t), model, set_grads=True)
    assert gn.last_path == "two_pass"


@pytest.mark.parametrize("overrides", [{"use_graph_attention": False}, {"use_cross_attention": False},
                                       {"use_emotion_guide_bank": False}, {"use_personality_guide_bank": True},
                                       {"use_emotion_predict_projector": False}, {"disabled_modalities": ("audio", "text")},
                                       {"graph_attention_scoring": "gatv2"}])
def test_fusion_ablations_two_pass_matches_reference(overrides):
    "Every ablation of the fusion model: the two-pass path (or its fallback) gives the reference loop's wallets and weights."
    ref_model, ref_state, _, _ = _fusion_run("reference", config_overrides=overrides)
    model, state, _, paths = _fusion_run("two_pass", config_overrides=overrides)
    for k, v in state["weights"].items(): assert close(v, ref_state["weights"][k]), (overrides, k)
    for (name, a), b in zip(model.named_parameters(), ref_model.parameters()):
        assert (a - b).abs().max().item() < 1e-6, (overrides, name)
    assert "two_pass" in paths, paths
