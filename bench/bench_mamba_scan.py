"""CPU time of one `ssl_mepr.encoders.Mamba` forward pass (d_model 256, batch 8) with its PyTorch scans,
against the same forward with the textbook scan: a Python loop that discretises and updates the state one step at a time.

    python bench/bench_mamba_scan.py [--threads N] [--repeats R]

Prints a table of the best of R wall-clock times in milliseconds. Not part of the test suite.
"""
import argparse, platform, time
from unittest import mock

import torch

from ssl_mepr import encoders
from ssl_mepr.encoders import Mamba


def step_by_step_scan(u, delta, A, B, C, D, **_):
    "The textbook scan: one step at a time, everything computed inside the loop."
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1) + u * D


def best_times(fns, repeats):
    "Best wall-clock time of each fn() over `repeats` rounds, in milliseconds; rounds interleave the fns so load hits all alike."
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return [b * 1e3 for b in best]


def forward_with(model, scan, x):
    "One forward pass with the given scan: 'sequential', 'parallel' or 'loop' (the textbook scan)."
    if scan == "loop":
        with mock.patch.object(encoders, "selective_scan", step_by_step_scan): return model(x)
    model.scan = scan
    return model(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lengths", type=int, nargs="+", default=[30, 300, 3000])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Mamba(256).eval()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"Mamba(d_model=256): d_inner {model.d_inner}, d_state {model.d_state}; batch 8; best of {args.repeats}; ms")
    print(f"{'T':>6} {'sequential (CPU default)':>25} {'parallel':>10} {'step-by-step loop':>18}")
    for T in args.lengths:
        x = torch.randn(8, T, 256)
        scans = ("sequential", "parallel", "loop")
        with torch.no_grad():
            for scan in scans: forward_with(model, scan, x)  # warm-up
            times = best_times([lambda scan=scan: forward_with(model, scan, x) for scan in scans], args.repeats)
        print(f"{T:>6} {times[0]:>25.1f} {times[1]:>10.1f} {times[2]:>18.1f}")


if __name__ == "__main__":
    main()
