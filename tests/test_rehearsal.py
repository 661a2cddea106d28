"""The README's real-data commands, end to end, on the rehearsal corpus: a miniature CMU-MOSEI and FIv2 written in their
official formats with the real corpora's faults planted (`ssl_mepr.rehearsal`). Each step runs as a user types it, in
a fresh process: prepare -> extract -> train (stages 1..3) -> report -> predict. Every dev and test clip must be scored,
every planted fault reported where the user will see it, and every clip's id must name its own media files."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ssl_mepr.corpora import read_manifest
from ssl_mepr.extractors import save_tiny_backbones
from ssl_mepr.features import find_store, read_failures
from ssl_mepr.rehearsal import write_rehearsal_corpora

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def ssl_mepr(*args, ok=True):
    "Run `ssl-mepr ARGS` in a fresh process; the completed process (its exit code checked when `ok`)."
    out = subprocess.run([str(BIN / "ssl-mepr"), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=900)
    if ok: assert out.returncode == 0, f"ssl-mepr {args[0]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def summary_table(stdout: str) -> pd.DataFrame:
    "The per corpus, split and modality table `ssl-mepr extract` prints first."
    lines = stdout.splitlines()
    width = len(lines[0].split())
    rows = [line.split() for line in lines[1:] if len(line.split()) == width and line.split()[0] in ("mosei", "fiv2")]
    return pd.DataFrame(rows, columns=lines[0].split()).astype({c: int for c in ("stored", "failed", "skipped", "redone")})


def prepare_args(corpora, out, backbones):
    "The `ssl-mepr prepare` arguments for the rehearsal corpora, as the README writes them."
    s = corpora.sources
    return ["prepare", out, "--mosei-labels", s["mosei_labels"], "--mosei-folds", s["mosei_folds"],
            "--mosei-transcripts", s["mosei_transcripts"], "--mosei-media", s["mosei_media"],
            "--fiv2-annotations", s["fiv2_annotations"], "--fiv2-transcriptions", s["fiv2_transcriptions"],
            "--fiv2-media", s["fiv2_media"], "--backbones", backbones]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    "The whole real-data path, once: the folders and what each step printed."
    root = tmp_path_factory.mktemp("rehearsal")
    corpora = write_rehearsal_corpora(root / "official")
    tiny = save_tiny_backbones(root / "backbones")  # random weights, built from configs, saved in their real formats
    (root / "backbones.json").write_text(json.dumps({**tiny, "settings": {"n_frames": 4}}))
    corpus, runs = root / "corpus", root / "runs"
    out = {"prepare": ssl_mepr(*prepare_args(corpora, corpus, root / "backbones.json"))}
    out["extract"] = ssl_mepr("extract", corpus / "manifest.csv", "--store", corpus / "features",
                              "--backbones", corpus / "backbones.json", "--no-progress", "--device", "cpu")
    params = root / "rehearsal.yaml"
    params.write_text(f"run_name: rehearsal\nruns_root: {runs}\ncorpus: {corpus}\nmodel_width: 16\nmax_layers: 1\n"
                      "stage1_epochs: 2\nstage2_epochs: 2\nstage3_epochs: 3\npatience: 3\nbatch_size: 8\nprogress: false\ndevice: cpu\n")
    out["train"] = ssl_mepr("train", "--params", params)
    run = runs / "rehearsal"
    out["report"] = ssl_mepr("report", run, "--device", "cpu")
    video = next(Path(corpora.sources["mosei_media"]).rglob("-3g5yACwYnA_1.mp4"))
    out["predict"] = ssl_mepr("predict", video, "--run", run, "--json", root / "prediction.json", "--device", "cpu")
    return dict(root=root, corpora=corpora, corpus=corpus, run=run, out=out, video=video,
                manifest=read_manifest(corpus / "manifest.csv"))


def test_every_clip_of_every_official_split_is_kept_and_scored(rehearsal):
    manifest = rehearsal["manifest"]
    for (corpus, split), ids in rehearsal["corpora"].clips.items():
        assert sorted(manifest[(manifest.corpus == corpus) & (manifest.split == split)].clip_id) == sorted(ids), (corpus, split)
    metrics = json.loads((rehearsal["run"] / "stage3" / "metrics.json").read_text())
    for split in ("dev", "test"):
        rows = manifest[manifest.split == split]
        assert metrics[split]["clips_emotion"] == int((rows.corpus == "mosei").sum())
        assert metrics[split]["clips_personality"] == int((rows.corpus == "fiv2").sum())
    assert metrics["test"]["clips_with_face"] == len(manifest[manifest.split == "test"]) - 1  # the missing video
    assert metrics["dev"]["clips_without_any_modality"] == 1  # the segment without a transcript line: no files, no words
    summary = rehearsal["out"]["train"].stdout
    assert "clips_scored" in summary and "clips_in_split" in summary


def test_planted_faults_are_reported_where_the_user_looks(rehearsal):
    faults, corpus = rehearsal["corpora"].faults, rehearsal["corpus"]
    printed = rehearsal["out"]["prepare"].stdout
    assert f"'{faults['segment_without_transcript']}'" in printed and "match no transcript line" in printed
    assert faults["fold_id_absent_from_labels"] in printed
    assert "next: ssl-mepr extract" in printed
    coverage = pd.read_csv(corpus / "coverage.csv").set_index(["corpus", "split"])
    assert coverage.loc[("mosei", "dev"), "unmatched_segments"] == 1
    assert coverage.loc[("fiv2", "test"), "with_video"] == 2 and coverage.loc[("fiv2", "test"), "clips"] == 3
    assert coverage.loc[("mosei", "train"), "with_text"] == 5  # the empty transcript line
    reasons = lambda c, s, m: read_failures(find_store(corpus / "features", c, s, m)).set_index("clip_id").reason.to_dict()
    assert "no media file" in reasons("fiv2", "test", "face")[faults["missing_video"]]
    assert faults["missing_video"] not in reasons("fiv2", "test", "text")  # its transcript still gives the text
    assert faults["no_face"] in reasons("fiv2", "dev", "face") and faults["no_face"] not in reasons("fiv2", "dev", "scene")
    assert "no sound track" in reasons("fiv2", "train", "audio")[faults["no_sound_track"]]
    assert faults["empty_transcript"] in reasons("mosei", "train", "text")
    assert "failures table" in rehearsal["out"]["extract"].stdout


def test_ids_name_their_own_media_and_text(rehearsal):
    manifest, faults = rehearsal["manifest"], rehearsal["corpora"].faults
    with_video = manifest[manifest.video_path.notna()]
    assert (with_video.video_path.map(lambda p: Path(p).stem) == with_video.clip_id).all()
    mosei_audio = manifest[(manifest.corpus == "mosei") & manifest.audio_path.notna()]
    assert (mosei_audio.audio_path.map(lambda p: Path(p).stem) == mosei_audio.clip_id).all()
    assert faults["segment_number_gap"] in set(manifest.clip_id)
    assert faults["unlabelled_segment_on_disk"] not in set(manifest.clip_id)
    text = manifest.set_index("clip_id").text
    assert text[faults["segment_number_gap"]] == "and then it was great"
    assert "naïve" in text[faults["non_ascii_transcript_mosei"]] and text[faults["non_ascii_transcript_fiv2"]] == "Ich heiße Zoë, enchanté"


def test_report_and_predict(rehearsal):
    run = rehearsal["run"]
    assert (run / "report" / "tables.ipynb").exists() and (run / "report" / "correlations.ipynb").exists()
    assert any((run / "figures").iterdir())
    result = json.loads((rehearsal["root"] / "prediction.json").read_text())
    assert set(result["traits"]) and result["modalities"]["face"]["used"]
    features = json.loads((run / "features.json").read_text())
    assert len(features["stores"]) == 2 * 3 * 5 and "weights_sha256" in features["configs"]["audio"]["backbone"]


def test_predict_refuses_backbones_other_than_the_features(rehearsal, tmp_path):
    other = save_tiny_backbones(tmp_path / "other", seed=1)  # the same widths, other weights
    (tmp_path / "other.json").write_text(json.dumps(other))
    out = ssl_mepr("predict", rehearsal["video"], "--run", rehearsal["run"], "--backbones", tmp_path / "other.json", ok=False)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "not the one the run's features were extracted with" in out.stderr and "--allow-other-backbones" in out.stderr
    ssl_mepr("predict", rehearsal["video"], "--run", rehearsal["run"], "--backbones", tmp_path / "other.json",
             "--allow-other-backbones", "--device", "cpu")


def test_prepare_again_is_byte_identical_and_bad_input_writes_nothing(rehearsal, tmp_path):
    corpus, root = rehearsal["corpus"], rehearsal["root"]
    before = {p.name: p.read_bytes() for p in corpus.iterdir() if p.is_file()}
    ssl_mepr(*prepare_args(rehearsal["corpora"], corpus, root / "backbones.json"))
    assert {p.name: p.read_bytes() for p in corpus.iterdir() if p.is_file()} == before
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"train": ["-3g5yACwYnA"], "holdout": ["zk2jTlAtvSU"]}))
    args = prepare_args(rehearsal["corpora"], tmp_path / "new", root / "backbones.json")
    args[args.index("--mosei-folds") + 1] = folds
    out = ssl_mepr(*args, ok=False)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "holdout" in out.stderr
    assert not (tmp_path / "new").exists()


def test_a_fixed_transcript_is_extracted_again(rehearsal):
    "Last: it changes the corpus. The user fills the empty transcript line and runs prepare and extract again."
    corpora, corpus, root = rehearsal["corpora"], rehearsal["corpus"], rehearsal["root"]
    again = ssl_mepr("extract", corpus / "manifest.csv", "--store", corpus / "features", "--backbones", corpus / "backbones.json",
                     "--no-progress", "--device", "cpu")
    nothing = summary_table(again.stdout)
    assert nothing[["stored", "failed", "redone"]].to_numpy().sum() == 0 and len(nothing) == 2 * 3 * 5
    video_id = corpora.faults["empty_transcript"].rsplit("_", 1)[0]
    transcript = Path(corpora.sources["mosei_transcripts"]) / f"{video_id}.txt"
    words = transcript.read_text(encoding="utf-8")
    assert "2.500___\n" in words
    transcript.write_text(words.replace("2.500___\n", "2.500___now it has words\n"), encoding="utf-8")
    ssl_mepr(*prepare_args(corpora, corpus, root / "backbones.json"))
    fixed = ssl_mepr("extract", corpus / "manifest.csv", "--store", corpus / "features", "--backbones", corpus / "backbones.json",
                     "--no-progress", "--device", "cpu")
    table = summary_table(fixed.stdout)
    row = table[(table.corpus == "mosei") & (table.split == "train") & (table.modality == "text")].iloc[0]
    assert (row.stored, row.redone) == (1, 1)
    assert rehearsal["corpora"].faults["empty_transcript"] not in read_failures(find_store(corpus / "features", "mosei", "train", "text")).clip_id.tolist()
