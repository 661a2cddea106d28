"Integration tests of ssl_mepr.media on generated clips: awkward files, awkward paths, rotation, bad input."
import importlib.util, os, subprocess, sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from skimage import data as skdata

import ssl_mepr.media as media
from ssl_mepr.media import (Box, HaarFaceDetector, HOGPersonDetector, MediaError, crop_sequence, face_and_body_crops,
                            make_detector, probe_media, read_audio, read_frames, sample_frame_indices, write_clip)

PHOTO = skdata.astronaut()[::2, 32:416:2].copy()  # [256, 192, 3], the face near x 70-122, y 30-84
FACE_IN_PHOTO = Box(74, 30, 122, 84)  # skimage's astronaut face (180..275, 60..168) at half size, shifted by the crop


def numbered(n, image=PHOTO):
    "n copies of `image` whose top-left 16 x 16 block has grey level 5 * frame number."
    frames = np.repeat(image[None], n, axis=0)
    for i in range(n): frames[i, :16, :16] = 5 * i  # n <= 51
    return frames


def block_index(frame): return frame[2:14, 2:14].mean() / 5


def tone(seconds, sample_rate=16000, hz=440.0, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(round(seconds * sample_rate)) / sample_rate)).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    "The generated clips, written once for the module."
    d = tmp_path_factory.mktemp("media")
    c = {"normal": write_clip(d / "an interview 'take 2' \"final\".mp4", numbered(50), fps=20,
                              audio=tone(2.5, 48000), sample_rate=48000),
         "mute": write_clip(d / "mute.mp4", numbered(10)),
         "m4a": write_clip(d / "voice.m4a", audio=tone(1.5)),
         "audio_mp4": write_clip(d / "voice only.mp4", audio=tone(1.5)),
         "single": write_clip(d / "single.mp4", PHOTO[None], audio=tone(0.2)),
         "silence": write_clip(d / "silence.mp4", numbered(8), audio=np.zeros(16000, np.float32)),
         "noise": write_clip(d / "noise.mp4", np.random.default_rng(3).integers(0, 256, (10, 256, 192, 3), np.uint8)),
         "mkv": write_clip(d / "no count.mkv", numbered(37), fps=10)}
    for degrees in (90, 180, 270):  # store each frame turned clockwise by `degrees`, with the matrix that undoes it
        stored = np.rot90(numbered(6), k=-degrees // 90, axes=(1, 2)).copy()
        c[f"rot{degrees}"] = write_clip(d / f"rotated {degrees}.mp4", stored, rotation=degrees)
    c["dir"] = d
    return c


def test_normal_clip_frames_and_audio(clips):
    info = probe_media(clips["normal"])
    assert (info.has_video, info.has_audio, info.n_frames, info.width, info.height) == (True, True, 50, 192, 256)
    assert info.fps == pytest.approx(20.0) and info.duration == pytest.approx(2.5, abs=0.1)
    frames, idx = read_frames(clips["normal"])
    assert frames.shape == (30, 256, 192, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(idx, sample_frame_indices(50, 30))
    np.testing.assert_allclose([block_index(f) for f in frames], idx, atol=1.0)  # decoded frame k is frame k
    wave = read_audio(clips["normal"])
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == pytest.approx(2.5 * 16000, abs=0.05 * 16000)
    spectrum = np.abs(np.fft.rfft(wave[4000:-4000]))
    assert np.fft.rfftfreq(len(wave) - 8000, 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_no_audio_stream(clips):
    assert probe_media(clips["mute"]).has_audio is False
    assert read_audio(clips["mute"]) is None
    assert read_frames(clips["mute"], count=5)[0].shape == (5, 256, 192, 3)


@pytest.mark.parametrize("name", ["m4a", "audio_mp4"])
def test_no_video_stream(clips, name):
    info = probe_media(clips[name])
    assert (info.has_video, info.has_audio, info.n_frames, info.fps, info.width, info.rotation) == (False, True, 0, None, None, 0)
    frames, idx = read_frames(clips[name])
    assert frames.shape == (0, 0, 0, 3) and len(idx) == 0
    assert len(read_audio(clips[name])) == pytest.approx(1.5 * 16000, abs=0.05 * 16000)


def test_one_frame_video(clips):
    assert probe_media(clips["single"]).n_frames == 1
    frames, idx = read_frames(clips["single"])
    assert frames.shape == (30, 256, 192, 3) and (idx == 0).all()
    assert (frames == frames[0]).all()


def test_silence_is_zeros(clips):
    wave = read_audio(clips["silence"])
    assert len(wave) == pytest.approx(16000, abs=1100) and np.abs(wave).max() < 1e-4


def test_unknown_frame_count_is_counted(clips):
    with av.open(str(clips["mkv"])) as c: assert c.streams.video[0].frames == 0  # Matroska stores no count
    assert probe_media(clips["mkv"]).n_frames == 37
    frames, idx = read_frames(clips["mkv"], count=9)
    np.testing.assert_allclose([block_index(f) for f in frames], sample_frame_indices(37, 9), atol=1.0)


def test_variable_frame_rate_is_indexed_by_decoding_order(tmp_path):
    times = np.cumsum(np.r_[0, np.random.default_rng(1).uniform(0.01, 0.4, 29)])
    path = write_clip(tmp_path / "vfr.mp4", numbered(30), frame_times=times)
    frames, idx = read_frames(path, count=7)
    np.testing.assert_allclose([block_index(f) for f in frames], sample_frame_indices(30, 7), atol=1.0)


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata_gives_upright_frames(clips, degrees):
    info = probe_media(clips[f"rot{degrees}"])
    assert info.rotation == degrees and (info.height, info.width) == (256, 192)
    frames, idx = read_frames(clips[f"rot{degrees}"], count=6)
    assert frames.shape == (6, 256, 192, 3)
    np.testing.assert_allclose([block_index(f) for f in frames], idx, atol=1.0)  # the numbered corner is top-left again
    assert np.abs(frames[3, 32:].astype(float) - PHOTO[32:]).mean() < 6


def test_haar_finds_the_astronaut_face_in_the_photo_and_the_clip(clips):
    faces = HaarFaceDetector()(skdata.astronaut())
    assert len(faces) == 1 and faces[0].iou(Box(180, 60, 275, 168)) > 0.6
    frames, _ = read_frames(clips["normal"], count=5)
    crops, mask = crop_sequence(frames, HaarFaceDetector())
    assert mask.all() and len(crops) == 5
    box = media.frame_boxes(frames[:1], HaarFaceDetector())[0]
    assert box.iou(FACE_IN_PHOTO) > 0.5


def test_no_face_anywhere_masks_every_frame(clips):
    frames, _ = read_frames(clips["noise"])
    streams = face_and_body_crops(frames, make_detector("haar-face"), make_detector("hog-person"))
    assert streams["face"][0] == [] and not streams["face"][1].any() and len(streams["face"][1]) == 30
    crops, mask = crop_sequence(frames, make_detector("haar-face"), substitute=True)
    assert mask.all() and all(c.shape == frames[0].shape for c in crops)


def test_multi_box_frames_are_averaged_per_frame():
    "Bug B5 must not come back: a frame's boxes are averaged with that frame's boxes only."
    frames = np.stack([np.full((50, 50, 3), k, np.uint8) for k in range(5)])
    boxes = {0: [Box(0, 0, 10, 10), Box(10, 10, 30, 30)], 1: [Box(0, 0, 40, 40), Box(0, 0, 20, 20), Box(0, 0, 30, 30)],
             2: [], 3: [Box(5, 5, 15, 45)], 4: [Box(40, 40, 80, 90)]}
    crops, mask = crop_sequence(frames, lambda f: boxes[int(f[0, 0, 0])])
    assert mask.tolist() == [True, True, False, True, True]
    assert [c.shape[:2] for c in crops] == [(15, 15), (30, 30), (40, 10), (10, 10)]  # means (5,5,20,20), (0,0,30,30); clipped
    assert [int(c[0, 0, 0]) for c in crops] == [0, 1, 3, 4]


def written(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("make, problem", [
    (lambda d: d / "missing.mp4", "no such file"),
    (lambda d: written(d / "zero.mp4", b""), "empty file"),
    (lambda d: written(d / "text.mp4", b"not a video at all\n"), "not a readable media file"),
    (lambda d: d, "not a file"),
])
def test_bad_files_fail_with_one_line(tmp_path, make, problem):
    path = make(tmp_path)
    for reader in (probe_media, read_frames, read_audio):
        with pytest.raises(MediaError) as e: reader(path)
        assert str(e.value).startswith(f"{path}: {problem}") and "\n" not in str(e.value)
        assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)


def test_truncated_mp4_fails_with_one_line(clips, tmp_path):
    whole = clips["normal"].read_bytes()
    half = tmp_path / "half of it.mp4"; half.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(MediaError, match="not a readable media file"): probe_media(half)
    # an MP4 whose index comes first ("faststart") opens, and fails where its data stops
    fast = tmp_path / "fast.mp4"
    with av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        v = out.add_stream("libx264", rate=10); v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        for i in range(40): out.mux(v.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 5 * i, np.uint8), format="rgb24")))
        out.mux(v.encode())
    cut = tmp_path / "fast cut.mp4"; cut.write_bytes(fast.read_bytes()[: fast.stat().st_size * 2 // 3])
    with pytest.raises(MediaError, match=r"fast cut\.mp4: .*(truncated|corrupt)") as e: read_frames(cut)
    assert "\n" not in str(e.value)


def test_error_in_a_fresh_process_shows_no_ffmpeg_traceback(tmp_path):
    bad = tmp_path / "it's \"bad\".mp4"; bad.write_text("text")
    out = subprocess.run([sys.executable, "-c", "import sys; from ssl_mepr.media import probe_media; probe_media(sys.argv[1])",
                          str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ssl_mepr.media.MediaError: ") and str(bad) in last
    assert "During handling" not in out.stderr and "direct cause" not in out.stderr and "av/container" not in out.stderr


def test_frame_count_mismatch_resamples_over_decoded_frames(clips, monkeypatch):
    true_info = probe_media(clips["mute"])
    monkeypatch.setattr(media, "probe_media", lambda p: media.MediaInfo(**{**true_info.__dict__, "n_frames": 25}))
    with pytest.warns(UserWarning, match="lists 25 frames but 10 decode"):
        frames, idx = media.read_frames(clips["mute"], count=4)
    np.testing.assert_array_equal(idx, sample_frame_indices(10, 4))
    np.testing.assert_allclose([block_index(f) for f in frames], idx, atol=1.0)


def test_hog_person_detector_boxes_lie_on_the_frame():
    boxes = HOGPersonDetector()(skdata.astronaut())
    assert all(isinstance(b, Box) and 0 <= b.x0 < b.x1 <= 512 + 32 and 0 <= b.y0 < b.y1 <= 512 + 32 for b in boxes)


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is not None, reason="mediapipe is installed")
@pytest.mark.parametrize("name", ["mediapipe-face", "mediapipe-pose"])
def test_mediapipe_absent_names_the_extra(name):
    with pytest.raises(ImportError, match=r"pip install 'ssl-mepr\[mediapipe\]'"): make_detector(name)


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="mediapipe (optional extra) not installed")
def test_mediapipe_face_finds_the_astronaut():
    faces = make_detector("mediapipe-face")(skdata.astronaut())
    assert faces and max(f.iou(Box(180, 60, 275, 168)) for f in faces) > 0.4


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None, reason="ultralytics is installed")
def test_yolo_absent_names_the_extra(tmp_path):
    (tmp_path / "best_YOLO.pt").write_bytes(b"x")
    with pytest.raises(ImportError, match=r"pip install 'ssl-mepr\[yolo\]'"): make_detector("yolo", checkpoint=tmp_path / "best_YOLO.pt")


def test_yolo_needs_an_existing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such YOLO checkpoint"): make_detector("yolo", checkpoint=tmp_path / "none.pt")


def test_module_never_uses_a_shell():
    assert "shell=True" not in Path(media.__file__).read_text()
