"""Run parameters are checked once, before anything is written, by the command line and the notebooks alike; a run
folder resumes the same run or refuses; every shipped parameter file trains."""
import ast, hashlib, json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ssl_mepr.run import open_run

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TINY = dict(demo_size="tiny", modalities=["face"], model_width=16, max_layers=1, stage1_epochs=1, stage2_epochs=1, stage3_epochs=1)


def stage(n, *args):
    return subprocess.run([str(BIN / "ssl-mepr-stage"), str(n), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=900)


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_exit_2(out, *words):
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, (out.returncode, out.stderr[-2000:])
    for w in words: assert w in out.stderr, out.stderr


@pytest.mark.parametrize("bad, words", [
    ({"stage1_epoch": 3}, ["unknown parameter 'stage1_epoch'; did you mean 'stage1_epochs'?"]),
    ({"stage1_epochs": -1}, ["stage1_epochs: expected a whole number of at least 1, got -1"]),
    ({"lr_fusion": "fast"}, ["lr_fusion: expected a positive number"]),
    ({"modalities": ["face", "voice"]}, ["modalities: expected distinct modalities"]),
    ({"corpus": "no/such/folder"}, ["corpus: no/such/folder holds no manifest.csv"]),
])
def test_ssl_mepr_stage_refuses_bad_parameters_before_writing(tmp_path, bad, words):
    params = tmp_path / "p.yaml"; params.write_text(yaml.safe_dump({**TINY, **bad}))
    out = stage(1, "--params", params, "--runs-root", tmp_path / "runs")
    one_line_exit_2(out, str(params), *words)
    assert not (tmp_path / "runs").exists()


def test_a_parameter_file_that_is_not_a_mapping_is_one_line(tmp_path):
    params = tmp_path / "p.yaml"; params.write_text("- just\n- a list\n")
    one_line_exit_2(stage(1, "--params", params, "--runs-root", tmp_path / "runs"), "must be a mapping")


def test_a_run_folder_made_with_other_parameters_is_refused_untouched(tmp_path):
    open_run({**TINY, "run_name": "r", "runs_root": str(tmp_path), "progress": False})
    before = tree(tmp_path / "r")
    params = tmp_path / "p.yaml"; params.write_text(yaml.safe_dump({**TINY, "stage3_emotion_loss": "ce_soft"}))
    out = stage(3, "--params", params, "--runs-root", tmp_path, "--run-name", "r", "--seed", 7)
    one_line_exit_2(out, "this run was made with other parameters", "seed 42 -> 7", "stage3_emotion_loss 'ce_argmax' -> 'ce_soft'")
    assert tree(tmp_path / "r") == before


def test_a_misspelt_papermill_parameter_stops_the_notebook(tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match="did you mean 'stage1_epochs'"):
        pm.execute_notebook(str(ROOT / "nbs" / "stage1.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False,
                            parameters={"stage1_epoch": 3, "runs_root": str(tmp_path / "runs"), "demo_size": "tiny"})
    assert not (tmp_path / "runs").exists()


def parameters_cell(notebook: Path) -> dict:
    "The names and values a notebook's papermill parameters cell assigns (every statement must be `name = literal`)."
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    source = next("".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", []))
    out = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), ast.dump(node)
        out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_stage_notebook_lists_every_run_parameter_at_its_default(n):
    """The parameters cell is papermill's interface (a -p or -f name it lacks gets a warning), so it lists every run
    parameter; its values are the one definition's, so a parameter file gives one run whichever way it is run."""
    from ssl_mepr.devices import DEFAULT_DEVICE
    from ssl_mepr.run import RUN_DEFAULTS
    as_json = lambda d: {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
    assert as_json(parameters_cell(ROOT / "nbs" / f"stage{n}.ipynb")) == as_json({**RUN_DEFAULTS, "device": DEFAULT_DEVICE})


@pytest.mark.parametrize("name", ["demo", "corrected"])
def test_the_demo_configurations_name_only_what_they_change(name):
    "params/demo.yaml and corrected.yaml copy no default (besides the device and precision every file names), so a changed default reaches them."
    from ssl_mepr.run import RUN_DEFAULTS
    shipped = yaml.safe_load((ROOT / "params" / f"{name}.yaml").read_text())
    copied = {k for k, v in shipped.items() if k in RUN_DEFAULTS and v == RUN_DEFAULTS[k]} - {"precision"}
    assert not copied, copied


def test_the_study_notebooks_take_their_training_from_the_run():
    "The ablation and graph-attention notebooks retrain stage 3 as the run did: their run parameters are None (the run's) or absent."
    from ssl_mepr.run import RUN_DEFAULTS
    for name in ("ablations", "graph_attention"):
        cell = parameters_cell(ROOT / "nbs" / f"{name}.ipynb")
        assert all(cell[k] is None for k in cell if k in RUN_DEFAULTS and k not in ("run_name", "runs_root")), (name, cell)


def test_the_corrected_configuration_trains_all_three_stages(tmp_path):
    """params/corrected.yaml as shipped (every quirk switch corrected) through stage 3 with `ssl-mepr train`. Only what a
    test cannot afford changes: the tiny corpus, and one or two epochs per stage."""
    shipped = yaml.safe_load((ROOT / "params" / "corrected.yaml").read_text())
    params = tmp_path / "corrected.yaml"
    params.write_text(yaml.safe_dump({**shipped, "stage1_epochs": 1, "stage2_epochs": 1, "stage3_epochs": 2}))
    out = subprocess.run([str(BIN / "ssl-mepr"), "train", "--params", str(params), "--demo-size", "tiny", "--runs-root", str(tmp_path),
                          "--run-name", "c"], capture_output=True, text=True, env=ENV, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "next step: ssl-mepr report" in out.stdout
    assert "stage 3 · fusion" in out.stdout and (tmp_path / "c" / "stage3" / "metrics.json").exists()
    assert yaml.safe_load((ROOT / "params" / "corrected.yaml").read_text())["corrected"] is True


def test_the_paper_configuration_trains_all_three_stages(tmp_path):
    """params/paper.yaml as shipped (released model sizes, released optimisation, a prepared corpus folder) through
    stages 1-3. Only what a test cannot afford changes: the corpus is a prepared tiny one, and each stage runs one epoch."""
    from ssl_mepr.demo import make_demo_corpus
    from ssl_mepr.run import read_params
    from ssl_mepr.stages import run_stages, run_summary
    from ssl_mepr.training import ProcessContext
    params = read_params(ROOT / "params" / "paper.yaml")
    assert params["model_width"] is None and params["corpus"] != "demo"  # the released sizes, on a prepared corpus
    corpus = make_demo_corpus(tmp_path / "corpus", size="tiny")  # a corpus folder: manifest.csv + features/
    params.pop("device")
    spec = open_run({**params, "corpus": str(corpus), "runs_root": str(tmp_path / "runs"), "progress": False,
                     "stage1_epochs": 1, "stage2_epochs": 1, "stage3_epochs": 1}, "params/paper.yaml")
    assert spec.sizes is None  # the released architectures, not the demo's narrow ones
    run_stages(spec, 3, ProcessContext())
    table = run_summary(spec.run_dir, spec.manifest)
    assert ("stage 3 · fusion", "test") in table.index and np.isfinite(table.loc[("stage 3 · fusion", "test")]).all()


def test_a_corpus_with_an_empty_split_is_one_line_before_anything_is_written(tmp_path):
    from ssl_mepr.corpora import read_manifest, write_manifest
    from ssl_mepr.demo import make_demo_corpus
    corpus = make_demo_corpus(tmp_path / "corpus", size="tiny")
    manifest = read_manifest(corpus / "manifest.csv")
    write_manifest(manifest[~((manifest.corpus == "mosei") & (manifest.split == "dev"))], corpus / "manifest.csv")
    params = tmp_path / "p.yaml"; params.write_text(yaml.safe_dump({**TINY, "corpus": str(corpus)}))
    for out in (stage(1, "--params", params, "--runs-root", tmp_path / "runs"),
                subprocess.run([str(BIN / "ssl-mepr"), "train", "--params", str(params), "--runs-root", str(tmp_path / "runs")],
                               capture_output=True, text=True, env=ENV, timeout=300)):
        one_line_exit_2(out, "manifest.csv: no mosei clips in split 'dev'")
    assert not (tmp_path / "runs").exists()


def test_the_gatv2_graph_attention_trains_and_every_reader_rebuilds_it(tmp_path):
    "graph_attention_scoring: gatv2 as a run parameter: stage 3 has the GATv2 parameters, and analysis, explorer and predict load it."
    import torch
    from ssl_mepr.analysis import stage3_predictions
    from ssl_mepr.explore import load_explorer_data
    from ssl_mepr.predict import fusion_for, load_run
    from ssl_mepr.stages import run_stages
    spec = open_run({**TINY, "modalities": ["face", "text"], "runs_root": str(tmp_path), "run_name": "v2",
                     "graph_attention_scoring": "gatv2", "progress": False}, "test")
    run_stages(spec, 3)
    state = torch.load(spec.run_dir / "stage3" / "best.pt", weights_only=True)["model"]
    assert "graph_attn.pair.weight" in state and state["graph_attn.a"].shape == (256, 1)  # D-sized: the GATv2 layout
    assert len(stage3_predictions(spec.run_dir, device="cpu")) > 0
    assert load_explorer_data(spec.run_dir, splits=("test",), device="cpu").graph_attention.shape[1:] == (2, 2)
    models = load_run(spec.run_dir, device="cpu")
    assert fusion_for(models, ("face", "text")).state_dict()["graph_attn.pair.weight"].shape == (256, 512)
