"""`ssl-mepr import-released` as a user runs it: checkpoints in the authors' layouts (written by `export_released` from a
tiny trained run) become a run folder that `ssl-mepr predict` uses; a bad checkpoint is one line and exit code 2, and
nothing is written."""
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def ssl_mepr(*args) -> subprocess.CompletedProcess:
    "The `ssl-mepr` command in a fresh process."
    return subprocess.run([str(BIN / "ssl-mepr"), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600)


@pytest.fixture(scope="module")
def authors_files(tiny_predict_run, tmp_path_factory):
    "The tiny run's stage-2 models (all but text) and fusion model, written in the authors' layouts."
    from ssl_mepr.checkpoints import export_released
    from ssl_mepr.labels import MODALITIES
    from ssl_mepr.predict import load_run
    from ssl_mepr.run import load_fusion
    folder = tmp_path_factory.mktemp("authors")
    models = load_run(tiny_predict_run, device="cpu")
    stage2 = {m: export_released(models.stage2[m], folder / f"{m}_stage2.pt") for m in ("body", "face", "scene", "audio")}
    stage3 = export_released(load_fusion(tiny_predict_run, MODALITIES, device="cpu"), folder / "stage3.pt")
    return folder, stage3, stage2


def import_args(run, stage3, stage2, backbones) -> list:
    return ["import-released", run, "--stage3", stage3, *[a for m, p in stage2.items() for a in ("--stage2", f"{m}={p}")], "--backbones", backbones]


def test_an_imported_run_predicts(authors_files, tiny_predict_run, tmp_path):
    from ssl_mepr.media import write_portrait_clip
    _, stage3, stage2 = authors_files
    out = ssl_mepr(*import_args(tmp_path / "published", stage3, stage2, tiny_predict_run / "backbones.json"))
    assert out.returncode == 0, out.stderr
    assert "masked, no checkpoint given: text" in out.stdout and "ssl-mepr predict" in out.stdout
    clip = write_portrait_clip(tmp_path / "clip.mp4", seconds=2.0)
    out = ssl_mepr("predict", clip, "--run", tmp_path / "published", "--json", "-", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [m for m, v in result["modalities"].items() if v["used"]] == ["body", "face", "scene", "audio"]
    assert abs(sum(result["emotions"].values()) - 1) < 1e-5
    out = ssl_mepr("predict", clip, "--run", tmp_path / "published", "--json", "-", "--device", "cpu", "--preset", "app")
    assert out.returncode == 0, out.stderr
    as_app = json.loads(out.stdout)  # the authors' app's choices: every frame feeds the face stream, trait scores as logits
    assert as_app["switches"] == {"app_crops": True, "distinct_frames": True, "scores_as_logits": True, "n_frames": 30}
    assert as_app["frames"]["with_face"] == as_app["frames"]["sampled"] and as_app["modalities"]["face"]["steps"] >= 30
    assert max(abs(as_app["traits"][k] - result["traits"][k]) for k in result["traits"]) > 1e-4
    out = ssl_mepr("predict", clip, "--run", tmp_path / "published", "--json", "-", "--device", "cpu", "--preset", "app",
                   "--no-app-crops", "--no-distinct-frames", "--no-scores-as-logits")  # every switch back: the kit's prediction
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["traits"] == pytest.approx(result["traits"], abs=1e-6)
    again = ssl_mepr(*import_args(tmp_path / "published", stage3, stage2, tiny_predict_run / "backbones.json"))
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr


@pytest.mark.parametrize("name, edit, words", [
    ("missing", lambda s: s.pop("emo_head.weight"), "1 missing"),
    ("extra", lambda s: s.update({"extra.weight": torch.zeros(2)}), "1 unexpected"),
    ("reshaped", lambda s: s.update({"pkl_head.bias": torch.zeros(3)}), "pkl_head.bias expected [5] found [3]"),
    ("pickled", lambda s: s.update({"made_in": Path("/elsewhere")}), "refused"),
])
def test_a_bad_stage3_checkpoint_is_one_line_and_writes_nothing(authors_files, tiny_predict_run, tmp_path, name, edit, words):
    folder, stage3, stage2 = authors_files
    state = dict(torch.load(stage3, weights_only=True)); edit(state)
    bad = tmp_path / f"{name}.pt"; torch.save(state, bad)
    out = ssl_mepr(*import_args(tmp_path / "run", bad, stage2, tiny_predict_run / "backbones.json"))
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and words in out.stderr and f"{name}.pt" in out.stderr, out.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.importing").exists()
