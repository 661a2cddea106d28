"""Time one training step with two-wallet GradNorm: our implementation's paths against the released per-term loop.

The two-head MLP (about 2.1 M parameters) or the stage-3 fusion model at its released size (`--model fusion`),
batches of 32 mixed clips (23 MOSEI-like, 9 FIv2-like), Adam. `--terms 4` (the default): all four loss terms present
(pseudo-label thresholds lowered so both pseudo-label terms always have rows); `--terms 3`: the emotion pseudo-label
term never has rows (its threshold at 1, which no probability exceeds), as in a stage-3 batch where no FIv2 clip is
confident about its emotion. One step = forward, loss terms, GradNorm update,
gradients, optimizer step. The kinds are built side by side and timed in alternating rounds (`--rounds`), so that a
stretch in which a shared machine is busy slows them all rather than one. Prints the median of the timed steps for:

* plain: fixed weights, one backward of the sum (no GradNorm);
* reference: `ReferenceTwoWalletGradNorm`, one `autograd.grad` per term, then a backward of the total;
* batched: `TwoWalletGradNorm` unwatched, all per-term gradients in one vmapped pass;
* watched: `.watch(model, independent_rows=False)`, Gram-matrix norms for the linear maps, one vmapped pass;
* two_pass: `.watch(model)` on a model that declares independent rows (both models here do):
  one backward per group of row-disjoint terms, two for the four terms;
* stage3: two_pass with the trainer's optimiser (`training.make_optimizer(TrainConfig())`: PyTorch's fused Adam, the
  same update in one kernel): the whole step stage 3 runs.

Every other kind uses the default (per-tensor) Adam, as the authors' code does.

`--phases` instead splits the stage-3 step into its parts, each timed inside the step: the forward (and, beside it, the
same model's forward without GradNorm's recording hooks, its graph dropped), the loss terms, the GradNorm step and its phases (the
engine's helpers in `ssl_mepr.gradients`, wrapped with a timer for the run), the optimiser step. Each timed step is
repeated with its matrix products clocked one by one (a dispatch mode; that repeat's other times are not used), and a
step of the released scheme is timed in turn with them. From these it prints the floor of any exact two-pass step (the
forward without hooks, the loss, the two passes, the Gram and weight-gradient products, the optimiser), the ceiling
(the reference's step over that floor) and how many ms a step 2x the reference may spend on everything else.

    python bench/bench_gradnorm.py [--steps 30] [--batch 32] [--device cpu] [--threads N] [--model mlp|fusion]
                                   [--kinds plain,reference,two_pass] [--terms 3|4] [--rounds 4] [--phases]
"""
import argparse
import functools
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ssl_mepr.gradients import TwoWalletGradNorm
from ssl_mepr.gradnorm import ReferenceTwoWalletGradNorm, TwoHeadMLP, mixed_batch
from ssl_mepr.losses import MultiTaskLoss


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


def stepper(kind: str, args):
    "A function that runs one timed training step of one implementation and returns its seconds ('plain' = no GradNorm)."
    torch.manual_seed(0)
    model, forward = build(args)
    if kind == "stage3":
        from ssl_mepr.training import TrainConfig, make_optimizer
        opt = make_optimizer(model.parameters(), TrainConfig())
    else: opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = MultiTaskLoss(tau_emotion=0.0 if args.terms == 4 else 1.0, tau_personality=0.5)
    gn = {"batched": TwoWalletGradNorm, "watched": TwoWalletGradNorm, "two_pass": TwoWalletGradNorm, "stage3": TwoWalletGradNorm,
          "reference": ReferenceTwoWalletGradNorm}.get(kind, lambda: None)()
    if kind == "watched": gn.watch(model, independent_rows=False)
    if kind in ("two_pass", "stage3"): gn.watch(model, independent_rows=True)
    batches, done = make_batches(args, torch.Generator().manual_seed(0)), [0]

    def step() -> float:
        x, emo_t, per_t = batches[done[0] % len(batches)]
        done[0] += 1
        if args.device.startswith("cuda"): torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad()
        losses = criterion(*forward(x), emo_t, per_t)
        assert len(losses) == args.terms, sorted(losses)
        if kind in ("batched", "watched", "two_pass", "stage3"): gn.step(losses, model, set_grads=True)
        elif kind == "reference": gn.step(losses, model).backward()
        else: sum(losses.values()).backward()
        opt.step()
        if args.device.startswith("cuda"): torch.cuda.synchronize()
        return time.perf_counter() - t0
    return step


def time_side_by_side(kinds: list, args) -> dict:
    "Seconds per step of each kind: warm-up steps first, then `rounds` rounds that each time every kind in turn."
    steppers = {kind: stepper(kind, args) for kind in kinds}
    for step in steppers.values():
        for _ in range(args.warmup): step()
    times = {kind: [] for kind in kinds}
    per_round = [len(r) for r in torch.arange(args.steps).tensor_split(args.rounds)]
    for n in per_round:   # a stretch where the shared machine is busy slows every kind, not one
        for kind, step in steppers.items(): times[kind] += [step() for _ in range(n)]
    return times


PHASES = {  # the helpers of `ssl_mepr.gradients` that one two-pass GradNorm step calls, in order
    "linear_plan": "which recorded linear calls cover which parameters",
    "_output_passes": "each term's gradient at the outputs; the passes",
    "_sort_parameters": "how each parameter's per-term gradients are read",
    "_pass_gradients": "the row-split backward passes (autograd)",
    "_layer_norm_clip_gradients": "LayerNorm per-clip gradients",
    "_module_gradients": "modules with parameters of their own",
    "_two_pass_norms": "per-term norms (Gram products)",
    "update_weights": "the two wallets' update",
    "_total_gradient_pieces": "the weighted total's gradient",
    "_add_gradient_rows": "into p.grad",
}


def timed(table: dict, name: str, f, inside: list | None = None):
    "`f`, adding each call's seconds to `table[name]`; while it runs, `name` is last in `inside` (the phase being run)."
    @functools.wraps(f)
    def wrapper(*a, **k):
        if inside is not None: inside.append(name)
        t0 = time.perf_counter()
        try: return f(*a, **k)
        finally:
            table[name] = table.get(name, 0.0) + time.perf_counter() - t0
            if inside is not None: inside.pop()
    return wrapper


MATRIX_PRODUCTS = ("mm", "bmm", "addmm", "baddbmm", "addmm_", "baddbmm_")  # aten operations that multiply matrices (matmul reaches the dispatcher as these)


class ProductClock(TorchDispatchMode):
    "Adds the seconds of every matrix product dispatched while active to `table[phase]`, the phase being `inside[-1]`."
    def __init__(self, table: dict, inside: list):
        super().__init__()
        self.table, self.inside = table, inside

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ not in MATRIX_PRODUCTS: return func(*args, **(kwargs or {}))
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        phase = self.inside[-1] if self.inside else "elsewhere"
        self.table[phase] = self.table.get(phase, 0.0) + time.perf_counter() - t0
        return out


def phases(args) -> dict:
    "Median ms of each part of the stage-3 step, of the matrix products in its GradNorm phases, and of the released scheme's step."
    import ssl_mepr.gradients as engine
    from ssl_mepr.training import TrainConfig, make_optimizer
    torch.manual_seed(0)
    model, forward = build(args)
    torch.manual_seed(0)
    twin, twin_forward = build(args)   # the same model without recording hooks
    reference = stepper("reference", args)   # the released scheme, timed in turn with the stage-3 step
    opt = make_optimizer(model.parameters(), TrainConfig())
    criterion = MultiTaskLoss(tau_emotion=0.0 if args.terms == 4 else 1.0, tau_personality=0.5)
    gn = TwoWalletGradNorm().watch(model, independent_rows=True)
    step_parts, products, inside, saved = {}, {}, [], {}
    for name in PHASES:
        owner = TwoWalletGradNorm if name == "update_weights" else engine
        saved[name] = (owner, getattr(owner, name))
        setattr(owner, name, timed(step_parts, name, saved[name][1], inside))
    batches, rows = make_batches(args, torch.Generator().manual_seed(0)), []
    def stage3_step(i: int, clock: ProductClock | None = None) -> list:   # the step's clock readings
        x, emo_t, per_t = batches[i % len(batches)]
        step_parts.clear()
        t = [time.perf_counter()]
        twin_forward(x)   # its graph is dropped at once
        t.append(time.perf_counter()); opt.zero_grad(); out = forward(x)
        t.append(time.perf_counter()); losses = criterion(*out, emo_t, per_t)
        t.append(time.perf_counter())
        if clock is None: gn.step(losses, model, set_grads=True)
        else:
            with clock: gn.step(losses, model, set_grads=True)
        t.append(time.perf_counter()); opt.step(); t.append(time.perf_counter())
        assert gn.last_path == "two_pass", gn.last_path
        return t
    try:
        for i in range(args.warmup + args.steps):
            ref = reference()
            t = stage3_step(i)
            parts = dict(step_parts)
            products.clear()
            stage3_step(i, ProductClock(products, inside))   # again, its matrix products clocked (which slows the rest)
            if i >= args.warmup:
                rows.append({"forward without recording hooks": t[1] - t[0], "forward": t[2] - t[1], "loss terms": t[3] - t[2],
                             "GradNorm step": t[4] - t[3], "optimizer (fused Adam)": t[5] - t[4], "step": t[5] - t[1],
                             **{f"  {k}": v for k, v in parts.items()},
                             **{f"products in {k}": v for k, v in products.items()}, "reference step": ref})
    finally:
        for name, (owner, f) in saved.items(): setattr(owner, name, f)
    return {k: 1e3 * statistics.median(r.get(k, 0.0) for r in rows) for k in rows[0]}


FLOOR = {  # what any exact two-pass step must do, whatever its engine: the parts of `phases` that add up to its floor
    "forward without recording hooks": "the forward",
    "loss terms": "the loss terms",
    "  _pass_gradients": "the two backward passes",
    "products in _two_pass_norms": "the Gram products of the per-term norms",
    "products in _total_gradient_pieces": "one weight-gradient product per linear map",
    "optimizer (fused Adam)": "the optimiser",
}


def print_phases(ms: dict):
    "The parts of the stage-3 step, then its floor against the released scheme's step."
    for name, value in ms.items():
        if name != "reference step": print(f"{name:<40} {value:8.2f}   {PHASES.get(name.strip(), '')}")
    floor = sum(ms.get(k, 0.0) for k in FLOOR)
    reference = ms["reference step"]
    print(f"{'reference step':<40} {reference:8.2f}   ReferenceTwoWalletGradNorm with per-tensor Adam, timed in turn")
    print(f"{'floor':<40} {floor:8.2f}   {', '.join(FLOOR.values())}")
    print(f"{'ceiling':<40} {reference / floor:8.2f}   x the reference: a step that did nothing beyond its floor")
    print(f"{'speed-up':<40} {reference / ms['step']:8.2f}   x the reference: this step")
    print(f"{'room for the rest at 2x':<40} {reference / 2 - floor:8.2f}   ms of hooks, planning and bookkeeping a 2x step may spend")


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
    p.add_argument("--rounds", type=int, default=4, help="the timed steps of every kind are spread over this many alternating rounds")
    p.add_argument("--terms", type=int, choices=(3, 4), default=4, help="loss terms per batch: 4, or 3 without emo_ssl")
    p.add_argument("--kinds", default="plain,reference,batched,watched,two_pass,stage3", help="comma-separated subset to time")
    p.add_argument("--phases", action="store_true", help="time the parts of the stage-3 step instead (--model fusion)")
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    if args.phases:
        if args.model != "fusion": p.error("--phases times the stage-3 step: use it with --model fusion")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, the stage-3 step's parts, {args.terms} loss terms, "
              f"median ms of {args.steps} steps after {args.warmup}")
        print_phases(phases(args))
        return
    n_params = sum(q.numel() for q in build(args)[0].parameters())
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, {args.model} with "
          f"{n_params:,} parameters, batch {args.batch}, {args.terms} loss terms, median of {args.steps} steps in {args.rounds} alternating rounds")
    medians = {}
    what = {"plain": "fixed weights, one backward (no GradNorm)",
            "reference": "ReferenceTwoWalletGradNorm: autograd.grad per term, then backward",
            "batched": "TwoWalletGradNorm.step(set_grads=True): one vmapped pass",
            "watched": "the same after .watch(model, independent_rows=False): Gram-matrix norms for linear layers",
            "two_pass": "after .watch(model) on a model with independent rows: two row-split passes",
            "stage3": "two_pass with the trainer's fused Adam: the step stage 3 runs"}
    times = time_side_by_side([k for k in what if k in args.kinds.split(",")], args)
    for kind in times:
        medians[kind] = statistics.median(times[kind])
        print(f"{kind:>10}: {1e3 * medians[kind]:8.2f} ms/step   {what[kind]}")
    for kind in [k for k in ("batched", "watched", "two_pass", "stage3") if k in medians and "reference" in medians]:
        print(f"speed-up of {kind} over reference: {medians['reference'] / medians[kind]:.2f}x")


if __name__ == "__main__":
    main()
