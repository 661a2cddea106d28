"""A run family under torchrun: two processes (gloo, CPU) each train their share of two seeds, one seed each, with no
data parallelism within a seed, and end with the family folder that one process trains: the same family.json, the
same shared corpus, and every seed's run with the same numbers."""
import json, os, subprocess, sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TINY = dict(demo_size="tiny", modalities=["face"], model_width=16, max_layers=1, stage1_epochs=1, stage2_epochs=1, stage3_epochs=2,
            run_name="fam", device="cpu", progress=False)
SEEDS = (3, 4)


def train_family(root: Path, params: Path, processes: int) -> subprocess.CompletedProcess:
    "`ssl-mepr train --seeds 3,4` into root, in one process or under torchrun."
    train = [str(BIN / "ssl-mepr"), "train", "--params", str(params), "--runs-root", str(root), "--seeds", ",".join(map(str, SEEDS))]
    launch = [] if processes == 1 else [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(processes), "--no-python"]
    return subprocess.run(launch + train, capture_output=True, text=True, env=ENV, timeout=600)


def run_record(run: Path) -> dict:
    "What a seed's run must agree on: its parameters (but its folders) and its stage-3 numbers."
    params = {k: v for k, v in json.loads((run / "params.json").read_text()).items() if k not in ("runs_root", "corpus")}
    return {"params": params, "metrics": json.loads((run / "stage3" / "metrics.json").read_text())}


@pytest.mark.slow
def test_torchrun_spreads_the_seeds_and_gives_the_one_process_family(tmp_path):
    params = tmp_path / "family.yaml"; params.write_text(yaml.safe_dump(TINY))
    one, two = train_family(tmp_path / "one", params, 1), train_family(tmp_path / "two", params, 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    # each process trained its own share: seeds[rank::2]
    assert "process 0 of 2: seeds [3]" in two.stdout and "process 1 of 2: seeds [4]" in two.stdout, two.stdout[-2000:]
    a, b = tmp_path / "one" / "fam", tmp_path / "two" / "fam"
    assert json.loads((a / "family.json").read_text()) == json.loads((b / "family.json").read_text())
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir()) == ["corpus", "family.json", "seed-3", "seed-4"]
    assert (b / "corpus" / "manifest.csv").read_bytes() == (a / "corpus" / "manifest.csv").read_bytes()   # one shared corpus, the same
    for s in SEEDS:   # no data parallelism within a seed: each run is the one-process family's, number for number
        assert json.loads((b / f"seed-{s}" / "params.json").read_text())["corpus"] == str((b / "corpus").resolve())
        assert run_record(b / f"seed-{s}") == run_record(a / f"seed-{s}")
    # process 0 printed the table of the whole family, once both seeds were trained
    assert "stage 3" in two.stdout and "stage 2 face" in two.stdout
