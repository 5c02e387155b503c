"""The dry run's switch and its log: every loop cut to its first step through the same code as the full run.

``histolean run --dry-run`` sets :data:`ENV` (and :data:`LOG_ENV`, a JSON-lines file of its own per
benchmark) for the notebook kernels it starts. The library's loops ask :func:`active` and cut themselves
(``train.fit``: one epoch of one batch, one validation batch); the measuring code calls :func:`log` with
what it saw (step time, largest tensor, activation bytes), and the runner turns the log into a table.
Outside a dry run :func:`active` is False, :func:`first` returns its argument and :func:`log` does nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path

ENV = "HISTOLEAN_DRY_RUN"
LOG_ENV = "HISTOLEAN_DRY_RUN_LOG"
SUFFIX = "-dry-run"   # the output folder of a dry run: outputs/<profile>-dry-run, never the real results'


def active() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def first(n: int | None, keep: int = 1) -> int | None:
    """``n`` (epochs, steps, rounds, folds, trials, items), or at most ``keep`` of them in a dry run
    (``n`` None, "all": ``keep``)."""
    if not active():
        return n
    return keep if n is None else min(int(n), keep)


MAX_SIDE = 2048   # image sides a dry run goes up to (the full run's larger sides only scale what it measured)


def cap_side(side: int) -> int:
    """An image side, at most :data:`MAX_SIDE` in a dry run (0, "none", stays 0)."""
    return min(int(side), MAX_SIDE) if active() else side


def cap_sides(sides: list[int]) -> list[int]:
    """Image sides, each at most :data:`MAX_SIDE` in a dry run, without repeats."""
    return sorted({cap_side(s) for s in sides}) if active() else sides


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024   # bytes on macOS, KiB on Linux


def log(kind: str, **facts) -> None:
    """Append one measurement to the dry run's log (nothing outside a dry run, or without a log file)."""
    path = os.environ.get(LOG_ENV)
    if not active() or not path:
        return
    entry = {"kind": kind, "time": time.time(), "peak_rss_mib": round(peak_rss_mib(), 1), **facts}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:   # appended line by line: a crash keeps what was measured
        f.write(json.dumps(entry, default=str) + "\n")


def read_log(path: str | os.PathLike) -> list[dict]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:   # a line cut by a killed kernel
            continue
    return out


@contextlib.contextmanager
def enabled(log_path: str | os.PathLike | None = None):
    """Switch the dry run on in this process (and the kernels it starts) for the ``with`` block."""
    saved = {k: os.environ.get(k) for k in (ENV, LOG_ENV)}
    os.environ[ENV] = "1"
    if log_path is not None:
        os.environ[LOG_ENV] = str(log_path)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
