"""`ssl-mepr predict` latency for one 15-second clip at the paper's sizes, and its split by step.

The backbones are full-size architectures with random weights (ViT-B/32 through open_clip, a Wav2Vec2 shaped like
wav2vec2-large-robust-12, a BERT shaped like bge-small; built by `bench_extract.build_backbones`), the stage-2 models
and the fusion model are the released architectures at the paper's widths, also with random weights: the compute is
the real one, the predictions are meaningless. The clip: 15 s of the astronaut portrait at 30 frames/s, 640x360, with
a speech-like sound track; a 40-word transcript is given (no ASR). OpenCV's detectors (the default).

    python bench/bench_predict.py --threads 2 --repeats 3
"""
import argparse, json, os, statistics, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_extract import TRANSCRIPT, build_backbones  # noqa: E402

from ssl_mepr.extraction import ExtractionSettings  # noqa: E402
from ssl_mepr.extractors import load_backbones  # noqa: E402
from ssl_mepr.fusion import FusionConfig, FusionModel  # noqa: E402
from ssl_mepr.media import write_portrait_clip  # noqa: E402
from ssl_mepr.predict import PredictionModels, predict_video  # noqa: E402
from ssl_mepr.training import save_checkpoint  # noqa: E402
from ssl_mepr.unimodal import MODALITY_CONFIGS, PAPER_INPUT_DIMS, build_stage1, build_stage2  # noqa: E402


def paper_models(folder: Path) -> PredictionModels:
    "Full-size backbones and released-size stage-2 and stage-3 models (random weights; stage 3 saved in `folder` as a run saves it), ready for predict_video."
    paths = build_backbones(folder)
    backbones = load_backbones({"audio": {"source": str(paths["audio"])}, "text": {"source": str(paths["text"])},
                                "image": {"source": str(paths["image"]), "model_name": "ViT-B-32"}}, device="cpu")
    stage2 = {}
    for m in MODALITY_CONFIGS:
        E, P = (build_stage1(m, t, input_dim=PAPER_INPUT_DIMS[m], seed=0) for t in ("emotion", "personality"))
        stage2[m] = build_stage2(m, E, P, seed=0).eval()
    save_checkpoint(folder / "stage3" / "best.pt", {"model": FusionModel(FusionConfig()).state_dict()})  # a run folder's stage 3
    return PredictionModels(folder, backbones, ExtractionSettings(), stage2, torch.device("cpu"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2); parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter(); models = paper_models(tmp); load_s = time.perf_counter() - t
        clip = write_portrait_clip(tmp / "fifteen seconds.mp4", seconds=15.0, fps=30, height=360, width=640)
        predict_video(models, clip, TRANSCRIPT)  # warm-up (detectors, first-call allocations)
        results = [predict_video(models, clip, TRANSCRIPT) for _ in range(args.repeats)]
    runs = [r["timings"] for r in results]
    steps = list(runs[0])
    medians = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in steps}
    print(json.dumps({"threads": args.threads, "repeats": args.repeats, "build_and_load_s": round(load_s, 1),
                      "sequence_lengths": {m: v["steps"] for m, v in results[0]["modalities"].items()},
                      "median_s": {k: round(v, 3) for k, v in medians.items()}}, indent=1))


if __name__ == "__main__":
    main()
