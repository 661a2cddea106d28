"`ssl-mepr predict` on generated clips: every kind of bad input gives one line and exit code 2, or a documented degraded result."
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from ssl_mepr.labels import EMOTIONS, TRAITS
from ssl_mepr.media import portrait_frames, sound_track, write_clip, write_portrait_clip
from ssl_mepr.cli import main
from ssl_mepr.predict import load_run, predict_video

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    "Generated clips, good and awkward, in a folder whose name has spaces and quotes."
    d = tmp_path_factory.mktemp("clips") / "my 'odd' \"folder\""
    d.mkdir()
    good = write_portrait_clip(d / "an interview 'take 2' \"final\".mp4", seconds=2.0)
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is a text file, not a video")
    (d / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    (d / "corrupt.mp4").write_bytes(good.read_bytes()[:48] + bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)))
    write_clip(d / "mute.mp4", portrait_frames(20))
    write_clip(d / "voice only.m4a", audio=sound_track("speech", 2.0))
    write_clip(d / "one frame.mp4", portrait_frames(1), audio=sound_track("speech", 0.5))
    write_portrait_clip(d / "silent.mp4", seconds=1.0, audio="silence")
    write_clip(d / "no face.mp4", np.random.default_rng(1).integers(0, 256, (15, 128, 96, 3), np.uint8),
               audio=sound_track("speech", 1.0))
    (d / "latin1.txt").write_bytes("très bien, merci".encode("latin-1"))
    (d / "empty.txt").write_text("")
    return d


@pytest.fixture(scope="module")
def models(tiny_predict_run):
    return load_run(tiny_predict_run, device="cpu")


def run_main(capsys, *argv):
    "main() in this process: (exit code, stdout, stderr)."
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name, problem", [("empty.mp4", "empty file"), ("notes.mp4", "not a readable media file"),
                                           ("truncated.mp4", ""), ("corrupt.mp4", ""), ("missing.mp4", "no such file")])
def test_unreadable_files_one_line_exit_2(capsys, clips, tiny_predict_run, name, problem):
    code, out, err = run_main(capsys, "predict", clips / name, "--run", tiny_predict_run)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssl-mepr predict: error: ") and name in lines[0], err
    assert problem in lines[0] and "Traceback" not in err


def test_good_clip_with_awkward_path_json(capsys, clips, tiny_predict_run, tmp_path):
    out_json = tmp_path / "result 'one'.json"
    code, out, err = run_main(capsys, "predict", clips / "an interview 'take 2' \"final\".mp4", "--run", tiny_predict_run,
                              "--transcript", "it was a really good day", "--json", out_json, "--attributions")
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert list(result["emotions"]) == list(EMOTIONS) and list(result["traits"]) == list(TRAITS)
    assert abs(sum(result["emotions"].values()) - 1) < 1e-5
    assert all(v["used"] for v in result["modalities"].values())
    assert set(result["attributions"]) == {"emotion", *TRAITS}
    assert "Input×Gradient" in out


@pytest.mark.parametrize("name, masked, reason", [
    ("mute.mp4", {"audio", "text"}, "no sound track"),
    ("silent.mp4", {"audio", "text"}, "silent"),
    ("no face.mp4", {"face", "text"}, "no face detected"),
    ("voice only.m4a", {"face", "body", "scene", "text"}, "no video frames")])
def test_degraded_clips_mask_modalities(models, clips, name, masked, reason):
    result = predict_video(models, clips / name)
    got = {m for m, v in result["modalities"].items() if not v["used"]}
    assert masked <= got, result["modalities"]
    assert any(reason in (v["reason"] or "") for v in result["modalities"].values()), result["modalities"]
    assert abs(sum(result["emotions"].values()) - 1) < 1e-5 and all(0 <= s <= 1 for s in result["traits"].values())


def test_one_frame_video_repeats_its_frame(models, clips):
    result = predict_video(models, clips / "one frame.mp4", transcript="hello")
    assert result["frames"]["sampled"] == [0] * 30
    assert result["modalities"]["scene"]["used"] and result["modalities"]["audio"]["used"]


def test_empty_transcript_masks_text(capsys, models, clips, tiny_predict_run):
    result = predict_video(models, clips / "an interview 'take 2' \"final\".mp4", transcript="   ")
    assert result["modalities"]["text"] == {"used": False, "steps": 0, "reason": "the transcript is empty"}
    code, _, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tiny_predict_run, "--transcript-file", clips / "empty.txt")
    assert code == 0, err


def test_non_utf8_transcript_file_one_line_exit_2(capsys, clips, tiny_predict_run):
    code, _, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tiny_predict_run, "--transcript-file", clips / "latin1.txt")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "latin1.txt: the transcript is not UTF-8" in err


def test_missing_run_and_bad_arguments(capsys, clips, tmp_path):
    code, _, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tmp_path / "no run")
    assert code == 2 and "no such run folder" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e: main(["predict"])  # argparse: usage and exit code 2
    assert e.value.code == 2


def test_several_videos_keep_going_and_exit_2(capsys, clips, tiny_predict_run):
    code, out, err = run_main(capsys, "predict", clips / "notes.mp4", clips / "mute.mp4", "--run", tiny_predict_run, "--json", "-")
    assert code == 2 and "notes.mp4" in err
    results = json.loads(out)
    assert len(results) == 1 and results[0]["file"].endswith("mute.mp4")


def test_command_in_a_fresh_process_no_shell(clips, tiny_predict_run):
    "The installed console script, arguments passed as a list (no shell): a quote-laden path works, a bad file is one line."
    exe = Path(sys.executable).parent / "ssl-mepr"
    good = subprocess.run([str(exe), "predict", str(clips / "an interview 'take 2' \"final\".mp4"), "--run", str(tiny_predict_run),
                           "--json", "-"], capture_output=True, text=True, env=ENV, timeout=300)
    assert good.returncode == 0, good.stderr
    assert set(json.loads(good.stdout)["traits"]) == set(TRAITS)
    bad = subprocess.run([str(exe), "predict", str(clips / "empty.mp4"), "--run", str(tiny_predict_run)],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr, bad.stderr


def test_backbones_file_elsewhere(capsys, clips, tiny_predict_run, tmp_path):
    "--backbones names a backbones file outside the run; its relative sources start from its own folder."
    import shutil
    shutil.copytree(tiny_predict_run / "backbones", tmp_path / "backbones")
    shutil.copy(tiny_predict_run / "backbones.json", tmp_path / "elsewhere.json")
    code, out, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tiny_predict_run, "--backbones", tmp_path / "elsewhere.json")
    assert code == 0, err
    code, _, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tiny_predict_run, "--backbones", tmp_path / "none.json")
    assert code == 2 and "none.json: no backbones file" in err and len(err.strip().splitlines()) == 1


def test_frames_and_detector_options(capsys, clips, tiny_predict_run):
    code, out, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tiny_predict_run, "--frames", "5", "--json", "-")
    assert code == 0, err
    assert json.loads(out)["modalities"]["scene"]["steps"] == 5
    code, _, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tiny_predict_run, "--face-detector", "retina")
    assert code == 2 and "unknown detector 'retina'" in err and len(err.strip().splitlines()) == 1


def test_missing_optional_detector_names_the_extra(capsys, clips, tiny_predict_run):
    import importlib.util
    if importlib.util.find_spec("mediapipe") is not None: pytest.skip("mediapipe is installed here")
    code, _, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tiny_predict_run, "--face-detector", "mediapipe-face")
    assert code == 2 and "pip install 'ssl-mepr[mediapipe]'" in err and len(err.strip().splitlines()) == 1, err


def test_backbones_of_another_width_is_one_line(capsys, clips, tiny_predict_run, tmp_path):
    "Backbones whose features do not fit the run's models: a message naming the run's folder and what to do, exit 2."
    from ssl_mepr.extractors import save_tiny_backbones
    config = save_tiny_backbones(tmp_path / "wide", dims={"audio": 40, "text": 24, "image": 32})
    (tmp_path / "wide.json").write_text(json.dumps(config))
    code, _, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tiny_predict_run, "--backbones", tmp_path / "wide.json")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "do not take the 32-wide features" in err and "use the backbones the run's features were extracted with" in err


def test_json_never_replaces_an_input_video(tiny_predict_run, tmp_path):
    "The issue's case: a file named `--json=a.mp4` beside a.mp4 and b.mp4, and `ssl-mepr predict *.mp4` in a shell."
    for name in ("a.mp4", "b.mp4"): write_portrait_clip(tmp_path / name, seconds=1.0)
    (tmp_path / "--json=a.mp4").write_bytes(b"")
    before = (tmp_path / "a.mp4").read_bytes()
    out = subprocess.run(f"{Path(sys.executable).parent / 'ssl-mepr'} predict *.mp4 --run '{tiny_predict_run}'", shell=True,
                         cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "one of the input videos" in out.stderr, out.stderr
    assert (tmp_path / "a.mp4").read_bytes() == before


def test_json_replaces_an_existing_file_only_when_asked(capsys, clips, tiny_predict_run, tmp_path):
    old = tmp_path / "old.json"; old.write_text("keep me")
    code, _, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tiny_predict_run, "--json", old)
    assert code == 2 and "pass --overwrite" in err and old.read_text() == "keep me"
    code, _, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tiny_predict_run, "--json", old, "--overwrite")
    assert code == 0 and json.loads(old.read_text())["file"].endswith("mute.mp4")


@pytest.mark.parametrize("args, message", [
    (["--transcript-file", "/dev/zero"], "longer than 100,000 bytes (MAX_TRANSCRIPT_BYTES)"),
    (["--frames", "100000"], "n_frames must lie in [1, 300] (MAX_FRAMES"),
    (["--frames", "0"], "n_frames must lie in [1, 300]"),
])
def test_user_given_sizes_are_bounded(capsys, clips, tiny_predict_run, args, message):
    code, _, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", tiny_predict_run, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_a_tampered_checkpoint_is_refused_in_one_line(capsys, clips, tiny_predict_run, tmp_path):
    "The issue's case: stage3/best.pt with bytes flipped used to give other traits in silence."
    import shutil
    run = tmp_path / "run"; shutil.copytree(tiny_predict_run, run)
    best = run / "stage3" / "best.pt"
    raw = bytearray(best.read_bytes()); raw[len(raw) // 2] ^= 0xFF; best.write_bytes(bytes(raw))
    code, _, err = run_main(capsys, "predict", clips / "mute.mp4", "--run", run)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "stage3/best.pt: the file is not the one the run wrote" in err, err


def test_non_utf8_names_for_the_video_and_the_json(clips, tiny_predict_run, tmp_path):
    "File names are bytes on Linux: a Latin-1 name (invalid UTF-8) for the video and for --json works, in a fresh process."
    video = os.fsencode(tmp_path) + b"/entrevista_r\xe9sum\xe9.mp4"
    out_json = os.fsencode(tmp_path) + b"/r\xe9sultat.json"
    with open(video, "wb") as f: f.write((clips / "mute.mp4").read_bytes())
    out = subprocess.run([os.fsencode(Path(sys.executable).parent / "ssl-mepr"), b"predict", video, b"--run", os.fsencode(tiny_predict_run),
                          b"--json", out_json], capture_output=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    with open(out_json, "rb") as f: result = json.loads(f.read())
    assert os.fsencode(result["file"]) == video and set(result["traits"]) == set(TRAITS)
