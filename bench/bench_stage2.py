"""CPU time of one stage-2 training step (forward + backward) per modality, at the released sizes and the paper's
input widths (CLIP 512, wav2vec2 1024, BGE 384), for a batch of 32 clips of 30 steps.

    python bench/bench_stage2.py [--threads N] [--repeats R] [--batch B] [--steps T] [--corrected] [--modalities ...]

Prints a Markdown table: parameters (trainable / total) and the median of R wall-clock times in milliseconds
(after one warm-up step). The frozen stage-1 models run inside the step, as in training. Not part of the test suite.
"""
import argparse, platform, statistics, time

import torch

from ssl_mepr.labels import MODALITIES
from ssl_mepr.unimodal import CORRECTED, PAPER_INPUT_DIMS, build_stage2


def training_step(model, x, lengths):
    "One forward and backward pass with a loss that touches both outputs."
    model.zero_grad(set_to_none=True)
    out = model(x, lengths)
    (out["emotion_logits"].logsumexp(-1).mean() + out["personality_scores"].abs().mean()).backward()


def median_ms(fn, repeats):
    "Median wall-clock time of fn() over `repeats` runs, in milliseconds, after one warm-up run."
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--corrected", action="store_true", help="padding masks and eval-mode frozen models")
    ap.add_argument("--modalities", nargs="+", default=list(MODALITIES), choices=MODALITIES)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mode = "corrected" if args.corrected else "faithful"
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads; "
          f"stage-2 train step, batch {args.batch} x {args.steps} steps, {mode}; median of {args.repeats}")
    print("| modality | input | trainable params | total params | ms / step |")
    print("|---|---|---|---|---|")
    for m in args.modalities:
        model = build_stage2(m, seed=0, **(CORRECTED if args.corrected else {})).train()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.batch, args.steps, PAPER_INPUT_DIMS[m], generator=g)
        lengths = torch.randint(args.steps // 2, args.steps + 1, (args.batch,), generator=g)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        ms = median_ms(lambda: training_step(model, x, lengths), args.repeats)
        print(f"| {m} | {PAPER_INPUT_DIMS[m]} | {trainable:,} | {total:,} | {ms:.0f} |", flush=True)


if __name__ == "__main__":
    main()
