"""Bad corpus files end to end: each reader on files written to disk must fail with one clear CorpusError."""
import os, pickle, re, shlex, warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from ssl_mepr.corpora import (CorpusError, MANIFEST_COLUMNS, find_media, missing_media, read_authors_csv,
                              read_fiv2, read_manifest, read_mosei_csd, write_manifest, write_mosei_csd)
from ssl_mepr.labels import EMOTIONS, TRAITS

MOSEI_HEADER = "video_name,text,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
MOSEI_ROWS = ["vid1_0,hello,0,0.5,0,0,0.5,0,0,0", "vid1_1,,1,0,0,0,0,0,0,0"]
FIV2_HEADER = "Unnamed: 0,video_name,text,openness,conscientiousness,extraversion,agreeableness,non-neuroticism"
FIV2_ROWS = ["0,aaa.001.mp4,hi,0.1,0.2,0.3,0.4,0.5", "1,bbb.002.mp4,,0.6,0.7,0.8,0.9,1.0"]
ANNOTATION = {t: {"aaa.001.mp4": 0.25, "bbb.002.mp4": 0.75}
              for t in ("extraversion", "neuroticism", "agreeableness", "conscientiousness", "interview", "openness")}
CSD_VIDEOS = {"vid1": (np.array([[1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], float), np.array([[0, 2], [2, 4]], float)),
              "vid2": (np.array([[-1, 0, 2, 0, 0, 0, 0]], float), np.array([[0, 3]], float))}
FOLDS = {"train": ["vid1"], "test": ["vid2"]}


def csv(path, header, rows):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def dump(path, obj, protocol=2):
    path.write_bytes(pickle.dumps(obj, protocol))
    return path


def raises(fragment):
    "pytest.raises for a CorpusError whose message contains `fragment` literally."
    return pytest.raises(CorpusError, match=re.escape(fragment))


# --- the happy paths, so the failures below fail for the reason they name -----------------------------------------

def test_readers_accept_good_files(tmp_path):
    mosei = read_authors_csv(csv(tmp_path / "train_full.csv", MOSEI_HEADER, MOSEI_ROWS), "cmu_mosei", "train")
    fiv2_csv = read_authors_csv(csv(tmp_path / "dev_full.csv", FIV2_HEADER, FIV2_ROWS), "fiv2", "valid")
    fiv2_pkl = read_fiv2(dump(tmp_path / "annotation_test.pkl", ANNOTATION), "test")
    csd = read_mosei_csd(write_mosei_csd(tmp_path / "labels.csd", CSD_VIDEOS), FOLDS)
    for table in (mosei, fiv2_csv, fiv2_pkl, csd):
        assert list(table.columns[:len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert mosei["text"].tolist() == ["hello", ""]
    assert fiv2_csv["clip_id"].tolist() == ["aaa.001", "bbb.002"] and set(fiv2_csv["split"]) == {"dev"}
    assert fiv2_pkl[list(TRAITS)].to_numpy().tolist() == [[0.25] * 5, [0.75] * 5]
    assert csd["clip_id"].tolist() == ["vid1@0.00-2.00", "vid1@2.00-4.00", "vid2@0.00-3.00"]  # no transcripts: no segment numbers
    assert csd[list(EMOTIONS)].to_numpy().tolist() == [[0, 0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0]]


# --- missing files ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("read", [
    lambda p: read_authors_csv(p / "train_full.csv", "mosei", "train"),
    lambda p: read_mosei_csd(p / "labels.csd", FOLDS),
    lambda p: read_fiv2(p / "annotation_training.pkl", "train"),
    lambda p: read_manifest(p / "manifest.csv"),
])
def test_missing_file(tmp_path, read):
    with raises("file not found"): read(tmp_path)


def test_missing_transcription_and_fold_files(tmp_path):
    ann = dump(tmp_path / "annotation_test.pkl", ANNOTATION)
    with raises(f"{tmp_path / 'transcription_test.pkl'}: file not found"): read_fiv2(ann, "test", tmp_path / "transcription_test.pkl")
    csd = write_mosei_csd(tmp_path / "labels.csd", CSD_VIDEOS)
    with raises(f"{tmp_path / 'folds.json'}: file not found"): read_mosei_csd(csd, tmp_path / "folds.json")


# --- columns, split names, duplicates, ranges, NaN ----------------------------------------------------------------------

def test_misspelled_column_is_named_with_a_suggestion(tmp_path):
    path = csv(tmp_path / "train_full.csv", MOSEI_HEADER.replace("Happiness", "happiness"), MOSEI_ROWS)
    with raises("train_full.csv: missing column 'Happiness' (did you mean 'happiness'?)"):
        read_authors_csv(path, "mosei", "train")
    path = csv(tmp_path / "dev_full.csv", FIV2_HEADER.replace("extraversion", "extroversion"), FIV2_ROWS)
    with raises("missing column 'extraversion' (did you mean 'extroversion'?)"): read_authors_csv(path, "fiv2", "dev")


def test_unknown_split_and_corpus_names(tmp_path):
    path = csv(tmp_path / "train_full.csv", MOSEI_HEADER, MOSEI_ROWS)
    with raises("split: unknown split name 'trian' (did you mean 'train'?)"): read_authors_csv(path, "mosei", "trian")
    with raises("corpus: unknown corpus name 'iemocap'"): read_authors_csv(path, "iemocap", "train")
    with raises("folds: unknown split name 'holdout'"):
        read_mosei_csd(write_mosei_csd(tmp_path / "l.csd", CSD_VIDEOS), {"holdout": ["vid1"]})
    with raises("unknown split name 'heldout'"): read_fiv2(dump(tmp_path / "a.pkl", ANNOTATION), "heldout")


def test_duplicate_clip_ids(tmp_path):
    rows = [*FIV2_ROWS, "2,aaa.001,again,0.1,0.2,0.3,0.4,0.5"]   # the same clip with and without .mp4
    with raises("dev_full.csv: duplicate clip ids 'aaa.001' (2 rows)"):
        read_authors_csv(csv(tmp_path / "dev_full.csv", FIV2_HEADER, rows), "fiv2", "dev")
    ann = {t: {**scores, "aaa.001": 0.5} for t, scores in ANNOTATION.items()}
    with raises("duplicate clip ids 'aaa.001'"): read_fiv2(dump(tmp_path / "a.pkl", ann), "train")


def test_video_in_two_folds(tmp_path):
    (tmp_path / "folds.csv").write_text("video_id,split\nvid1,train\nvid1,val\n")
    with raises("folds.csv: video 'vid1' is in two folds: train and dev"):
        read_mosei_csd(write_mosei_csd(tmp_path / "l.csd", CSD_VIDEOS), tmp_path / "folds.csv")


def test_labels_out_of_range(tmp_path):
    rows = [MOSEI_ROWS[0].replace("0,0.5,0,0,0.5", "0,1.5,0,0,0.5"), MOSEI_ROWS[1]]
    with raises("label 'Anger' out of range [0, 1]: 1.5 for clip 'vid1_0'"):
        read_authors_csv(csv(tmp_path / "train_full.csv", MOSEI_HEADER, rows), "mosei", "train")
    bad = {**CSD_VIDEOS, "vid3": (np.array([[0, 0, 0, 0, 3.5, 0, 0]]), np.array([[0, 1]]))}
    with raises("l.csd: video 'vid3': emotion intensity 3.5 outside [0, 3]"):
        read_mosei_csd(write_mosei_csd(tmp_path / "l.csd", bad), FOLDS)
    bad = {**CSD_VIDEOS, "vid3": (np.array([[3.5, 0, 0, 0, 0, 0, 0]]), np.array([[0, 1]]))}
    with raises("video 'vid3': sentiment intensity 3.5 outside [-3, 3]"):
        read_mosei_csd(write_mosei_csd(tmp_path / "l.csd", bad), FOLDS)
    with raises("label 'openness' out of range [0, 1]: -0.1"):
        read_fiv2(dump(tmp_path / "a.pkl", ANNOTATION | {"openness": {"aaa.001.mp4": -0.1, "bbb.002.mp4": 0.5}}), "train")


def test_nan_labels(tmp_path):
    rows = [MOSEI_ROWS[0], "vid1_1,,1,0,,0,0,0,0,0"]
    with raises("NaN label in column 'Disgust' for clip(s) 'vid1_1'"):
        read_authors_csv(csv(tmp_path / "train_full.csv", MOSEI_HEADER, rows), "mosei", "train")
    bad = {**CSD_VIDEOS, "vid3": (np.array([[0, np.nan, 0, 0, 0, 0, 0]]), np.array([[0, 1]]))}
    with raises("l.csd: video 'vid3': NaN"): read_mosei_csd(write_mosei_csd(tmp_path / "l.csd", bad), FOLDS)
    ann = ANNOTATION | {"agreeableness": {"aaa.001.mp4": 0.5}}   # bbb.002 has no agreeableness score
    with raises("NaN label in column 'agreeableness' for clip(s) 'bbb.002'"): read_fiv2(dump(tmp_path / "a.pkl", ann), "test")


# --- pickles ---------------------------------------------------------------------------------------------------------------

class _RunsShell:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _RunsPython:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_RunsShell, _RunsPython])
@pytest.mark.parametrize("where", ["annotation", "transcription"])
def test_malicious_pickle_is_refused_without_running(tmp_path, payload, where):
    marker = tmp_path / "it ran"
    evil = {"openness": {"aaa.001.mp4": payload(marker)}} if where == "annotation" else {"aaa.001.mp4": payload(marker)}
    path = dump(tmp_path / f"{where}_test.pkl", evil)
    ann = path if where == "annotation" else dump(tmp_path / "annotation_test.pkl", ANNOTATION)
    with raises(f"{path}: refused to load"): read_fiv2(ann, "test", path if where == "transcription" else None)
    assert not marker.exists()
    pickle.loads(path.read_bytes())   # the payload is real: the plain unpickler runs it...
    assert marker.exists()            # ...and the marker appears


@pytest.mark.parametrize("obj, says", [
    ({"openness": [0.1, 0.2]}, "a list under 'openness'"),
    ({"openness": {"a.mp4": (0.1,)}}, "a tuple under 'a.mp4'"),
    ({"openness": {"a.mp4": None}}, "a NoneType under 'a.mp4'"),
    ({"openness": {"a.mp4": np.array([0.5])}}, "refused to load numpy"),
    ({"openness": {"a.mp4": np.datetime64("2020-01-01")}}, "refused numpy dtype"),
    (ANNOTATION | {"openness": {"a.mp4": {"nested": "ok"}}}, "'openness' score of 'a.mp4' is not a number"),
    ({("o",): {}}, "non-string key ('o',)"),
    ("just a string", "expected a dict, got a str"),
])
def test_pickle_with_anything_but_data(tmp_path, obj, says):
    with raises(says): read_fiv2(dump(tmp_path / "a.pkl", obj, pickle.HIGHEST_PROTOCOL), "train")


def test_corrupt_pickle(tmp_path):
    (tmp_path / "a.pkl").write_bytes(b"this is not a pickle")
    with raises("a.pkl: not a readable pickle"): read_fiv2(tmp_path / "a.pkl", "train")


# --- CSD files ---------------------------------------------------------------------------------------------------------------

def test_csd_without_expected_groups(tmp_path):
    path = tmp_path / "l.csd"
    with h5py.File(path, "w") as f: f.create_group("All Labels").create_group("metadata")
    with raises("l.csd: no group 'All Labels/data'"): read_mosei_csd(path, FOLDS)
    with h5py.File(path, "w") as f: f.create_group("one"); f.create_group("two")
    with raises("l.csd: expected one root group"): read_mosei_csd(path, FOLDS)
    with h5py.File(path, "w") as f: f.create_dataset("All Labels/data/vid1/features", data=np.zeros((1, 7)))
    with raises("video 'vid1': no dataset 'All Labels/data/vid1/intervals'"): read_mosei_csd(path, FOLDS)


def test_corrupt_csd(tmp_path):
    (tmp_path / "l.csd").write_bytes(b"\x00garbage, not HDF5" * 10)
    with raises("l.csd: not an HDF5 computational sequence"): read_mosei_csd(tmp_path / "l.csd", FOLDS)


def test_fold_ids_absent_and_videos_without_fold_are_reported(tmp_path):
    csd = write_mosei_csd(tmp_path / "l.csd", CSD_VIDEOS)
    with pytest.warns(UserWarning) as record:
        table = read_mosei_csd(csd, {"train": ["vid1", "ghost1", "ghost2"]})
    messages = [str(w.message) for w in record]
    assert any("2 fold video id(s) are not in" in m and "'ghost1', 'ghost2'" in m for m in messages)
    assert any("1 video(s) are in no fold and are left out, e.g. 'vid2'" in m for m in messages)
    assert table["clip_id"].tolist() == ["vid1@0.00-2.00", "vid1@2.00-4.00"]


# --- media discovery ---------------------------------------------------------------------------------------------------------

def test_media_in_nested_folders_with_spaces_and_quotes(tmp_path):
    root = tmp_path / "media root"
    weird = root / "training80_01" / "it's a \"quoted\" folder"
    weird.mkdir(parents=True)
    (weird / "aaa.001.mp4").write_bytes(b"")
    (root / "audio" / "deep" / "er").mkdir(parents=True)
    (root / "audio" / "deep" / "er" / "aaa.001.wav").write_bytes(b"")
    (root / "bbb.002.webm").write_bytes(b"")
    path = csv(tmp_path / "dev_full.csv", FIV2_HEADER, FIV2_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bbb.002's sound is inside its video: nothing is missing
        table = read_authors_csv(path, "fiv2", "dev", media_root=root)
    assert table["video_path"].tolist() == [str(weird / "aaa.001.mp4"), str(root / "bbb.002.webm")]
    assert table["audio_path"].tolist() == [str(root / "audio" / "deep" / "er" / "aaa.001.wav"), None]
    assert os.path.exists(table["video_path"][0])
    assert missing_media(table).empty
    (root / "bbb.002.webm").unlink()
    with pytest.warns(UserWarning, match="1 of 2 clips have no video or no audio"):
        assert missing_media(read_authors_csv(path, "fiv2", "dev", media_root=root)).to_dict("records") == [
            {"clip_id": "bbb.002", "corpus": "fiv2", "split": "dev", "missing": "video, audio"}]
    (root / "bbb.002.webm").write_bytes(b"")
    # the manifest keeps those paths through a file
    back = read_manifest(write_manifest(table, tmp_path / "out dir" / "manifest.csv"))
    pd.testing.assert_frame_equal(back, table)


def test_two_media_files_with_one_stem(tmp_path):
    (tmp_path / "a").mkdir(); (tmp_path / "b").mkdir()
    (tmp_path / "a" / "aaa.001.mp4").write_bytes(b""); (tmp_path / "b" / "aaa.001.avi").write_bytes(b"")
    with raises("two video files for clip 'aaa.001'"): find_media(tmp_path)
    path = csv(tmp_path / "dev_full.csv", FIV2_HEADER, FIV2_ROWS)
    with raises(str(tmp_path / "a" / "aaa.001.mp4")): read_authors_csv(path, "fiv2", "dev", media_root=tmp_path)


# --- manifests on disk -----------------------------------------------------------------------------------------------------------

def test_manifest_round_trip_mixed_corpora(tmp_path):
    mosei = read_mosei_csd(write_mosei_csd(tmp_path / "l.csd", CSD_VIDEOS), FOLDS)
    fiv2 = read_fiv2(dump(tmp_path / "a.pkl", ANNOTATION), "dev")
    both = pd.concat([mosei, fiv2], ignore_index=True)
    back = read_manifest(write_manifest(both, tmp_path / "m.csv"))
    pd.testing.assert_frame_equal(back, both, check_exact=True)
    assert back.loc[back.corpus == "mosei", list(TRAITS)].isna().all().all()
    assert back.loc[back.corpus == "fiv2", list(EMOTIONS)].isna().all().all()


def test_bad_manifest_file(tmp_path):
    path = tmp_path / "m.csv"
    write_manifest(read_fiv2(dump(tmp_path / "a.pkl", ANNOTATION), "dev"), path)
    table = pd.read_csv(path)
    table.rename(columns={"openness": "Openness"}).to_csv(path, index=False)
    with raises("m.csv: missing column 'openness' (did you mean 'Openness'?)"): read_manifest(path)
    table.assign(split="heldout").to_csv(path, index=False)
    with raises("m.csv: unknown split value(s) 'heldout'"): read_manifest(path)
