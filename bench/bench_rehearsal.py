"""The README's real-data commands on the rehearsal corpus, timed step by step (wall clock, fresh processes).

The rehearsal corpus (`ssl_mepr.rehearsal`: 12 MOSEI segments and 11 FIv2 clips of about one second, in the official
formats, faults planted) goes through `ssl-mepr prepare`, `extract` (tiny random backbones, 4 frames per clip),
`train` (width 16, one layer, 2/2/3 epochs), `report` and `predict`, exactly as `tests/test_rehearsal.py` runs them.
What the steps cost beyond the models' arithmetic (start-up, decoding, detection, bookkeeping) shows here; the
backbones at the paper's sizes are timed by `bench/bench_extract.py`.

    python bench/bench_rehearsal.py
"""
import json, os, subprocess, sys, time
from pathlib import Path

from ssl_mepr.features import scratch_folder
from ssl_mepr.extractors import save_tiny_backbones
from ssl_mepr.rehearsal import write_rehearsal_corpora

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def timed(*args) -> float:
    "Run `ssl-mepr ARGS` in a fresh process; seconds of wall clock (an error stops the benchmark)."
    start = time.perf_counter()
    out = subprocess.run([str(BIN / "ssl-mepr"), *map(str, args)], capture_output=True, text=True, env=ENV)
    if out.returncode: sys.exit(f"ssl-mepr {args[0]} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - start


def main():
    root = scratch_folder("rehearsal-")  # removed when the benchmark exits
    start = time.perf_counter()
    corpora = write_rehearsal_corpora(root / "official")
    times = {"write the rehearsal corpora": time.perf_counter() - start}
    (root / "backbones.json").write_text(json.dumps({**save_tiny_backbones(root / "backbones"), "settings": {"n_frames": 4}}))
    s, corpus = corpora.sources, root / "corpus"
    times["prepare"] = timed("prepare", corpus, "--mosei-labels", s["mosei_labels"], "--mosei-folds", s["mosei_folds"],
                             "--mosei-transcripts", s["mosei_transcripts"], "--mosei-media", s["mosei_media"],
                             "--fiv2-annotations", s["fiv2_annotations"], "--fiv2-transcriptions", s["fiv2_transcriptions"],
                             "--fiv2-media", s["fiv2_media"], "--backbones", root / "backbones.json")
    times["extract (23 clips)"] = timed("extract", corpus / "manifest.csv", "--store", corpus / "features",
                                        "--backbones", corpus / "backbones.json", "--no-progress", "--device", "cpu")
    (root / "p.yaml").write_text(f"run_name: r\nruns_root: {root / 'runs'}\ncorpus: {corpus}\nmodel_width: 16\nmax_layers: 1\n"
                                 "stage1_epochs: 2\nstage2_epochs: 2\nstage3_epochs: 3\npatience: 3\nbatch_size: 8\nprogress: false\ndevice: cpu\n")
    times["train (stages 1-3)"] = timed("train", "--params", root / "p.yaml")
    times["report"] = timed("report", root / "runs" / "r", "--device", "cpu")
    video = next(Path(s["mosei_media"]).rglob("-3g5yACwYnA_1.mp4"))
    times["predict (one clip)"] = timed("predict", video, "--run", root / "runs" / "r", "--device", "cpu")
    print(f"{'step':<30} seconds")
    for step, t in times.items(): print(f"{step:<30} {t:7.1f}")
    print(f"{'total':<30} {sum(times.values()):7.1f}")


if __name__ == "__main__":
    main()
