"""The GradNorm benchmark runs as BENCHMARKS.md quotes it: every kind side by side, and the stage-3 step split into its parts."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "bench_gradnorm.py"


def run_bench(*args: str) -> str:
    "The bench's printed report, after a run with the given arguments."
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(BENCH), "--threads", "1", "--steps", "2", "--warmup", "1", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def milliseconds(report: str) -> dict:
    "Each printed row's name and milliseconds, from 'name   12.34 ...' and 'name:  12.34 ms/step' lines."
    rows = {}
    for line in report.splitlines():
        m = re.match(r"\s*([\w ,()-]+?):?\s+(-?\d+\.\d+)(?: ms/step|\s|$)", line)   # the room at 2x may be negative
        if m: rows[m.group(1).strip()] = float(m.group(2))
    return rows


def test_every_kind_side_by_side_on_the_mlp():
    report = run_bench("--model", "mlp", "--d-in", "32", "--hidden", "32", "--rounds", "2")
    times = milliseconds(report)
    for kind in ("plain", "reference", "batched", "watched", "two_pass", "stage3"): assert times[kind] > 0, report
    assert len(re.findall(r"speed-up of \w+ over reference: \d+\.\d+x", report)) == 4, report


def test_the_fusion_model_with_three_terms():
    report = run_bench("--model", "fusion", "--kinds", "reference,stage3", "--terms", "3")
    assert "3 loss terms" in report and "speed-up of stage3 over reference" in report, report


def test_the_stage3_step_split_into_its_parts():
    sys.path.insert(0, str(BENCH.parent))
    from bench_gradnorm import PHASES   # the phase names, as the bench defines them
    report = run_bench("--model", "fusion", "--phases", "--terms", "4")
    times = milliseconds(report)
    assert set(PHASES) <= set(times), report
    # with two timed steps a median is a mean, so the disjoint phases add up to no more than the GradNorm step
    assert sum(times[k] for k in PHASES) <= times["GradNorm step"] + 0.1, report   # 0.1: the printed values are rounded
    parts = ("forward", "loss terms", "GradNorm step", "optimizer (fused Adam)")
    assert sum(times[k] for k in parts) <= times["step"] + 0.1, report


def test_the_floor_and_the_ceiling_against_the_reference():
    sys.path.insert(0, str(BENCH.parent))
    from bench_gradnorm import FLOOR
    report = run_bench("--model", "fusion", "--phases", "--terms", "3")
    times = milliseconds(report)
    assert all(times[f"products in {k}"] > 0 for k in ("_pass_gradients", "_two_pass_norms", "_total_gradient_pieces")), report
    assert abs(times["floor"] - sum(times[k.strip()] if k.startswith(" ") else times[k] for k in FLOOR)) <= 0.05 * len(FLOOR), report
    assert times["floor"] < times["step"], report   # the floor leaves out the hooks, the planning and the bookkeeping
    assert times["ceiling"] == pytest.approx(times["reference step"] / times["floor"], abs=0.02), report
    assert times["speed-up"] == pytest.approx(times["reference step"] / times["step"], abs=0.02), report
    assert times["room for the rest at 2x"] == pytest.approx(times["reference step"] / 2 - times["floor"], abs=0.05), report


def test_phases_need_the_fusion_model():
    done = subprocess.run([sys.executable, str(BENCH), "--phases", "--model", "mlp"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0 and "--model fusion" in done.stderr
