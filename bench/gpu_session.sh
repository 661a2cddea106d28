#!/usr/bin/env bash
# The device checks of one GPU session (about 10 minutes on one H100), run from the repository root on a machine
# whose Python has torch with CUDA:
#   1. the selective scan: mamba-ssm's fused kernel (when installed) against the kit's PyTorch scans, on the GPU,
#      and the largest difference between them;
#   2. the three stage notebooks at the paper's model sizes (model_width null) on the demo corpus, trained on the
#      GPU through the documented command (`papermill ... -p device cuda`), three epochs per stage, timed;
#   3. extraction with the paper-sized backbones (bench/bench_extract.py) on the GPU, float32 and bf16.
# Results go to $OUT (default bench/gpu-out): gpu.txt, scan.txt, stages.txt, extract.txt and the executed notebooks.
#   OUT=/tmp/gpu bash bench/gpu_session.sh
set -uo pipefail
OUT=${OUT:-bench/gpu-out}; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONHASHSEED=0
PY=${PY:-python3}
$PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "note: the kit was not installed; using it from the working tree" >&2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"; } | tee "$OUT/gpu.txt"

$PY - <<'PY' 2>&1 | tee "$OUT/scan.txt"
import time, torch
from ssl_mepr.encoders import selective_scan, fused_selective_scan
g = torch.Generator(device="cuda").manual_seed(0)
for T in (30, 300, 3000):
    B, E, N = 8, 512, 16
    u, delta = torch.randn(B, T, E, device="cuda", generator=g), torch.rand(B, T, E, device="cuda", generator=g) * 0.1
    A, Bm, C = -torch.rand(E, N, device="cuda", generator=g), torch.randn(B, T, N, device="cuda", generator=g), torch.randn(B, T, N, device="cuda", generator=g)
    D = torch.randn(E, device="cuda", generator=g)
    modes = ["sequential", "parallel"] + (["fused"] if fused_selective_scan() is not None else [])
    outs, times = {}, {}
    for mode in modes:
        with torch.no_grad():
            for _ in range(2): outs[mode] = selective_scan(u, delta, A, Bm, C, D, mode=mode)
            torch.cuda.synchronize(); t = time.perf_counter()
            for _ in range(10): selective_scan(u, delta, A, Bm, C, D, mode=mode)
            torch.cuda.synchronize(); times[mode] = (time.perf_counter() - t) / 10 * 1e3
    diff = {m: float((outs[m] - outs["sequential"]).abs().max()) for m in modes}
    print(f"T={T}: " + ", ".join(f"{m} {times[m]:.2f} ms (max |diff| {diff[m]:.2e})" for m in modes))
if fused_selective_scan() is None: print("mamba-ssm is not installed here: the fused kernel was not measured")
PY

: > "$OUT/stages.txt"
for s in 1 2 3; do
  start=$(date +%s.%N)
  papermill nbs/stage$s.ipynb "$OUT/stage$s.ipynb" -f params/demo.yaml -y "model_width: null" -p device cuda \
    -p run_name gpu -p runs_root "$OUT/runs" -p stage1_epochs 3 -p stage2_epochs 3 -p stage3_epochs 3 -p compare_supervised False \
    --log-output --no-progress-bar > "$OUT/stage$s.log" 2>&1
  rc=$?; end=$(date +%s.%N)
  echo "stage $s (paper sizes, demo corpus, 3 epochs, device cuda): exit $rc, $(echo "$end - $start" | bc) s" | tee -a "$OUT/stages.txt"
  grep -m1 "device:" "$OUT/stage$s.log" | tee -a "$OUT/stages.txt"
done
cat "$OUT"/runs/gpu/stage3/timings.csv 2>/dev/null | tee -a "$OUT/stages.txt"

{ $PY bench/bench_extract.py --device cuda --repeats 3; $PY bench/bench_extract.py --device cuda --bf16 --repeats 3; } 2>&1 | tee "$OUT/extract.txt"
