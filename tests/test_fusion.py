"Stage-3 fusion model: sizes, released key names, ablations, gradients, determinism (ssl_mepr.fusion)."
from itertools import combinations

import pytest
import torch

from ssl_mepr.labels import MODALITIES
from ssl_mepr.fusion import (RELEASED_INPUT_DIMS, FusionConfig, FusionModel, FusionOutput,
                             example_inputs, parameters_by_component)

from released_layout import D, released_shapes


def run(model, inputs, train=False):
    model.train(train)
    with torch.set_grad_enabled(train):
        return model(*inputs)


def params_without_grad(model, batch_size=4):
    "Names of parameters with no gradient, or an all-zero one, after one training-mode backward."
    model.zero_grad(set_to_none=True)
    out = run(model, example_inputs(model.config, batch_size, seed=1), train=True)
    loss = (out.emotion_logits * torch.linspace(-1, 1, 7)).sum() + (out.personality_scores * torch.linspace(1, 2, 5)).sum()
    loss.backward()
    return {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}


@pytest.fixture(scope="module")
def released():
    return FusionModel(seed=0)


def test_parameter_count_and_table(released):
    assert sum(p.numel() for p in released.parameters()) == 2_117_260
    counts = parameters_by_component(released)
    assert counts["projectors.body"] == 591_488 and counts["projectors.face"] == 329_344
    assert counts["projectors.scene"] == 460_416 and counts["projectors.audio"] == counts["projectors.text"] == 198_272
    assert counts["graph_attn"] == 66_048 and counts["cross_attn"] == 263_168 and counts["queries"] == 512
    assert (counts["emo_head"], counts["pkl_head"], counts["emo_logit_proj"], counts["per_logit_proj"]) == (1_799, 1_285, 2_048, 1_536)
    assert (counts["guide_bank_emo"], counts["guide_bank_pkl"]) == (1_792, 1_280)


def test_shapes_and_ranges(released):
    out = run(released, example_inputs(batch_size=5), train=False)
    assert isinstance(out, FusionOutput) and set(out) == {"emotion_logits", "personality_scores"}
    assert out["emotion_logits"].shape == (5, 7) and out["personality_scores"].shape == (5, 5)
    assert ((out.personality_scores > 0) & (out.personality_scores < 1)).all()
    with torch.no_grad(): att = released(*example_inputs(batch_size=5), return_attention=True)
    assert att.graph_attention.shape == (5, 5, 5) and att.modalities == MODALITIES
    assert att.cross_attention["emotion"].shape == att.cross_attention["personality"].shape == (5, 5)
    torch.testing.assert_close(att.cross_attention["emotion"].sum(-1), torch.ones(5))


def test_seeded_construction_is_deterministic():
    rng = torch.random.get_rng_state()
    a, b, c = (FusionModel(seed=s).state_dict() for s in (11, 11, 12))
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["projectors.body.0.proj.0.weight"], c["projectors.body.0.proj.0.weight"])


def test_released_key_names_load_strictly():
    shapes = released_shapes()
    model = FusionModel(seed=0)
    assert list(model.state_dict()) == list(shapes)
    g = torch.Generator().manual_seed(0)
    written = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    model.load_state_dict(written, strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in written.items())


def test_save_load_round_trip(tmp_path, released):
    path = tmp_path / "fusion.pt"
    torch.save(released.state_dict(), path)
    fresh = FusionModel(seed=99)
    inputs = example_inputs(batch_size=6, seed=4)
    assert not torch.equal(run(fresh, inputs).emotion_logits, run(released, inputs).emotion_logits)
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
    a, b = run(fresh, inputs), run(released, inputs)
    assert torch.equal(a.emotion_logits, b.emotion_logits) and torch.equal(a.personality_scores, b.personality_scores)


def test_batch_invariance_in_eval(released):
    inputs = example_inputs(batch_size=8, seed=2)
    whole = run(released, inputs)
    for i in (0, 5, 7):
        row = run(released, [{m: t[i:i + 1] for m, t in d.items()} for d in inputs])
        torch.testing.assert_close(row.emotion_logits, whole.emotion_logits[i:i + 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(row.personality_scores, whole.personality_scores[i:i + 1], atol=1e-6, rtol=1e-5)


def test_gradients_reach_exactly_the_used_parameters(released):
    assert params_without_grad(released) == {"guide_bank_pkl.embeddings"}
    with_bank = FusionModel(seed=0, use_personality_guide_bank=True)
    assert params_without_grad(with_bank) == set()


# component id -> (keys not built, parameters built but unused, outputs that change)
ABLATIONS = {1: ({"graph_attn.a", "graph_attn.W.weight"}, set(), {"emotion_logits", "personality_scores"}),
             2: ({"cross_attn.in_proj_weight", "cross_attn.in_proj_bias", "cross_attn.out_proj.weight",
                  "cross_attn.out_proj.bias"}, {"emo_query", "pkl_query"}, {"emotion_logits", "personality_scores"}),
             3: ({"emo_logit_proj.weight", "emo_logit_proj.bias"}, set(), {"emotion_logits"}),
             4: ({"per_logit_proj.weight", "per_logit_proj.bias"}, set(), {"personality_scores"}),
             5: (set(), {"guide_bank_emo.embeddings"}, {"emotion_logits"}),
             6: (set(), {"guide_bank_pkl.embeddings"}, {"personality_scores"})}


@pytest.mark.parametrize("component_id", sorted(ABLATIONS))
def test_each_ablation_removes_exactly_its_path(component_id):
    removed, unused, changed = ABLATIONS[component_id]
    full = FusionModel(FusionConfig.from_authors_ablation_ids(0, 0), seed=3)
    ablated = FusionModel(FusionConfig.from_authors_ablation_ids(0, component_id))
    result = ablated.load_state_dict(full.state_dict(), strict=False)
    assert result.missing_keys == [] and set(result.unexpected_keys) == removed
    inputs = example_inputs(batch_size=6, seed=5)
    a, b = run(full, inputs), run(ablated, inputs)
    for k in ("emotion_logits", "personality_scores"):
        assert torch.equal(a[k], b[k]) == (k not in changed), k
    assert params_without_grad(ablated) == unused


SMALL = FusionConfig(input_dims={m: 6 for m in MODALITIES}, hidden_dim=16, num_heads=4)


@pytest.mark.parametrize("disabled", [c for k in range(1, 5) for c in combinations(MODALITIES, k)])
def test_disabling_modalities_by_name(disabled):
    model = FusionModel(SMALL, seed=0, disabled_modalities=list(reversed(disabled)))
    assert model.active_modalities == tuple(m for m in MODALITIES if m not in disabled)
    inputs = [{m: t for m, t in d.items() if m not in disabled} for d in example_inputs(SMALL, 3)]
    model.eval()
    with torch.no_grad(): out = model(*inputs, return_attention=True)
    n = len(MODALITIES) - len(disabled)
    assert out.graph_attention.shape == (3, n, n) and out.modalities == model.active_modalities
    # inputs of disabled modalities are never read
    noisy = [{**d, **{m: 100 + full[m] for m in disabled}} for d, full in zip(inputs, example_inputs(SMALL, 3, seed=9))]
    with torch.no_grad(): again = model(*noisy)
    assert torch.equal(again.emotion_logits, out.emotion_logits)
    projector_params = {k for k, _ in model.named_parameters() if k.startswith("projectors.") and k.split(".")[1] in disabled}
    # one active modality: both attentions run over a single node, so their weights are constant 1 and
    # the query tokens and the graph-attention vector `a` get all-zero gradients
    degenerate = {"emo_query", "pkl_query", "graph_attn.a"} if n == 1 else set()
    assert params_without_grad(model) == projector_params | {"guide_bank_pkl.embeddings"} | degenerate


def test_bad_configs_and_inputs(released):
    with pytest.raises(ValueError, match="all five"): FusionConfig(disabled_modalities=MODALITIES)
    with pytest.raises(ValueError, match="unknown names"): FusionConfig(disabled_modalities=("vision",))
    with pytest.raises(ValueError, match="modality_id"): FusionConfig.from_authors_ablation_ids(26, 0)
    f, l, s = example_inputs(batch_size=2)
    with pytest.raises(KeyError, match="active modality 'scene'"):
        released({m: t for m, t in f.items() if m != "scene"}, l, s)
    with pytest.raises(KeyError, match="personality_scores has no tensor for the active modality 'text'"):
        released(f, l, {**s, "text": None})
    with pytest.raises(ValueError, match=r"emotion_logits\['body'\] must have shape \[B, 7\]"):
        released(f, {**l, "body": torch.zeros(2, 6)}, s)


def test_authors_ablation_ids():
    assert FusionConfig.from_authors_ablation_ids(0, 6) == FusionConfig()
    assert FusionConfig.from_authors_ablation_ids(1, 0).active_modalities == ("body", "face", "scene", "text")
    assert FusionConfig.from_authors_ablation_ids(12, 0).disabled_modalities == ("body", "text")   # text + body
    assert FusionConfig.from_authors_ablation_ids(19, 0).disabled_modalities == ("face", "scene", "audio")  # audio+scene+face
    c = FusionConfig.from_authors_ablation_ids(0, 1)
    assert not c.use_graph_attention and c.use_personality_guide_bank and c.use_emotion_guide_bank
