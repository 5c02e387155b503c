"""The dry run's closing table: per notebook, what ran, the largest tensor, peak memory, time per epoch, GPU memory.

Each benchmark's kernel logs its measured steps (:mod:`histolean.util.dryrun`) to
``outputs/<profile>-dry-run/dry_run/<benchmark>.jsonl``; :func:`table` reads them. Times are the first
step of each training on this machine (one-off allocations included: an upper bound), times the steps
of a full epoch on the data the run found; the GPU estimate is :func:`histolean.core.probe.gpu_estimate`.
"""

from __future__ import annotations

from pathlib import Path

from histolean.core import probe
from histolean.util import dryrun

MIB = 2**20


def log_path(out: Path, benchmark: str) -> Path:
    return Path(out) / "dry_run" / f"{benchmark}.jsonl"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def fit_line(entry: dict) -> str:
    """One training: model, input, batch, time per epoch and in all, largest tensor, GPU memory and warnings."""
    epoch_s = entry["step_s"] * entry["steps_per_epoch"]
    gpu = probe.gpu_estimate(entry["activation_bytes"], entry["batch"], entry["param_bytes"])
    warnings = [f"a {card} GiB card would not hold it: batch <= {fit}" for card, fit in gpu["fits"].items()
                if fit < entry["batch"]]
    shape = "x".join(str(s) for s in entry.get("largest_tensor_shape") or [])
    return (f"| {entry.get('desc', '')} | {entry.get('model', '')} | {'x'.join(map(str, entry['input_shape']))} | "
            f"{entry['batch']} | {entry['step_s']:.2f} s | {entry['steps_per_epoch']} | {_duration(epoch_s)} | "
            f"{entry['epochs']} | {_duration(epoch_s * entry['epochs'])} | {shape} "
            f"({entry['largest_tensor_bytes'] / MIB:.0f} MiB) | {gpu['gpu_gib']:.1f} GiB | "
            f"{'; '.join(warnings) or 'fits 16 GiB'} |")


FIT_HEADER = ("| training | model | input | batch | first step | steps/epoch | epoch (est.) | epochs | "
              "all epochs (est.) | largest tensor | GPU memory (est.) | cards |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|")


def table(out: Path, outcomes: list, device: str = "this machine") -> str:
    """Markdown: one section per notebook (status, wall time, peak memory, its trainings)."""
    parts = [f"# Dry run ({device})\n",
             "Every loop cut to its first step; times are first steps (one-off costs included) times the steps "
             "of a full epoch on the data found, so an upper bound for this machine. GPU memory: measured "
             "activations x batch + 4 copies of the parameters (weights, gradients, Adam), float32.\n"]
    for o in outcomes:
        entries = dryrun.read_log(log_path(out, o.benchmark))
        fits = [e for e in entries if e.get("kind") == "fit"]
        peak = max((e.get("peak_rss_mib", 0) for e in entries), default=None)
        parts.append(f"## {o.benchmark}: {o.status}" + (f" in {o.seconds:.0f} s" if o.seconds else ""))
        if o.error:
            parts.append(f"\nerror: {o.error}")
        parts.append(f"\npeak process memory: {f'{peak:.0f} MiB' if peak is not None else 'not measured'}; "
                     f"trainings measured: {len(fits)}\n")
        if fits:
            parts += [FIT_HEADER] + [fit_line(e) for e in fits] + [""]
        elif o.status != "skipped":
            parts.append("no training step of this notebook reports to the dry run (a loop that does not use "
                         "histolean.core.train.fit ran in full at the profile's settings, or nothing trains)\n")
    return "\n".join(parts)
