"""Checks around a map: the settings and the output folder before any work, the model before it paints,
and each slide's positive rate after it is mapped.

Every problem is one line naming the setting (or file) and what is wrong; :func:`check_settings`
returns them all at once so that a user fixes a command line in one go.
"""

from __future__ import annotations

import math
import os
import uuid
import warnings
from pathlib import Path

# a model whose out-of-fold AUC is below this is refused before any inference (unless forced)
DEFAULT_MIN_AUC = 0.75
DEFAULT_THRESHOLD = 0.5  # when the checkpoint carries no decision threshold of its own
# positive rates (of tissue patches) that say "the model does not work on this slide" rather than biology:
# TILs are rarely absent from every patch and never in all of them
PLAUSIBLE_RATE = (0.005, 0.95)

PAINTED, REFUSED, UNCHECKED = "painted", "refused", "unchecked"


class ImplausibleMapWarning(UserWarning):
    """A slide's positive rate is outside the plausible range: the map is written but flagged."""


def check_settings(*, n_workers=None, threads=None, mpp=None, threshold=None, max_patches=None,
                   batch_size=None, min_auc=None) -> list[str]:
    """Every problem with the numeric settings of a map, one line each ([] when all are fine)."""
    problems = []

    def need(ok: bool, text: str) -> None:
        if not ok:
            problems.append(text)

    def is_int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if n_workers is not None:
        need(is_int(n_workers) and n_workers >= 1, f"--workers must be a whole number >= 1, got {n_workers!r}")
    if threads is not None:
        need(is_int(threads) and threads >= 1, f"--threads must be a whole number >= 1, got {threads!r}")
    if batch_size is not None:
        need(is_int(batch_size) and batch_size >= 1, f"--batch-size must be a whole number >= 1, got {batch_size!r}")
    if max_patches is not None:
        need(is_int(max_patches) and max_patches >= 1,
             f"--max-patches must be a whole number >= 1 (or left out: every tissue patch), got {max_patches!r}")
    values = mpp.values() if isinstance(mpp, dict) else [] if mpp is None else [mpp]
    for v in values:
        need(isinstance(v, (int, float)) and math.isfinite(v) and v > 0,
             f"--mpp must be a positive number of microns per pixel, got {v!r}")
    if threshold is not None:
        need(isinstance(threshold, (int, float)) and 0 <= threshold <= 1,
             f"--threshold must be a probability between 0 and 1, got {threshold!r}")
    if min_auc is not None:
        need(isinstance(min_auc, (int, float)) and 0 <= min_auc <= 1,
             f"--min-auc must be between 0 and 1, got {min_auc!r}")
    return problems


def check_writable(out_dir: str | os.PathLike) -> str | None:
    """The problem with writing under ``out_dir`` (created if missing), or None: a probe file is written
    and removed, so a read-only disk or a path through a file is found before any slide is mapped."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        return f"--out {out_dir} is not a writable folder ({err.strerror or type(err).__name__})"
    return None


def model_quality(info: dict) -> dict:
    """What the checkpoint says about how good the model is: ``decision_threshold`` (its own, from
    out-of-fold predictions, else 0.5), ``oof_auc`` and ``oof_auc_ci`` (None when unknown), and where
    the threshold came from."""
    def number(x):
        return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None

    threshold = number(info.get("decision_threshold"))
    ci = info.get("oof_auc_ci")
    ci = [number(c) for c in ci] if isinstance(ci, (list, tuple)) and len(ci) == 2 else None
    return {"decision_threshold": threshold if threshold is not None and 0 <= threshold <= 1 else DEFAULT_THRESHOLD,
            "threshold_source": "checkpoint" if threshold is not None and 0 <= threshold <= 1
            else f"default {DEFAULT_THRESHOLD:g} (the checkpoint carries no decision_threshold)",
            "oof_auc": number(info.get("oof_auc")), "oof_auc_ci": None if ci is None or None in ci else ci}


def model_check(model_name: str, info: dict, min_auc: float = DEFAULT_MIN_AUC, force: bool = False) -> dict:
    """The check before painting: ``verdict`` painted (AUC known and >= ``min_auc``), unchecked (no AUC
    in the checkpoint: painted, said so), refused (AUC below the floor; ``forced`` when mapped anyway),
    with ``reason`` in words."""
    q = model_quality(info)
    auc = q["oof_auc"]
    if auc is None:
        verdict, reason = UNCHECKED, f"{model_name}: out-of-fold AUC unknown (no oof_auc in the checkpoint)"
    elif auc < min_auc:
        verdict, reason = REFUSED, (f"{model_name}: out-of-fold AUC {auc:.3f} is below the floor {min_auc:g} "
                                    f"(--min-auc); its maps would not be worth looking at")
    else:
        verdict, reason = PAINTED, f"{model_name}: out-of-fold AUC {auc:.3f} >= {min_auc:g}"
    return {**q, "min_auc": min_auc, "verdict": verdict, "forced": bool(force and verdict == REFUSED),
            "reason": reason}


def plausibility(n_positive: int, n_patches: int, bounds: tuple[float, float] = PLAUSIBLE_RATE) -> dict:
    """Whether a slide's positive rate is plausible: ``flag`` None, or a sentence naming the numbers."""
    rate = n_positive / n_patches if n_patches else float("nan")
    lo, hi = bounds
    flag = None
    if n_patches and rate > hi:
        flag = (f"implausible: {n_positive}/{n_patches} patches ({rate:.1%}) TIL-positive, above {hi:.0%}; "
                f"the model likely does not transfer to this slide (stain, tissue, scale)")
    elif n_patches and rate < lo:
        flag = (f"implausible: {n_positive}/{n_patches} patches ({rate:.1%}) TIL-positive, below {lo:.1%}; "
                f"the model likely does not transfer to this slide (stain, tissue, scale)")
    return {"positive_rate": rate, "plausible_range": list(bounds), "flag": flag}


def warn_implausible(slide_name: str, flag: str) -> None:
    warnings.warn(f"{slide_name}: {flag}", ImplausibleMapWarning, stacklevel=3)
