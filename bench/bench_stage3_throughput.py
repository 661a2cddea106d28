"""Stage-3 training throughput on CPU at the paper's size.

Synthetic stage-3 inputs with the paper's widths (body 2048, face 1024, scene 1536, audio 512, text 512) for
16,274 MOSEI-like + 6,000 FIv2-like training clips, batches of 32 mixed corpora, the released model, loss and
two-wallet GradNorm. Measures (a) the trainer's loop (`ssl_mepr.training._train_epoch`: batching by index,
GradNorm, optimiser step) over `--steps` batches and (b) the same steps without the loop around them (model
forward + loss + GradNorm + Adam on pre-built batches), then the loop's rate at several batch sizes.

    python bench/bench_stage3_throughput.py --steps 100 --threads 2
"""
import argparse, time
import torch
from ssl_mepr.fusion import FusionModel, RELEASED_INPUT_DIMS
from ssl_mepr.gradients import TwoWalletGradNorm
from ssl_mepr.losses import MultiTaskLoss
from ssl_mepr.stages import Stage3Task
from ssl_mepr.training import TensorData, TrainConfig, ProcessContext, make_optimizer, _train_epoch


def paper_sized_data(n_mosei=16_274, n_fiv2=6_000, seed=0) -> TensorData:
    "Random stage-3 inputs at the paper's widths; NaN label rows for the other corpus."
    g = torch.Generator().manual_seed(seed); n = n_mosei + n_fiv2
    emo = torch.rand(n, 7, generator=g); emo = emo / emo.sum(1, keepdim=True); emo[n_mosei:] = float("nan")
    pkl = torch.rand(n, 5, generator=g); pkl[:n_mosei] = float("nan")
    return TensorData({"features": {m: torch.randn(n, d, generator=g) for m, d in RELEASED_INPUT_DIMS.items()},
                       "emotion_logits": {m: torch.randn(n, 7, generator=g) for m in RELEASED_INPUT_DIMS},
                       "personality_scores": {m: torch.rand(n, 5, generator=g) for m in RELEASED_INPUT_DIMS},
                       "emotion": emo, "personality": pkl})


def loop_rate(data, batch_size, steps):
    "Clips per second of the trainer's epoch loop over the first `steps` batches."
    torch.manual_seed(0); model = FusionModel(seed=0); task = Stage3Task()
    cfg = TrainConfig(batch_size=batch_size, progress=False, deterministic=False)
    opt = make_optimizer(model.parameters(), cfg); sub = TensorData(data.take(torch.arange(steps * batch_size)))
    _train_epoch(model, task, TensorData(data.take(torch.arange(3 * batch_size))), opt, cfg, ProcessContext(), torch.Generator().manual_seed(0), 0)  # warm-up
    t = time.perf_counter(); _train_epoch(model, task, sub, opt, cfg, ProcessContext(), torch.Generator().manual_seed(1), 1)
    return steps * batch_size / (time.perf_counter() - t)


def step_rate(data, batch_size, steps):
    "Clips per second of forward + loss + GradNorm + Adam alone, on batches built beforehand."
    torch.manual_seed(0); model = FusionModel(seed=0); task = Stage3Task()
    opt = make_optimizer(model.parameters(), TrainConfig())  # the trainer's optimiser (fused Adam)
    batches = [data.take(torch.arange(i * batch_size, (i + 1) * batch_size)) for i in range(steps + 3)]
    def step(b):
        opt.zero_grad(set_to_none=True); task.loss(model, b); opt.step()
    for b in batches[:3]: step(b)
    t = time.perf_counter()
    for b in batches[3:]: step(b)
    return steps * batch_size / (time.perf_counter() - t)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("--steps", type=int, default=100); ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(); torch.set_num_threads(a.threads)
    data = paper_sized_data()
    loop, alone = loop_rate(data, 32, a.steps), step_rate(data, 32, a.steps)
    print(f"threads {a.threads}, batch 32, {a.steps} steps: loop {loop:.0f} clips/s ({32e3 / loop:.1f} ms/batch), "
          f"step alone {alone:.0f} clips/s ({32e3 / alone:.1f} ms/batch), loop overhead {100 * (alone / loop - 1):.1f}%")
    for bs in (16, 32, 64, 128, 256):
        print(f"batch {bs:4d}: loop {loop_rate(data, bs, max(a.steps * 32 // bs, 10)):.0f} clips/s")
