"Kill a command at a chosen point of an atomic write (deterministically), and list the temporaries it left."
import os, signal, subprocess
from pathlib import Path

KILL_POINTS = Path(__file__).parent / "kill_points"  # its sitecustomize SIGKILLs the process at SSL_MEPR_KILL_AT


def killed_at(point: str,  # "<created|written|renamed>:<text in the temporary's name>:<n>"
              cmd: list, env: dict) -> subprocess.CompletedProcess:
    "Run `cmd`, which SIGKILLs itself at `point`; fails the test unless it was killed there."
    env = {**env, "SSL_MEPR_KILL_AT": point, "PYTHONPATH": os.pathsep.join(filter(None, [str(KILL_POINTS), env.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == -signal.SIGKILL, f"not killed at {point}: exit {out.returncode}\n{out.stderr[-2000:]}"
    return out


def temporaries(folder: Path) -> list:
    "Every temporary file below `folder`, relative to it."
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*.tmp"))
