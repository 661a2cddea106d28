"Stages 1 and 2 (ssl_mepr.unimodal): released key names and shapes, gradients, switches, padding, determinism, round trips."
import io

import pytest
import torch

from ssl_mepr.demo import DEMO_DIMS
from ssl_mepr.labels import MODALITIES
from ssl_mepr.fusion import RELEASED_INPUT_DIMS
from ssl_mepr.unimodal import (CORRECTED, MODALITY_CONFIGS, PAPER_INPUT_DIMS, STAGE3_KEYS,
                               AudioCrossDomainModel, CrossDomainModel, build_stage1, build_stage2, pad_steps,
                               stage3_inputs)

B, T = 2, 6
LENGTHS = torch.tensor([6, 3])


def clips(modality, batch=B, steps=T, seed=0):
    return torch.randn(batch, steps, DEMO_DIMS[modality], generator=torch.Generator().manual_seed(seed))




@pytest.fixture(scope="module")
def faithful():
    return {m: build_stage2(m, input_dim=d, seed=0) for m, d in DEMO_DIMS.items()}


@pytest.fixture(scope="module")
def corrected():
    return {m: build_stage2(m, input_dim=d, seed=1, **CORRECTED) for m, d in DEMO_DIMS.items()}


def test_stage2_width_matches_stage3_inputs():
    assert {m: 2 * c["stage2"]["hidden_dim"] for m, c in MODALITY_CONFIGS.items()} == RELEASED_INPUT_DIMS
    assert PAPER_INPUT_DIMS == {"body": 512, "face": 512, "scene": 512, "audio": 1024, "text": 384}


@pytest.mark.parametrize("modality", MODALITIES)
def test_shapes_and_ranges(faithful, modality):
    model = faithful[modality].eval()
    with torch.no_grad(): out = model(clips(modality), LENGTHS)
    h = MODALITY_CONFIGS[modality]["stage2"]["hidden_dim"]
    assert out["emotion_logits"].shape == (B, 7) and out["personality_scores"].shape == (B, 5)
    assert out["features"].shape == (B, 2 * h) == (B, RELEASED_INPUT_DIMS[modality])
    assert out["emotion_sequence"].shape == out["personality_sequence"].shape == (B, T, h)
    scores, act = out["personality_scores"], MODALITY_CONFIGS[modality]["stage2"].get("activation", "none")
    if act == "sigmoid": assert ((scores > 0) & (scores < 1)).all()
    if act == "relu": assert (scores >= 0).all()
    assert isinstance(model, AudioCrossDomainModel if modality == "audio" else CrossDomainModel)


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_released_shapes_at_paper_widths():
    "A few keys per modality with the shapes the released checkpoints must have (reference notes §2-3)."
    body, face = shapes(build_stage2("body")), shapes(build_stage2("face"))
    assert body["emo_model.emo_proj.0.weight"] == (256, 512)
    assert body["emo_model.emotion_encoder.1.in_proj.weight"] == (8, 256)
    assert body["per_model.personality_encoder.0.s_B.weight"] == (4, 4)
    assert body["per_model.personality_encoder.0.out_proj.weight"] == (1024, 4)
    assert body["per_proj.0.weight"] == (1024, 1024) and body["emo_proj.0.weight"] == (1024, 256)
    assert body["emotion_to_personality_attn.0.self_attention.in_proj_weight"] == (3072, 1024)
    assert body["emotion_personality_fc_out.0.weight"] == (128, 2048)
    assert body["personality_emotion_fc_out.4.weight"] == (5, 128)
    assert face["emo_model.emotion_encoder.0.in_proj.weight"] == (16, 1024)
    assert face["per_model.personality_fc_out.0.weight"] == (512, 256)
    assert "personality_to_emotion_attn.2.positional_encoding.pe" in face
    scene = shapes(build_stage2("scene"))
    assert scene["emo_model.emotion_encoder.4.self_attention.in_proj_weight"] == (1536, 512)
    assert not any(k.startswith("emo_model.") and "positional_encoding" in k for k in scene)  # PE off in stage 1
    assert scene["per_model.personality_encoder.6.in_proj.weight"] == (4, 512)
    assert scene["personality_to_emotion_attn.4.positional_encoding.pe"] == (5000, 768)
    audio = shapes(build_stage2("audio"))
    assert audio["emo_enc.input_proj.weight"] == (256, 1024) and audio["emo_enc.blocks.2.s_C.weight"] == (256, 256)
    assert audio["emo_enc.fc.weight"] == (7, 256) and audio["per_enc.head.weight"] == (5, 256)
    assert audio["mha_e2p.in_proj_weight"] == (768, 256) and audio["mha_p2e.out_proj.weight"] == (256, 256)
    assert audio["emo_head.0.weight"] == (256, 512) and audio["per_head.4.weight"] == (5, 256)
    assert {k.split(".")[0] for k in audio} == {"emo_enc", "per_enc", "emo_proj", "per_proj", "mha_e2p", "mha_p2e",
                                                "emo_head", "per_head"}


def authors_text_fusion_keys():
    "The key set of the authors' text fusion checkpoint (EmotionMamba L4 + PersonalityTransformer L1, 2 layers per direction)."
    lin, ln = ("weight", "bias"), ("weight", "bias")
    keys = set()
    seq = lambda prefix, idx: {f"{prefix}.{i}.{p}" for i in idx for p in lin}
    def layer(prefix):
        return ({f"{prefix}.self_attention.{p}" for p in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")}
                | {f"{prefix}.feed_forward.layer_{i}.{p}" for i in (1, 2) for p in lin}
                | {f"{prefix}.add_norm_after_{s}.norm.{p}" for s in ("attention", "ff") for p in ln}
                | {f"{prefix}.positional_encoding.pe"})
    keys |= seq("emo_model.emo_proj", (0, 1)) | seq("emo_model.emotion_fc_out", (0, 1, 4))
    keys |= {f"emo_model.emotion_encoder.{i}.{m}.{p}" for i in range(4) for m in ("in_proj", "s_B", "s_C", "out_proj", "norm") for p in lin}
    keys |= seq("per_model.per_proj", (0, 1)) | seq("per_model.personality_fc_out", (0, 1, 4)) | layer("per_model.personality_encoder.0")
    keys |= seq("emo_proj", (0, 1)) | seq("per_proj", (0, 1))
    for i in range(2): keys |= layer(f"emotion_to_personality_attn.{i}") | layer(f"personality_to_emotion_attn.{i}")
    return keys | seq("emotion_personality_fc_out", (0, 1, 4)) | seq("personality_emotion_fc_out", (0, 1, 4))


def test_text_state_dict_is_exactly_the_authors():
    assert set(build_stage2("text", input_dim=48).state_dict()) == authors_text_fusion_keys()


@pytest.mark.parametrize("modality", ["body", "audio", "text"])
def test_save_load_strict_round_trip(faithful, modality):
    buffer = io.BytesIO(); torch.save(faithful[modality].state_dict(), buffer); buffer.seek(0)
    other = build_stage2(modality, input_dim=DEMO_DIMS[modality], seed=99).eval()
    other.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    x = clips(modality)
    with torch.no_grad(): a, b = faithful[modality].eval()(x, LENGTHS), other(x, LENGTHS)
    for k in STAGE3_KEYS: assert torch.equal(a[k], b[k])


def test_seeded_construction_is_deterministic():
    rng = torch.random.get_rng_state()
    a, b, c = (build_stage2("face", input_dim=64, seed=s).state_dict() for s in (3, 3, 4))
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["emo_model.emo_proj.0.weight"], c["emo_model.emo_proj.0.weight"])
    assert not torch.equal(a["emotion_to_personality_attn.0.self_attention.in_proj_weight"],
                           c["emotion_to_personality_attn.0.self_attention.in_proj_weight"])


def params_with_grad(model, x, lengths=None):
    model.train().zero_grad(set_to_none=True)
    out = model(x, lengths)
    (out["emotion_logits"] @ torch.linspace(-1, 1, 7) + out["personality_scores"] @ torch.linspace(1, 2, 5)).sum().backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    for n in got: assert model.get_parameter(n).grad.abs().sum() > 0, f"{n} got an all-zero gradient"
    return got


@pytest.mark.parametrize("mode", ["faithful", "corrected"])
@pytest.mark.parametrize("modality", MODALITIES)
def test_gradients_reach_stage2_and_not_stage1(faithful, corrected, mode, modality):
    model = (faithful if mode == "faithful" else corrected)[modality]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    stage1 = {n for n, _ in model.named_parameters() if n.split(".")[0] in ("emo_model", "per_model", "emo_enc", "per_enc")}
    assert frozen == stage1 and stage1
    got = params_with_grad(model, clips(modality), LENGTHS)
    assert not got & stage1
    if modality == "text" and mode == "faithful":  # bug B3 reproduced: the projections never learn
        assert trainable - got == {n for n in trainable if n.split(".")[0] in ("emo_proj", "per_proj")}
    else:
        assert got == trainable


@pytest.mark.parametrize("modality", ["body", "audio"])
def test_frozen_submodels_eval_switch(modality):
    for frozen_eval in (False, True):
        model = build_stage2(modality, input_dim=DEMO_DIMS[modality], seed=0, frozen_submodels_eval=frozen_eval).train()
        with torch.no_grad(): a, b = model(clips(modality), LENGTHS), model(clips(modality), LENGTHS)
        for key in ("stage1_emotion_logits", "stage1_personality_scores"):
            assert torch.equal(a[key], b[key]) == frozen_eval, (modality, frozen_eval, key)
        assert not torch.equal(a["emotion_logits"], b["emotion_logits"])  # stage-2 dropout is on either way
        model.eval()
        assert not any(m.training for m in model.modules())


def with_garbage(x, extra=3):
    return torch.cat([x, 5 * torch.randn(x.shape[0], extra, x.shape[2], generator=torch.Generator().manual_seed(7))], 1)


@pytest.mark.parametrize("modality", MODALITIES)
def test_padding_ignored_when_masked_and_leaking_when_faithful(faithful, corrected, modality):
    x = clips(modality)
    for models, invariant in ((corrected, True), (faithful, False)):
        model = models[modality].eval()
        with torch.no_grad(): a, b = model(x, LENGTHS), model(with_garbage(x), LENGTHS)
        change = max((a[k] - b[k]).abs().max().item() for k in STAGE3_KEYS)
        assert (change < 1e-4) == invariant, (modality, invariant, change)


def test_real_mamba_switch():
    model = build_stage2("face", input_dim=64, seed=0, encoder="mamba", **CORRECTED).eval()
    keys = model.state_dict()
    assert "emo_model.emotion_encoder.layers.0.mixer.A_log" in keys and "emo_model.emotion_encoder.norm_f.weight" in keys
    assert not any(k.endswith("s_B.weight") for k in keys)
    x = clips("face")
    with torch.no_grad(): a, b = model(x, LENGTHS), model(with_garbage(x), LENGTHS)
    for k in STAGE3_KEYS: torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)
    # a real sequence model: the emotion features depend on the order of the steps
    with torch.no_grad():
        f, g = model.emo_model(x)["features"], model.emo_model(x.flip(1))["features"].flip(1)
    assert (f - g).abs().max() > 1e-3
    released = build_stage1("face", "emotion", input_dim=64, seed=0).eval()
    with torch.no_grad():
        torch.testing.assert_close(released(x)["features"], released(x.flip(1))["features"].flip(1))


def test_unrelated_clip_pairing(corrected):
    model = corrected["text"].eval()
    xe, xp = clips("text", steps=4, seed=1), clips("text", steps=9, seed=2)
    le, lp = torch.tensor([4, 2]), torch.tensor([9, 5])
    with torch.no_grad():
        out = model(xe, le, xp, lp)
        padded = model(pad_steps(xe, 9), le, xp, lp)
        emo_only = model.emo_model(xe, le)
    assert out["emotion_sequence"].shape == out["personality_sequence"].shape == (2, 9, 256)
    for k in STAGE3_KEYS: torch.testing.assert_close(out[k], padded[k], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["stage1_emotion_logits"], emo_only["emotion_logits"])


def test_stage3_inputs(corrected, faithful):
    model = corrected["scene"].train()
    x, lengths = clips("scene", batch=5, steps=7, seed=3), torch.tensor([7, 2, 5, 1, 6])
    a, b = stage3_inputs(model, x, lengths, batch_size=2), stage3_inputs(model, x, lengths, batch_size=5)
    assert {k: tuple(v.shape) for k, v in a.items()} == {"features": (5, 1536), "emotion_logits": (5, 7),
                                                        "personality_scores": (5, 5)}
    for k in STAGE3_KEYS: torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)
    assert model.training and not model.emo_model.training and not any(v.requires_grad for v in a.values())
    # faithful, one clip at a time = that clip alone, cut to its own length
    one = stage3_inputs(faithful["body"], clips("body"), LENGTHS, batch_size=1)
    with torch.no_grad(): alone = faithful["body"].eval()(clips("body")[1:, :3])
    torch.testing.assert_close(one["features"][1:], alone["features"])


def test_bad_inputs_name_the_problem(faithful):
    body = faithful["body"]
    with pytest.raises(ValueError, match="modality must be one of"): build_stage2("video")
    with pytest.raises(ValueError, match="task must be one of"): build_stage1("body", "valence")
    with pytest.raises(ValueError, match="emotion_x must have 64 features"): body(torch.randn(2, 6, 65))
    with pytest.raises(ValueError, match="emotion_x lengths must lie in"): body(clips("body"), torch.tensor([7, 1]))
    with pytest.raises(ValueError, match="same batch size"): body(clips("body"), None, clips("body", batch=3))
    with pytest.raises(ValueError, match="activation must be one of"): build_stage1("body", "personality", activation="tanh")
