"""`ssl-mepr train` trains a run family from `--seeds` or a parameter file's `seeds` list: one run per seed under the
family's folder, one shared corpus, resumable; a bad seed list is one line, exit 2; params/family.yaml is read."""
import json, os, subprocess, sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TINY = dict(demo_size="tiny", modalities=["face"], model_width=16, max_layers=1, stage1_epochs=1, stage2_epochs=1, stage3_epochs=1,
            progress=False)


def train(*args):
    return subprocess.run([str(BIN / "ssl-mepr"), "train", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=900)


def test_seeds_flag_trains_one_run_per_seed_on_one_corpus(tmp_path):
    params = tmp_path / "p.yaml"; params.write_text(yaml.safe_dump({**TINY, "run_name": "fam"}))
    out = train("--params", params, "--runs-root", tmp_path, "--seeds", "3,4", "--stage", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    family = tmp_path / "fam"
    assert json.loads((family / "family.json").read_text())["seeds"] == [3, 4]
    for s in (3, 4):
        run = json.loads((family / f"seed-{s}" / "params.json").read_text())
        assert run["seed"] == s and run["corpus"] == str((family / "corpus").resolve())
        assert (family / f"seed-{s}" / "stage1" / "face" / "emotion" / "best.pt").exists()
    again = train("--params", params, "--runs-root", tmp_path, "--seeds", "3,4", "--stage", "1")   # resumes: nothing retrained
    assert again.returncode == 0, again.stderr[-2000:]


def test_file_seeds_and_bad_seed_lists(tmp_path):
    params = tmp_path / "p.yaml"; params.write_text(yaml.safe_dump({**TINY, "run_name": "fam", "seeds": [5]}))
    out = train("--params", params, "--runs-root", tmp_path, "--stage", "1")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "two or more seeds" in out.stderr, out.stderr
    out = train("--params", params, "--runs-root", tmp_path, "--seeds", "1,one")
    assert out.returncode == 2 and "seeds must be whole numbers" in out.stderr, out.stderr
    assert not (tmp_path / "fam").exists()   # refused before anything was written


def test_a_stage_notebook_refuses_a_family_file():
    from ssl_mepr.run import check_run_params, read_params, RunParameterError
    import pytest
    with pytest.raises(RunParameterError, match="seeds names a run family"):
        check_run_params(read_params(ROOT / "params" / "family.yaml"), "params/family.yaml")
    from ssl_mepr.family import file_seeds
    assert file_seeds(ROOT / "params" / "family.yaml") == [42, 7, 123]
