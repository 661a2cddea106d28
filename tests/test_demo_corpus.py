"Integration tests of the embedded demo corpus: command line, determinism, and the planted structure."
import hashlib, json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score

from ssl_mepr.demo import (DEMO_DIMS, DOMAIN_GAIN, EMOTION_GAIN, TRAIT_GAIN, linear_probe,
                           load_truth, make_demo_corpus, pooled_demo_features)
from ssl_mepr.labels import EMOTIONS, MODALITIES, TRAITS, true_presence

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    "The full-size demo corpus, built once for this module."
    return make_demo_corpus(tmp_path_factory.mktemp("demo"), size="demo")


def file_digests(root: Path) -> dict:
    "sha256 of every file under root except the zip container of the ground truth (zip headers hold times)."
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "truth.npz"}


def test_cli_builds_and_summarises(tmp_path):
    out = subprocess.run([BIN / "ssl-mepr-demo-corpus", tmp_path / "c", "--size", "tiny"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert "mosei" in out.stdout and "fiv2" in out.stdout and "T_scene" in out.stdout
    spec = json.loads((tmp_path / "c" / "demo.json").read_text())
    assert spec["size"] == "tiny" and spec["dims"] == DEMO_DIMS


def test_cli_rejects_unknown_size(tmp_path):
    out = subprocess.run([BIN / "ssl-mepr-demo-corpus", tmp_path / "c", "--size", "huge"], capture_output=True, text=True)
    assert out.returncode != 0 and "--size must be one of" in out.stderr
    assert "Traceback" not in out.stderr


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a, b, c = (make_demo_corpus(tmp_path / n, seed=s, size="tiny") for n, s in (("a", 7), ("b", 7), ("c", 8)))
    assert file_digests(a) == file_digests(b)
    ta, tb = load_truth(a), load_truth(b)
    np.testing.assert_array_equal(ta.latent_traits, tb.latent_traits)
    assert not np.allclose(ta.latent_traits, load_truth(c).latent_traits)


def test_interrupted_build_is_rebuilt(tmp_path):
    root = make_demo_corpus(tmp_path / "x", size="tiny")
    digests = file_digests(root)
    (root / "demo.json").unlink()                       # as if killed before the completion marker
    next(root.glob("features/mosei/train/audio/*/shard-*.safetensors")).write_bytes(b"garbage")
    make_demo_corpus(root, size="tiny")
    assert file_digests(root) == digests


def test_linear_probe_learns_and_rewards_fusion(demo_root):
    single = {m: linear_probe(demo_root, [m]) for m in MODALITIES}
    fused = linear_probe(demo_root)
    assert fused["mWACC"] > 0.62                                            # chance is 0.5
    assert fused["mACC"] > fused["mACC_mean_baseline"] + 0.03
    assert fused["mWACC"] > max(r["mWACC"] for r in single.values()) + 0.02
    assert fused["mACC"] > max(r["mACC"] for r in single.values()) + 0.01


def test_probe_accuracy_follows_planted_informativeness(demo_root):
    "Per (modality, label) probe quality rises with the planted gain (times the corpus's domain gain)."
    gains, emo_scores, trait_gains, trait_scores = [], [], [], []
    for m in MODALITIES:
        Xtr, tr = pooled_demo_features(demo_root, "mosei", "train", [m])
        Xte, te = pooled_demo_features(demo_root, "mosei", "test", [m])
        ytr, yte = true_presence(tr[list(EMOTIONS)].to_numpy()), true_presence(te[list(EMOTIONS)].to_numpy())
        for c, emotion in enumerate(EMOTION_GAIN.index):
            clf = LogisticRegression(class_weight="balanced", C=0.05, max_iter=3000).fit(Xtr, ytr[:, c])
            emo_scores.append(balanced_accuracy_score(yte[:, c], clf.predict(Xte)))
            gains.append(EMOTION_GAIN.loc[emotion, m] * DOMAIN_GAIN.loc["mosei", m])
        Xtr, tr = pooled_demo_features(demo_root, "fiv2", "train", [m])
        Xte, te = pooled_demo_features(demo_root, "fiv2", "test", [m])
        pred = Ridge(alpha=10).fit(Xtr, tr[list(TRAITS)].to_numpy()).predict(Xte)
        for k, trait in enumerate(TRAITS):
            trait_scores.append(np.corrcoef(pred[:, k], te[trait])[0, 1])
            trait_gains.append(TRAIT_GAIN.loc[trait, m] * DOMAIN_GAIN.loc["fiv2", m])
    assert spearmanr(gains, emo_scores).statistic > 0.5
    assert spearmanr(trait_gains, trait_scores).statistic > 0.7


def test_traits_covary_with_emotions_as_planted(demo_root):
    "Happiness goes with higher traits, Sadness with lower ones, in the latent labels of both corpora."
    truth = load_truth(demo_root)
    for corpus in ("mosei", "fiv2"):
        sel = truth.corpus == corpus
        e, t = truth.latent_emotions[sel], truth.latent_traits[sel]
        happy = [np.corrcoef(e[:, 3], t[:, k])[0, 1] for k in range(5)]
        sad = [np.corrcoef(e[:, 4], t[:, k])[0, 1] for k in range(5)]
        assert min(happy) > 0.03 and max(sad) < -0.03, (corpus, happy, sad)
