"Released checkpoints: safe reading, wrappers, inferred sizes, strict reports, manifests, export (ssl_mepr.checkpoints)."
import json
import os
import pickle

import pytest
import torch

from ssl_mepr.checkpoints import (CheckpointError, export_released, load_released, read_released, safe_load_state_dict,
                                  sha256_file, strict_load, verify_manifest, write_manifest)
from ssl_mepr.fusion import RELEASED_INPUT_DIMS, FusionModel, example_inputs
from ssl_mepr.training import save_checkpoint
from ssl_mepr.labels import MODALITIES
from ssl_mepr.unimodal import MODALITY_CONFIGS, build_stage1, build_stage2

from released_layout import D, released_shapes


def authors_stage3_state_dict(seed=0):
    "The released stage-3 state dict (key list written by hand from the reference notes), random values."
    shapes = released_shapes()
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}


def fusion_outputs(model, seed=2, config=None):
    with torch.no_grad():
        out = model.eval()(*example_inputs(config or model.config, batch_size=4, seed=seed))
    return out.emotion_logits, out.personality_scores


def stage2_outputs(model, input_dim):
    x = torch.randn(3, 7, input_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model.eval()(x, torch.tensor([7, 3, 5]))
    return [out[k] for k in ("emotion_logits", "personality_scores", "features")]


def same(a, b): return all(torch.equal(x, y) for x, y in zip(a, b))


# --- stage 3 -----------------------------------------------------------------------------------------

def test_stage3_hand_written_authors_keys_load(tmp_path):
    sd = authors_stage3_state_dict()
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ssl_mepr_ckpt.pt")
    model = load_released(tmp_path / "ssl_mepr_ckpt.pt")
    assert not model.training and set(model.state_dict()) == set(sd)
    assert sum(p.numel() for p in model.parameters()) == 2_117_260
    reference = FusionModel()
    reference.load_state_dict(sd, strict=True)
    assert same(fusion_outputs(model), fusion_outputs(reference))


@pytest.mark.parametrize("layout", ["raw", "model_state_dict", "module_prefix", "our_run", "safetensors"])
def test_stage3_roundtrip_identical_outputs(tmp_path, layout):
    source = FusionModel(seed=3).eval()
    sd = source.state_dict()
    path = tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pt")
    if layout == "raw": torch.save(sd, path)
    elif layout == "model_state_dict": torch.save({"model_state_dict": sd}, path)
    elif layout == "module_prefix": torch.save({"model_state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    elif layout == "our_run": save_checkpoint(path, {"model": sd, "epoch": 4})
    else: export_released(source, path)
    loaded = load_released(path)
    assert loaded.config == source.config and same(fusion_outputs(loaded), fusion_outputs(source))


def test_stage3_other_widths_ablation_and_missing_trait_bank():
    dims = dict(body=40, face=24, scene=32, audio=8, text=16)
    source = FusionModel(seed=1, input_dims=dims, hidden_dim=64, use_graph_attention=False,
                         use_personality_predict_projector=False).eval()
    sd = {k: v for k, v in source.state_dict().items() if not k.startswith("guide_bank_pkl")}
    loaded = load_released(sd)
    c = loaded.config
    assert (c.input_dims, c.hidden_dim, c.use_graph_attention, c.use_personality_predict_projector) == (dims, 64, False, False)
    assert c.use_emotion_guide_bank and not c.use_personality_guide_bank and not hasattr(loaded, "guide_bank_pkl")
    assert same(fusion_outputs(loaded), fusion_outputs(source))
    # an override the weights cannot show (here: the disabled modalities) is applied
    assert load_released(sd, disabled_modalities=("audio",)).active_modalities == ("body", "face", "scene", "text")


def test_mismatch_reports_missing_unexpected_and_shapes_at_once(tmp_path):
    sd = dict(FusionModel(seed=0).state_dict())
    del sd["emo_head.bias"]
    sd["extra_head.weight"] = torch.zeros(3)
    sd["emo_logit_proj.weight"] = torch.zeros(D, 6)
    torch.save(sd, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError) as e:
        load_released(tmp_path / "damaged.pt")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'damaged.pt'}: does not fit FusionModel: 1 missing, 1 unexpected, 1 with another shape")
    assert "missing (1): emo_head.bias" in msg and "unexpected (1): extra_head.weight" in msg
    assert "shape differs (1): emo_logit_proj.weight expected [256, 7] found [256, 6]" in msg
    many = {f"junk.{i}": torch.zeros(1) for i in range(30)}
    with pytest.raises(CheckpointError, match=r"unexpected \(30\): .*\(20 more\)") as e:
        strict_load(torch.nn.Linear(2, 2), many, "junk.pt")
    assert "right stage and modality" in str(e.value) and len(str(e.value)) < 600


# --- stage 2 and stage 1 -----------------------------------------------------------------------------

@pytest.mark.parametrize("modality", MODALITIES)
def test_stage2_released_stage1_small_widths_roundtrip(tmp_path, modality):
    "build_stage2 with small stage-2 widths and a small input width, saved in the authors' layout."
    small = dict(hidden_dim=32) if modality == "audio" else dict(hidden_dim=32, out_features=32, num_layers=1)
    model = build_stage2(modality, input_dim=16, seed=0, **small).eval()
    if modality == "audio":
        torch.save({"config": {"hidden_dim": 32, "dropout": 0.2, "tr_heads": 4, "num_emotions": 7, "num_traits": 5},
                    "state_dict": model.state_dict()}, tmp_path / "best_fusion_overall_mamba.pt")
        path = tmp_path / "best_fusion_overall_mamba.pt"
    else:
        path = tmp_path / f"{modality}_fusion.pt"
        torch.save(model.state_dict(), path)
    loaded = load_released(path, stage=2, modality=modality)
    assert type(loaded) is type(model) and not loaded.training and loaded.hidden_dim == 32
    assert loaded.stage1_models()[0].input_dim == 16
    assert same(stage2_outputs(loaded, 16), stage2_outputs(model, 16))


@pytest.mark.parametrize("modality", MODALITIES)
def test_stage2_inferred_stage1_widths_via_export(tmp_path, modality):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        if modality == "audio":
            emo = build_stage1("audio", "emotion", input_dim=12, hidden_dim=24, num_layers=2)
            per = build_stage1("audio", "personality", input_dim=12, hidden_dim=16, num_layers=1)
            model = build_stage2("audio", emo, per, hidden_dim=16, num_heads=2, dropout=0.3)
        else:
            fam = lambda t: {"d_inner": 8} if MODALITY_CONFIGS[modality][t]["family"] == "mamba" else {}
            emo = build_stage1(modality, "emotion", input_dim=12, hidden_dim=32, out_features=16, num_layers=2, **fam("emotion"))
            per = build_stage1(modality, "personality", input_dim=12, hidden_dim=16, out_features=24, num_layers=3,
                               **fam("personality"))
            model = build_stage2(modality, emo, per, hidden_dim=32, out_features=40, num_layers=2)
    loaded = load_released(export_released(model, tmp_path / "w.pt"), stage=2, modality=modality)
    assert same(stage2_outputs(loaded, 12), stage2_outputs(model, 12))
    e, p = loaded.stage1_models()
    assert (e.hidden_dim, p.hidden_dim) == ((24, 16) if modality == "audio" else (32, 16))
    if modality == "audio":
        assert read_released(tmp_path / "w.pt")[1] == dict(hidden_dim=16, dropout=0.3, tr_heads=2, num_emotions=7, num_traits=5)
        assert loaded.mha_e2p.num_heads == 2


@pytest.mark.parametrize("task", ["emotion", "personality"])
@pytest.mark.parametrize("modality", MODALITIES)
def test_stage1_roundtrip(tmp_path, modality, task):
    kw = dict(hidden_dim=16, num_layers=2) if modality == "audio" else dict(hidden_dim=32, out_features=8, num_layers=2)
    model = build_stage1(modality, task, input_dim=12, seed=2, **kw).eval()
    path = export_released(model, tmp_path / "w.pt")
    raw = torch.load(path, weights_only=True)
    assert list(raw) == (["model_state_dict"] if (modality, task) == ("audio", "emotion") else list(model.state_dict()))
    loaded = load_released(path, stage=1, modality=modality, task=task)
    x = torch.randn(2, 5, 12)
    with torch.no_grad():
        assert torch.equal(model(x)[model.output_key], loaded(x)[loaded.output_key])


def test_wrong_stage_or_arguments_are_named(tmp_path):
    torch.save(FusionModel(seed=0).state_dict(), tmp_path / "stage3.pt")
    with pytest.raises(CheckpointError, match="right stage and modality"):
        load_released(tmp_path / "stage3.pt", stage=1, modality="audio", task="emotion")
    with pytest.raises(ValueError, match="modality must be one of"):
        load_released(tmp_path / "stage3.pt", stage=2)
    with pytest.raises(ValueError, match="stage must be one of"):
        load_released(tmp_path / "stage3.pt", stage=4)


# --- unsafe and broken files -------------------------------------------------------------------------

class Payload:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "payload_ran"
    torch.save({"w": torch.zeros(1), "x": Payload(marker)}, tmp_path / "zip.pt")
    for protocol in (2, 5):
        with open(tmp_path / f"plain{protocol}.pt", "wb") as f:
            pickle.dump({"x": Payload(marker)}, f, protocol=protocol)
    for name in ("zip.pt", "plain2.pt", "plain5.pt"):
        for load in (safe_load_state_dict, load_released):
            with pytest.raises(CheckpointError, match=f"^{tmp_path / name}: refused"):
                load(tmp_path / name)
    with pytest.raises(CheckpointError, match="posix.system"):
        safe_load_state_dict(tmp_path / "zip.pt")
    assert not marker.exists()


def test_files_that_are_not_checkpoints(tmp_path):
    (tmp_path / "readme.pt").write_text("weights are on the drive\n")
    with pytest.raises(CheckpointError, match="readme.pt: not a PyTorch checkpoint"):
        load_released(tmp_path / "readme.pt")
    torch.save({"epoch": 1}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="meta.pt: not a state dict"):
        safe_load_state_dict(tmp_path / "meta.pt")
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        safe_load_state_dict(tmp_path / "nowhere.pt")


# --- manifests ---------------------------------------------------------------------------------------

def test_manifest_catches_changed_byte_and_missing_file(tmp_path):
    (tmp_path / "audio").mkdir()
    torch.save(FusionModel(seed=0).state_dict(), tmp_path / "stage3.pt")
    (tmp_path / "audio" / "notes.bin").write_bytes(b"\x00" * 100)
    manifest = write_manifest(tmp_path)
    verify_manifest(manifest)
    assert load_released(tmp_path / "stage3.pt", manifest=manifest).config.hidden_dim == 256

    data = bytearray((tmp_path / "stage3.pt").read_bytes())
    data[-100] ^= 0x01
    (tmp_path / "stage3.pt").write_bytes(bytes(data))
    assert sha256_file(tmp_path / "stage3.pt") != json.loads(manifest.read_text())["stage3.pt"]["sha256"]
    (tmp_path / "audio" / "notes.bin").unlink()
    with pytest.raises(CheckpointError) as e:
        verify_manifest(manifest)
    msg = str(e.value)
    assert "2 of 2 files do not match" in msg and "stage3.pt: SHA-256" in msg and "audio/notes.bin: missing" in msg
    with pytest.raises(CheckpointError, match="stage3.pt: SHA-256"):
        load_released(tmp_path / "stage3.pt", manifest=manifest)
    torch.save(FusionModel(seed=0).state_dict(), tmp_path / "unlisted.pt")
    with pytest.raises(CheckpointError, match="unlisted.pt: not listed"):
        load_released(tmp_path / "unlisted.pt", manifest=manifest)
