"Integration tests of ssl_mepr.extractors on tiny random-weight backbones: saving, loading, precision, bad input."
import hashlib, json, shutil, time, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata

import ssl_mepr.extractors as ex
from ssl_mepr.extractors import (AudioEncoder, BackboneError, Backbones, ImageEncoder, SpeechRecognizer, TextEncoder,
                                 load_backbones, save_tiny_backbones)

RNG = np.random.default_rng(7)
CLIPS = [(0.1 * RNG.standard_normal(n)).astype(np.float32) for n in (3200, 16000, 640)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_backbones(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def audio(tiny): return AudioEncoder(tiny["audio"]["source"])


def file_digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_tiny_backbones_are_byte_identical_for_one_seed(tmp_path):
    started = time.perf_counter()
    save_tiny_backbones(tmp_path / "a", seed=3, whisper=True)
    elapsed = time.perf_counter() - started
    save_tiny_backbones(tmp_path / "b", seed=3, whisper=True)
    save_tiny_backbones(tmp_path / "c", seed=4, whisper=True)
    a, b, c = (file_digests(tmp_path / x) for x in "abc")
    assert a == b and len(a) >= 15 and any(k.startswith("whisper/") for k in a)
    weights = [k for k in a if k.endswith(".safetensors")]
    assert len(weights) == 4 and all(a[k] != c[k] for k in weights)
    assert elapsed < 60, elapsed  # about 1 s once the libraries are imported; generous for a shared machine


def test_tiny_backbones_leave_the_global_generator_alone(tmp_path):
    torch.manual_seed(11); expected = torch.rand(3)
    torch.manual_seed(11); save_tiny_backbones(tmp_path, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_dims_are_honoured(tmp_path):
    config = save_tiny_backbones(tmp_path, dims={"audio": 32, "text": 16, "image": 8})
    loaded = load_backbones(config)
    assert (loaded.audio.dim, loaded.text.dim, loaded.image.dim) == (32, 16, 8)
    assert loaded.image(np.zeros((2, 40, 50, 3), np.uint8)).shape == (2, 8)


def test_load_backbones_relative_to_base_dir(tiny, tmp_path):
    root = Path(tiny["audio"]["source"]).parent
    relative = {"audio": {"source": "audio", "batch_size": 2}, "text": "text",
                "image": {"source": "image", "model_name": "ViT-B-32"}}
    loaded = load_backbones(relative, base_dir=root, device="cpu")
    assert isinstance(loaded, Backbones) and loaded.asr is None
    assert loaded.audio.batch_size == 2 and loaded.text.dim == 48 and loaded.image.dim == 64
    assert loaded.audio.config == AudioEncoder(tiny["audio"]["source"]).config
    assert load_backbones({"text": "text"}, base_dir=root).audio is None
    with pytest.raises(BackboneError, match="audio: not found locally and network use is off"):
        load_backbones({"audio": "audio"}, base_dir=tmp_path / "elsewhere")
    with pytest.raises(BackboneError, match="backbones config, text: .*unexpected keyword argument 'width'"):
        load_backbones({"text": {"source": "text", "width": 3}}, base_dir=root)


def test_config_is_json_and_independent_of_the_folder(tiny, tmp_path):
    copy = tmp_path / "moved_audio"; shutil.copytree(tiny["audio"]["source"], copy)
    moved, original = AudioEncoder(copy).config, AudioEncoder(tiny["audio"]["source"]).config
    assert moved == original and json.loads(json.dumps(original)) == original


def test_text_config_follows_the_tokenizer(tiny, tmp_path):
    copy = tmp_path / "text"; shutil.copytree(tiny["text"]["source"], copy)
    before = TextEncoder(copy).config
    vocab = (copy / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab[2000], vocab[2001] = vocab[2001], vocab[2000]
    (copy / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (copy / "tokenizer.json").unlink()
    after = TextEncoder(copy).config
    assert after["weights_sha256"] == before["weights_sha256"] and after["tokenizer_sha256"] != before["tokenizer_sha256"]


def test_bf16_on_cpu_warns_and_is_ignored(tiny, audio):
    with pytest.warns(UserWarning, match="bf16=True is ignored on cpu"):
        half = AudioEncoder(tiny["audio"]["source"], device="cpu", bf16=True)
    assert half.bf16 is False and half.config == audio.config
    for a, b in zip(half(CLIPS), audio(CLIPS)): np.testing.assert_array_equal(a, b)
    with pytest.warns(UserWarning, match="ignored"):
        assert load_backbones({"text": tiny["text"]}, device="cpu", bf16=True).text.bf16 is False


@pytest.mark.parametrize("bad, message", [
    (np.zeros(4000, np.int16), "waveform 1: dtype int16"),
    (np.zeros((2, 4000), np.float32), r"waveform 1: shape \(2, 4000\), expected mono"),
    (np.zeros((4000, 2), np.float32), "expected mono"),
    (np.full(4000, np.nan, np.float32), "NaN"),
    (np.zeros(399, np.float32), "waveform 1: 399 samples, shorter than the 400"),
])
def test_bad_waveforms_are_named(audio, bad, message):
    with pytest.raises(ValueError, match=message): audio([CLIPS[0], bad])


def test_audio_input_forms(audio):
    with pytest.raises(ValueError, match="list of 1-D arrays"): audio(CLIPS[0])
    with pytest.raises(ValueError, match="expects 16000 Hz"): audio(CLIPS, sample_rate=44100)
    as_float64 = audio([CLIPS[1].astype(np.float64)])[0]
    np.testing.assert_allclose(as_float64, audio([CLIPS[1]])[0], atol=1e-5)
    assert as_float64.dtype == np.float32


def test_audio_order_and_batch_size_do_not_matter(tiny, audio):
    many = [CLIPS[i % 3][: 640 + 320 * i] for i in range(7)]
    one_by_one = AudioEncoder(tiny["audio"]["source"], batch_size=1)(many)
    batched = AudioEncoder(tiny["audio"]["source"], batch_size=5)(many)
    assert [len(x) for x in batched] == list(audio.output_lengths([len(m) for m in many]))
    for a, b in zip(one_by_one, batched): np.testing.assert_allclose(a, b, atol=1e-4)


def test_group_norm_models_run_one_clip_at_a_time(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16,) * 7, feat_extract_norm="group", do_stable_layer_norm=False,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=8)
    Wav2Vec2Model(config).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(tmp_path)
    encoder = AudioEncoder(tmp_path, batch_size=8)
    assert not encoder.batchable and encoder.batch_size == 1
    together = encoder(CLIPS)
    for clip, states in zip(CLIPS, together): np.testing.assert_allclose(encoder([clip])[0], states, atol=1e-5)


def test_text_order_batching_and_sentence_transformers_layout(tiny, tmp_path):
    texts = ["a", "a much longer sentence with many more words in it", "", "two words", "x " * 40]
    encoder = TextEncoder(tiny["text"]["source"], batch_size=2)
    together = encoder(texts)
    for text, states in zip(texts, together): np.testing.assert_allclose(encoder([text])[0], states, atol=1e-4)
    assert [len(s) for s in together] == [len(encoder.tokenizer(t)["input_ids"]) for t in texts]
    # the older sentence-transformers layout: the transformer in a sub-folder that modules.json names
    shutil.copytree(tiny["text"]["source"], tmp_path / "st" / "0_Transformer")
    (tmp_path / "st" / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    nested = TextEncoder(tmp_path / "st")
    assert nested.config == encoder.config
    np.testing.assert_allclose(nested(texts[1:2])[0], together[1], atol=1e-5)
    with pytest.raises(ValueError, match="not one string"): encoder("hello")
    with pytest.raises(ValueError, match="text 0: float"): encoder([float("nan")])


def test_image_from_a_weights_file_and_quick_gelu(tiny, tmp_path):
    import open_clip
    cfg = json.loads((Path(tiny["image"]["source"]) / "open_clip_config.json").read_text())["model_cfg"]
    (tmp_path / "tiny-test-vit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "tiny-test-vit.json")
    from safetensors.torch import load_file
    torch.save(load_file(Path(tiny["image"]["source"]) / "open_clip_model.safetensors"), tmp_path / "weights.pt")
    from_folder = ImageEncoder(tiny["image"]["source"])
    from_file = ImageEncoder(tmp_path / "weights.pt", model_name="tiny-test-vit")
    quick = ImageEncoder(tmp_path / "weights.pt", model_name="tiny-test-vit", quick_gelu=True)
    crops = [skdata.chelsea(), skdata.coffee()[50:90, 10:300]]
    np.testing.assert_allclose(from_file(crops), from_folder(crops), atol=1e-5)
    assert not from_file.quick_gelu and quick.quick_gelu and quick.config != from_file.config
    assert not np.allclose(quick(crops), from_file(crops), atol=1e-3)
    assert from_file.config["weights_sha256"] == ex.files_sha256(tmp_path / "weights.pt")
    with pytest.raises(BackboneError, match="no-such-arch: not an open_clip model name"):
        ImageEncoder(tmp_path / "weights.pt", model_name="no-such-arch")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="broken.pt: cannot be loaded as open_clip tiny-test-vit weights"):
        ImageEncoder(tmp_path / "broken.pt", model_name="tiny-test-vit")


def test_torchscript_files_are_recognised(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "plain.pt")
    assert ex._is_torchscript(tmp_path / "scripted.pt") and not ex._is_torchscript(tmp_path / "plain.pt")


def test_image_batches_and_bad_images(tiny):
    encoder = ImageEncoder(tiny["image"]["source"], batch_size=3)
    images = [skdata.astronaut()[: 20 + 30 * i, : 200 - 15 * i] for i in range(7)]
    together = encoder(images)
    assert together.shape == (7, 64)
    np.testing.assert_allclose(np.concatenate([encoder([im]) for im in images]), together, atol=1e-5)
    with pytest.raises(ValueError, match=r"image 0: shape \(10, 10\)"): encoder([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match=r"image 0: shape \(0, 10, 3\)"): encoder([np.zeros((0, 10, 3), np.uint8)])


def test_missing_and_malformed_backbones(tiny, tmp_path):
    with pytest.raises(BackboneError, match=f"{tmp_path}/nothing: no such file or folder"): AudioEncoder(tmp_path / "nothing")
    with pytest.raises(BackboneError, match="cannot be loaded as a Wav2Vec2 model"): AudioEncoder(tiny["image"]["source"])
    with pytest.raises(BackboneError, match="cannot be loaded as a transformers text encoder"): TextEncoder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BackboneError, match="cannot be loaded"): TextEncoder(tmp_path)


def test_hub_ids_fail_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(BackboneError, match="network use is off"): TextEncoder("BAAI/bge-small-en-v1.5")
    with pytest.raises(BackboneError, match="network use is off"): AudioEncoder("audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim")
    with pytest.raises(BackboneError, match="laion2b_s34b_b79k: open_clip pretrained tag"): ImageEncoder("laion2b_s34b_b79k")
    with pytest.raises(BackboneError, match="network use is off"): SpeechRecognizer("openai/whisper-large-v3-turbo")
    assert time.perf_counter() - started < 20


def test_speech_recognizer_joins_chunks():
    recognizer = object.__new__(SpeechRecognizer)
    recognizer.sampling_rate, calls = 16000, []
    def fake_pipeline(inputs, return_timestamps):
        calls.append((inputs["sampling_rate"], len(inputs["raw"]), return_timestamps))
        return {"text": " ignored", "chunks": [{"text": " Hello"}, {"text": " there. "}]}
    recognizer.pipeline = fake_pipeline
    assert recognizer(np.zeros(16000, np.float32)) == "Hello there."
    assert calls == [(16000, 16000, True)]
    recognizer.pipeline = lambda inputs, return_timestamps: {"text": "  only text "}
    assert recognizer(np.zeros(800, np.float32)) == "only text"
    with pytest.raises(ValueError, match="expects 16000 Hz"): recognizer(np.zeros(800, np.float32), sample_rate=8000)
    with pytest.raises(ValueError, match="expected mono"): recognizer(np.zeros((2, 800), np.float32))


def test_tiny_whisper_through_load_backbones(tmp_path):
    config = save_tiny_backbones(tmp_path, seed=0, whisper=True)
    assert sorted(config) == ["asr", "audio", "image", "text"]
    asr = load_backbones({"asr": config["asr"]}, device="cpu", bf16=True).asr  # bf16 is not passed to ASR: no warning
    speech = (0.1 * RNG.standard_normal(16000 * 2)).astype(np.float32)
    text = asr(speech)
    assert isinstance(text, str) and asr(speech) == text
    assert asr(speech.astype(np.float64)) == text
    assert asr.config == SpeechRecognizer(config["asr"]["source"]).config and len(asr.config["weights_sha256"]) == 64


def test_paper_backbones_name_the_papers_models():
    assert ex.PAPER_BACKBONES["audio"]["source"] == "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim"
    assert ex.PAPER_BACKBONES["text"]["source"] == "BAAI/bge-small-en-v1.5"
    assert ex.PAPER_BACKBONES["image"] == {"source": "openai", "model_name": "ViT-B-32"}


def test_openai_torchscript_file(tmp_path):
    "OpenAI's release format: a TorchScript archive of a QuickGELU CLIP; widths are multiples of 64 as in theirs."
    import open_clip
    torch.manual_seed(0)
    model = open_clip.CLIP(16, vision_cfg={"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
                           text_cfg={"context_length": 8, "vocab_size": 64, "width": 64, "heads": 1, "layers": 1},
                           quick_gelu=True).eval()
    pixels, tokens = torch.randn(1, 3, 32, 32), torch.zeros(1, 8, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (pixels, tokens), check_trace=False)
        torch.jit.save(traced, tmp_path / "ViT-tiny.pt")
    encoder = ImageEncoder(tmp_path / "ViT-tiny.pt")
    assert encoder.quick_gelu and encoder.dim == 16 and encoder.config["model_cfg"]["format"] == "OpenAI TorchScript"
    photo = skdata.astronaut()
    expected = model.encode_image(open_clip.image_transform(32, is_train=False)(__import__("PIL").Image.fromarray(photo))[None])
    np.testing.assert_allclose(encoder([photo]), expected.detach().numpy(), atol=1e-4)
    with pytest.raises(BackboneError, match="need QuickGELU"): ImageEncoder(tmp_path / "ViT-tiny.pt", quick_gelu=False)
