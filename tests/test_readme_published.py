"""The README's "Use the published models" commands, run as a user runs them: the block is read from the README and
executed by bash, with stand-ins for what cannot be downloaded here. The authors' files are written in their layouts
(`export_released`, under the README's file names) from a tiny trained run, and the backbones file's sources point at
that run's tiny backbones. The README's own backbones file is checked to read as it is; its detectors (MediaPipe and
YOLO, optional extras that are not installed here) are kept only where the extras are installed."""
import importlib.util, json, os, re, shlex, subprocess, sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(title: str) -> str:
    "The first bash block after the README heading `title`."
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    return re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)


def heredoc(block: str, target: str) -> str:
    "The text a `cat > target <<'EOF'` in the block writes."
    return re.search(rf"cat > {re.escape(target)} <<'EOF'\n(.*?)\nEOF\n", block, re.S).group(1)


def command_args(block: str, command: str) -> list:
    "The arguments of the block's first `ssl-mepr <command>` line (continuation lines joined)."
    joined = block.replace("\\\n", " ")
    line = next(l for l in joined.splitlines() if l.startswith(f"ssl-mepr {command} "))
    return shlex.split(line)[2:]


def option_values(args: list, option: str) -> list:
    "Every value given to `option` in an argument list."
    return [args[i + 1] for i, a in enumerate(args) if a == option]


def test_the_readme_backbones_file_reads_as_written(tmp_path):
    from ssl_mepr.extraction import read_backbones_file
    block = readme_block("Use the published models")
    (tmp_path / "published").mkdir()
    (tmp_path / "published" / "best_YOLO.pt").write_bytes(b"stand-in")
    (tmp_path / "published" / "backbones.json").write_text(heredoc(block, "published/backbones.json"))
    spec, settings = read_backbones_file(tmp_path / "published" / "backbones.json")
    assert set(spec) == {"audio", "text", "image"}
    assert (settings.face_detector, settings.body_detector) == ("mediapipe-face", "yolo")
    assert settings.detector_options["yolo"]["checkpoint"] == str((tmp_path / "published" / "best_YOLO.pt").resolve())


def test_the_readme_published_models_commands_run(tiny_predict_run, tmp_path):
    from ssl_mepr.checkpoints import export_released
    from ssl_mepr.extractors import backbone_entry
    from ssl_mepr.labels import MODALITIES
    from ssl_mepr.media import write_portrait_clip
    from ssl_mepr.predict import load_run
    from ssl_mepr.run import load_fusion
    block = readme_block("Use the published models")
    args = command_args(block, "import-released")
    models = load_run(tiny_predict_run, device="cpu")
    (tmp_path / "published").mkdir()
    for given in option_values(args, "--stage2"):  # the authors' file names, as the README gives them
        modality, path = given.split("=", 1)
        export_released(models.stage2[modality], tmp_path / path)
    export_released(load_fusion(tiny_predict_run, MODALITIES, device="cpu"), tmp_path / option_values(args, "--stage3")[0])
    (tmp_path / "published" / "best_YOLO.pt").write_bytes(b"stand-in")
    listed = set(re.findall(r"[\w.-]+\.pth?\b", block.split("# 2.")[0]))
    assert listed == {p.name for p in tmp_path.joinpath("published").glob("*.pt*")}, "the README's file list and its commands disagree"
    readme_json = json.loads(heredoc(block, "published/backbones.json"))
    tiny = json.loads((tiny_predict_run / "backbones.json").read_text())
    stand_in = {m: backbone_entry(tiny[m], tiny_predict_run) for m in ("audio", "text", "image")}  # the tiny run's backbones, absolute
    extras = all(importlib.util.find_spec(m) for m in ("mediapipe", "ultralytics"))
    if extras: stand_in["settings"] = readme_json["settings"]
    script = block.replace(heredoc(block, "published/backbones.json"), json.dumps(stand_in, indent=1))
    script = "\n".join(l for l in script.splitlines() if not l.startswith("pip install"))  # installed already
    explore = next(l for l in script.splitlines() if l.startswith("ssl-mepr explore "))
    script = script.replace(explore, f"{explore} > explore.log 2>&1 &\n"   # served until it prints its address, then stopped
                            "for i in $(seq 240); do grep -q 'is at' explore.log && break; sleep 0.5; done\n"
                            "kill -TERM $!; wait $!; cat explore.log")
    write_portrait_clip(tmp_path / "my clip.mp4", seconds=2.0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("present by the paper's rule") == 3, out.stdout[-3000:]
    assert "The explorer of runs/published is at" in out.stdout and "explorer stopped" in out.stdout
    record = json.loads((tmp_path / "runs" / "published" / "imported.json").read_text())
    assert set(record["stage2"]) == set(MODALITIES)
