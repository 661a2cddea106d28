"""Time one training step with two-wallet GradNorm: our implementation's paths against the released per-term loop.

The two-head MLP (about 2.1 M parameters) or the stage-3 fusion model at its released size (`--model fusion`),
batches of 32 mixed clips (23 MOSEI-like, 9 FIv2-like) with all four loss terms present (pseudo-label thresholds
lowered so both pseudo-label terms always have rows), Adam. One step = forward, loss terms, GradNorm update,
gradients, optimizer step. Prints the median of the timed steps for:

* plain: fixed weights, one backward of the sum (no GradNorm);
* reference: `ReferenceTwoWalletGradNorm`, one `autograd.grad` per term, then a backward of the total;
* batched: `TwoWalletGradNorm` unwatched, all per-term gradients in one vmapped pass;
* watched: `.watch(model, independent_rows=False)`, Gram-matrix norms for the linear maps, one vmapped pass;
* two_pass: `.watch(model)` on a model that declares independent rows (both models here do):
  one backward per group of row-disjoint terms, two for the four terms;
* stage3: two_pass with the trainer's optimiser (`training.make_optimizer(TrainConfig())`: PyTorch's fused Adam, the
  same update in one kernel): the whole step stage 3 runs.

Every other kind uses the default (per-tensor) Adam, as the authors' code does.

    python bench/bench_gradnorm.py [--steps 30] [--batch 32] [--device cpu] [--threads N] [--model mlp|fusion]
                                   [--kinds plain,reference,two_pass]
"""
import argparse
import statistics
import time

import torch

from ssl_mepr.losses import (MultiTaskLoss, ReferenceTwoWalletGradNorm, TwoHeadMLP, TwoWalletGradNorm,
                             mixed_batch)


def build(args):
    "The model and a forward function from a batch's inputs to (emotion logits, trait scores)."
    if args.model == "mlp":
        model = TwoHeadMLP(d_in=args.d_in, hidden=args.hidden, head_scale=4.0).to(args.device)
        return model, lambda x: model(x[0])
    from ssl_mepr.fusion import FusionModel, example_inputs  # the stage-3 model, released sizes (about 2.1 M parameters)
    model = FusionModel().to(args.device)
    def forward(x):
        out = model(*x)
        return out.emotion_logits, out.personality_scores
    return model, forward


def make_batches(args, g):
    "Eight batches of inputs and mixed-corpus targets."
    n_fiv2 = round(args.batch * 0.27)
    batches = []
    for i in range(8):
        x, emo_t, per_t = mixed_batch(args.batch - n_fiv2, n_fiv2, args.d_in, g)
        if args.model == "fusion":
            from ssl_mepr.fusion import example_inputs
            x = tuple({m: t.to(args.device) for m, t in d.items()} for d in example_inputs(batch_size=args.batch, seed=i))
        else: x = (x.to(args.device),)
        batches.append((x, emo_t.to(args.device), per_t.to(args.device)))
    return batches


def time_steps(kind: str, args) -> list[float]:
    "Seconds per step for one implementation ('plain' = fixed weights, one backward, no GradNorm)."
    torch.manual_seed(0)
    model, forward = build(args)
    if kind == "stage3":
        from ssl_mepr.training import TrainConfig, make_optimizer
        opt = make_optimizer(model.parameters(), TrainConfig())
    else: opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = MultiTaskLoss(tau_emotion=0.0, tau_personality=0.5)
    gn = {"batched": TwoWalletGradNorm, "watched": TwoWalletGradNorm, "two_pass": TwoWalletGradNorm, "stage3": TwoWalletGradNorm,
          "reference": ReferenceTwoWalletGradNorm}.get(kind, lambda: None)()
    if kind == "watched": gn.watch(model, independent_rows=False)
    if kind in ("two_pass", "stage3"): gn.watch(model, independent_rows=True)
    batches = make_batches(args, torch.Generator().manual_seed(0))
    times = []
    for step in range(args.warmup + args.steps):
        x, emo_t, per_t = batches[step % len(batches)]
        if args.device.startswith("cuda"): torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad()
        losses = criterion(*forward(x), emo_t, per_t)
        assert len(losses) == 4, sorted(losses)
        if kind in ("batched", "watched", "two_pass", "stage3"): gn.step(losses, model, set_grads=True)
        elif kind == "reference": gn.step(losses, model).backward()
        else: sum(losses.values()).backward()
        opt.step()
        if args.device.startswith("cuda"): torch.cuda.synchronize()
        if step >= args.warmup: times.append(time.perf_counter() - t0)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--d-in", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--model", choices=("mlp", "fusion"), default="mlp", help="the MLP or the stage-3 fusion model")
    p.add_argument("--kinds", default="plain,reference,batched,watched,two_pass,stage3", help="comma-separated subset to time")
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    n_params = sum(q.numel() for q in build(args)[0].parameters())
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, {args.model} with "
          f"{n_params:,} parameters, batch {args.batch}, 4 loss terms, median of {args.steps} steps")
    medians = {}
    what = {"plain": "fixed weights, one backward (no GradNorm)",
            "reference": "ReferenceTwoWalletGradNorm: autograd.grad per term, then backward",
            "batched": "TwoWalletGradNorm.step(set_grads=True): one vmapped pass",
            "watched": "the same after .watch(model, independent_rows=False): Gram-matrix norms for linear layers",
            "two_pass": "after .watch(model) on a model with independent rows: two row-split passes",
            "stage3": "two_pass with the trainer's fused Adam: the step stage 3 runs"}
    for kind in [k for k in what if k in args.kinds.split(",")]:
        medians[kind] = statistics.median(time_steps(kind, args))
        print(f"{kind:>10}: {1e3 * medians[kind]:8.2f} ms/step   {what[kind]}")
    for kind in [k for k in ("batched", "watched", "two_pass", "stage3") if k in medians and "reference" in medians]:
        print(f"speed-up of {kind} over reference: {medians['reference'] / medians[kind]:.2f}x")


if __name__ == "__main__":
    main()
