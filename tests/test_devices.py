"""The `device` parameter reaches every model and tensor: training, evaluation, the stage-3 inputs, the analysis and
explorer model calls, and predict (backbones included) run on the `meta` device (see meta_device.py), where any
tensor left behind on the CPU fails as it would on a GPU; every matrix product is counted by device. The pipeline
notebooks and `ssl-mepr-stage` take the parameter and refuse a device this machine does not have; bf16 autocast
trains."""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from meta_device import MetaExits
from ssl_mepr.run import run_spec
from ssl_mepr.stages import run_stages
from ssl_mepr.training import ProcessContext, load_checkpoint

META = torch.device("meta")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TINY = dict(demo_size="tiny", model_width=16, max_layers=1, stage1_epochs=1, stage2_epochs=1, stage3_epochs=1, progress=False)


def test_all_three_stages_run_on_the_given_device(tmp_path):
    "Stages 1-3 with the released rules (unrelated stage-2 pairs, GradNorm) on meta (the corrected configuration trains in test_run_params)."
    spec = run_spec(run_name="m", runs_root=tmp_path, **TINY)
    with MetaExits() as mode: run_stages(spec, 3, ProcessContext(device=META))
    assert mode.products["meta"] > 1000 and mode.products["cpu"] == 0, mode.products
    for best in [*spec.run_dir.glob("stage1/*/*/best.pt"), *spec.run_dir.glob("stage2/*/best.pt"), spec.run_dir / "stage3" / "best.pt"]:
        weights = load_checkpoint(best)["model"]
        assert weights and all(t.device == META for t in weights.values()), best  # saved from the device: the model was there
    assert len(list(spec.run_dir.glob("stage1/*/*/best.pt"))) == 10 and len(list(spec.run_dir.glob("stage2/*/best.pt"))) == 5


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    "A tiny run trained on the CPU, with the params.json and backbones predict needs."
    from ssl_mepr.run import write_run_params
    params = dict(run_name="c", runs_root=str(tmp_path_factory.mktemp("runs")), **TINY)
    spec = run_spec(**params)
    write_run_params(spec.run_dir, params)
    run_stages(spec, 3, ProcessContext())
    return spec.run_dir


def test_analysis_and_explorer_follow_the_device(cpu_run):
    from ssl_mepr.analysis import stage3_predictions
    from ssl_mepr.explore import load_explorer_data
    with MetaExits() as mode:
        clips = stage3_predictions(cpu_run, device=META)
        data = load_explorer_data(cpu_run, device=META)  # attention maps and Input×Gradient attributions too
    assert mode.products["meta"] > 0 and mode.products["cpu"] == 0, mode.products
    assert len(clips) == len(data.clips) > 0 and data.attributions.shape[0] == len(clips)
    with MetaExits() as on_cpu: stage3_predictions(cpu_run, device="cpu")
    assert on_cpu.products["meta"] == 0 and on_cpu.products["cpu"] > 0  # the counter tells the two apart


def test_predict_runs_backbones_and_models_on_the_device(cpu_run, tmp_path):
    from ssl_mepr.media import write_portrait_clip
    from ssl_mepr.predict import load_run, predict_video
    clip = write_portrait_clip(tmp_path / "clip.mp4", seconds=1.0)
    with MetaExits() as mode:
        models = load_run(cpu_run, device=META)
        result = predict_video(models, clip, transcript="a few words", attributions=True)
    assert all(p.device == META for m in models.stage2.values() for p in m.parameters())
    assert mode.products["meta"] > 0 and mode.products["cpu"] == 0, mode.products  # CLIP, Wav2Vec2, the text encoder too
    assert set(result["traits"]) and result["modalities"]["face"]["used"]


def test_pipeline_notebooks_take_a_device_parameter():
    import papermill as pm
    for name in ("stage1", "stage2", "stage3", "ablations", "correlations", "explore"):
        params = pm.inspect_notebook(str(ROOT / "nbs" / f"{name}.ipynb"))
        assert params["device"]["default"] == '"auto"', name
    for name in ("demo", "corrected", "paper"):
        assert yaml.safe_load((ROOT / "params" / f"{name}.yaml").read_text())["device"] == "auto"


def test_a_gpu_this_machine_lacks_stops_the_notebook_before_anything_is_written(tmp_path):
    if torch.cuda.is_available(): pytest.skip("this machine has CUDA")
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match="CUDA is not available"):
        pm.execute_notebook(str(ROOT / "nbs" / "stage1.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False,
                            parameters={"device": "cuda", "runs_root": str(tmp_path / "runs"), "demo_size": "tiny"})
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("device, message", [("gpu", "expected one of auto, cpu, cuda, cuda:N or mps"), ("cuda:7", "")])
def test_ssl_mepr_stage_refuses_a_bad_device_in_one_line(tmp_path, device, message):
    if device.startswith("cuda") and torch.cuda.is_available(): pytest.skip("this machine has CUDA")
    out = subprocess.run([str(BIN / "ssl-mepr-stage"), "1", "--device", device, "--runs-root", str(tmp_path), "--demo-size", "tiny"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"device {device!r}" in out.stderr and (message or "CUDA is not available") in out.stderr
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_ssl_mepr_predict_and_extract_refuse_a_bad_device_in_one_line(cpu_run, tmp_path):
    for cmd in (["predict", str(tmp_path / "any.mp4"), "--run", str(cpu_run)],
                ["extract", str(cpu_run / "corpus" / "manifest.csv"), "--store", str(tmp_path / "store"), "--backbones", str(cpu_run)]):
        out = subprocess.run([str(BIN / "ssl-mepr"), *cmd, "--device", "gpu"], capture_output=True, text=True, env=ENV, timeout=300)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "device 'gpu': expected one of auto, cpu, cuda" in out.stderr, out.stderr
    assert not (tmp_path / "store").exists()


def test_bf16_autocast_trains_and_is_part_of_the_run(tmp_path):
    "Stages 1-3 under bfloat16 autocast (on the CPU here): finite losses and metrics; resuming in fp32 is refused."
    spec = run_spec(run_name="b", runs_root=tmp_path, precision="bf16", **{**TINY, "stage3_epochs": 2})
    run_stages(spec, 3, ProcessContext())
    result = json.loads((spec.run_dir / "stage3" / "metrics.json").read_text())
    assert all(np.isfinite(v) for v in result["test"].values()) and 0 < result["test"]["mACC"] <= 1
    for epoch_log in (spec.run_dir / "stage3" / "metrics.csv", spec.run_dir / "stage1" / "face" / "emotion" / "metrics.csv"):
        assert np.isfinite(np.loadtxt(epoch_log, delimiter=",", skiprows=1, usecols=3)).all()  # train_loss
    (spec.run_dir / "stage3" / "metrics.json").unlink()
    with pytest.raises(ValueError, match="precision"):
        run_stages(run_spec(run_name="b", runs_root=tmp_path, **{**TINY, "stage3_epochs": 2}), 3, ProcessContext())
