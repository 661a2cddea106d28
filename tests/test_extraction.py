"`ssl-mepr extract` into the feature store: killed and restarted gives the same files; torchrun splits the work."
import hashlib, json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssl_mepr.corpora import write_manifest
from ssl_mepr.extraction import ExtractionSettings
from ssl_mepr.extractors import save_tiny_backbones
from ssl_mepr.features import find_store, read_failures, read_sequences, writer_tag
from ssl_mepr.labels import EMOTIONS, TRAITS
from ssl_mepr.media import portrait_frames, write_clip, write_portrait_clip
from killing import killed_at, temporaries

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
MODALITIES = "face,scene,audio,text"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    "Ten generated clips (one unreadable, one mute) in a manifest with relative paths, and a backbones file."
    root = tmp_path_factory.mktemp("corpus")
    (root / "media").mkdir()
    rows = []
    for i in range(10):
        name = f"media/clip {i:02d}.mp4"
        if i == 3: (root / name).write_text("not a video")
        elif i == 6: write_clip(root / name, portrait_frames(12))
        else: write_portrait_clip(root / name, seconds=1.0 + 0.1 * i)
        corpus_name = "mosei" if i % 2 else "fiv2"
        labels = {e: (0.5 if e == "Happiness" else 0.0) if corpus_name == "mosei" else np.nan for e in EMOTIONS}
        labels |= {t: 0.5 if corpus_name == "fiv2" else np.nan for t in TRAITS}
        rows.append({"clip_id": f"c{i:02d}", "corpus": corpus_name, "split": "train", "video_path": name,
                     "audio_path": None, "text": f"sentence number {i} about the weather", **labels})
    write_manifest(pd.DataFrame(rows), root / "manifest.csv")
    config = save_tiny_backbones(root / "backbones")
    (root / "backbones.json").write_text(json.dumps({**config, "settings": ExtractionSettings().to_dict()}))
    return root


def extract(corpus, store, *extra, **kw):
    cmd = [str(BIN / "ssl-mepr"), "extract", str(corpus / "manifest.csv"), "--store", str(store),
           "--backbones", str(corpus / "backbones.json"), "--modalities", MODALITIES, "--chunk-size", "2", "--no-progress", *extra]
    return cmd if kw.get("command_only") else subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


def tree_hashes(store: Path) -> dict:
    "relative path -> sha256 of every file in a store."
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    store = tmp_path_factory.mktemp("stores") / "whole"
    out = extract(corpus, store)
    assert out.returncode == 0, out.stderr[-2000:]
    return store


def test_store_contents(uninterrupted):
    scene = read_sequences(find_store(uninterrupted, "fiv2", "train", "scene"))
    assert sorted(scene.clip_ids) == ["c00", "c02", "c04", "c06", "c08"] and set(scene.lengths) == {30}  # c06 is mute: scene fine
    audio = find_store(uninterrupted, "fiv2", "train", "audio")
    reasons = read_failures(audio).set_index("clip_id").reason
    assert "no sound track" in reasons["c06"]
    mosei_failed = read_failures(find_store(uninterrupted, "mosei", "train", "text")).set_index("clip_id").reason
    assert "not a readable media file" in mosei_failed["c03"]


@pytest.mark.parametrize("point", [
    "created:shard-:1",     # the first shard's temporary file exists, empty
    "written:shard-:7",     # a shard is complete under its temporary name, not yet renamed
    "written:failures:1",   # the failures table, mid-write (a clean kill between two files: the stage-3 test has one)
])
def test_sigkill_and_restart_gives_an_identical_store(corpus, uninterrupted, tmp_path, point):
    store = tmp_path / "killed"
    killed_at(point, extract(corpus, store, command_only=True), ENV)
    partial = tree_hashes(store)
    assert partial != tree_hashes(uninterrupted)
    if not point.startswith("renamed"): assert temporaries(store), "killed mid-write: the orphan temporary should be there"
    out = extract(corpus, store)
    assert out.returncode == 0, out.stderr[-2000:]
    assert tree_hashes(store) == tree_hashes(uninterrupted)  # no orphan, same shards, same failures tables


def test_a_restart_removes_a_dead_writers_temporary_and_keeps_a_live_ones(corpus, uninterrupted, tmp_path):
    "Beside a restarted extraction, the temporary of another running process (another rank, say) survives; a dead one's goes."
    store = tmp_path / "store"; shutil.copytree(uninterrupted, store)
    host = writer_tag().split("~")[0]
    dead = subprocess.Popen(["sleep", "0"]); dead.wait()
    live = subprocess.Popen(["sleep", "120"])
    try:
        folder = find_store(store, "fiv2", "train", "scene")
        planted = {p: folder / f".shard-x.safetensors~{host}~{p.pid}~abcd.tmp" for p in (dead, live)}
        for path in planted.values(): path.write_bytes(b"being written")
        out = extract(corpus, store)
        assert out.returncode == 0, out.stderr[-2000:]
        assert planted[live].exists() and not planted[dead].exists()
    finally: live.kill(); live.wait()


def test_torchrun_two_processes_split_the_work(corpus, uninterrupted, tmp_path):
    store = tmp_path / "parallel"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "--no-python", *extract(corpus, store, command_only=True)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for corpus_name in ("mosei", "fiv2"):
        for m in MODALITIES.split(","):
            one, two = (find_store(s, corpus_name, "train", m) for s in (uninterrupted, store))
            a, b = read_sequences(one), read_sequences(two)
            b = b.select(a.clip_ids)
            assert np.allclose(a.values, b.values, atol=1e-5) and list(a.lengths) == list(b.lengths)
            assert sorted(read_failures(one).clip_id) == sorted(read_failures(two).clip_id)
    assert list(store.rglob("failures-rank-*.csv")), "each rank keeps its own failures table"


def test_changed_backbone_gets_a_new_store_folder(corpus, uninterrupted, tmp_path):
    other = tmp_path / "other"
    config = save_tiny_backbones(other, seed=1)
    (other / "backbones.json").write_text(json.dumps(config))
    store = tmp_path / "store"; shutil.copytree(uninterrupted, store)
    cmd = extract(corpus, store, command_only=True)
    cmd[cmd.index("--backbones") + 1] = str(other / "backbones.json")
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(list((store / "fiv2" / "train" / "scene").iterdir())) == 2  # old and new features side by side


def test_bad_manifest_is_one_line_exit_2(corpus, tmp_path):
    bad = tmp_path / "manifest.csv"; bad.write_text("clip_id,corpus\nx,mosei\n")
    cmd = extract(corpus, tmp_path / "s", command_only=True)
    cmd[2] = str(bad)
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "manifest.csv" in out.stderr, out.stderr


@pytest.mark.parametrize("size", ["0", "-1"])
def test_a_chunk_size_below_one_is_one_line_exit_2(corpus, tmp_path, size):
    cmd = extract(corpus, tmp_path / "s", command_only=True)
    cmd[cmd.index("--chunk-size") + 1] = size
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "chunk size must be at least 1" in out.stderr, out.stderr
    assert not (tmp_path / "s").exists()
