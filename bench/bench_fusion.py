"""Stage-3 fusion model: forward + backward time per training batch on the CPU.

Released sizes (D = 256, 8 heads, dropout 0.2, five modalities), batch of 32, training mode, a loss over
both outputs; median over the timed repetitions after a warm-up. Usage:

    python bench/bench_fusion.py [--batch-size 32] [--repeats 50] [--warmup 10] [--threads N]
"""
import argparse
import platform
import statistics
import time

import torch

from ssl_mepr.fusion import FusionModel, example_inputs


def time_step(model, inputs):
    "Seconds for one forward + backward pass (gradients cleared first)."
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    out = model(*inputs)
    (out.emotion_logits.logsumexp(-1).mean() + out.personality_scores.mean()).backward()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads: torch.set_num_threads(args.threads)

    model = FusionModel(seed=0).train()
    inputs = example_inputs(model.config, args.batch_size, seed=0)
    for _ in range(args.warmup): time_step(model, inputs)
    times = sorted(time_step(model, inputs) for _ in range(args.repeats))
    q1, median, q3 = statistics.quantiles(times, n=4)
    print(f"fusion forward+backward, batch {args.batch_size}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}): "
          f"median {median * 1e3:.2f} ms (IQR {q1 * 1e3:.2f}-{q3 * 1e3:.2f} ms, {args.repeats} runs after {args.warmup} warm-up)")


if __name__ == "__main__":
    main()
