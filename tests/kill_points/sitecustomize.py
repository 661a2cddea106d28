"""Imported at start-up by the test processes whose PYTHONPATH holds this folder: SIGKILL the process at one chosen
point of an atomic write, so that the kill-and-restart tests hit the same point on every run, however busy the machine.

SSL_MEPR_KILL_AT="<when>:<text>:<n>", counting only temporary files whose name contains <text>:
  created  right after the n-th such temporary is created (it is still empty)
  written  when the n-th such temporary is complete, just before it is renamed into place
  renamed  right after that rename (between two files of one step)
"""
import os, signal, tempfile

_spec = os.environ.get("SSL_MEPR_KILL_AT")
if _spec:
    _when, _text, _n = _spec.split(":")
    _seen = [0]

    def _count_and_maybe_die(name) -> bool:
        "Count a matching temporary; True when it is the chosen one."
        if _text not in os.path.basename(str(name)) or not str(name).endswith(".tmp"): return False
        _seen[0] += 1
        return _seen[0] == int(_n)

    def _die(): os.kill(os.getpid(), signal.SIGKILL)

    if _when == "created":
        _mkstemp = tempfile.mkstemp
        def _mkstemp_then_die(*args, **kwargs):
            fd, name = _mkstemp(*args, **kwargs)
            if _count_and_maybe_die(name): _die()
            return fd, name
        tempfile.mkstemp = _mkstemp_then_die
    elif _when in ("written", "renamed"):
        _replace = os.replace
        def _replace_and_die(src, dst, *args, **kwargs):
            chosen = _count_and_maybe_die(src)
            if chosen and _when == "written": _die()
            _replace(src, dst, *args, **kwargs)
            if chosen: _die()
        os.replace = _replace_and_die
    else: raise ValueError(f"SSL_MEPR_KILL_AT={_spec!r}: <when> must be created, written or renamed")
