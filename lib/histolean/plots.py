"""The figures the notebooks share: one call per figure, so notebooks stay narrative,
parameters, library calls and plots.

Every function takes data (result rows as a DataFrame, arrays, images), draws with
matplotlib/seaborn, and returns the ``Figure`` (notebooks pass it to
``Recorder.save_figure``). Nothing here computes a result. Sections follow the
notebooks' reading order; shared helpers come first.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

sns.set_theme(style="whitegrid", context="notebook")


# --- shared helpers --------------------------------------------------------------------------------------------


def log2_axis(ax, axis: str = "x") -> None:
    """A base-2 log axis with plain-number tick labels (costs halve per NAR level)."""
    from matplotlib.ticker import ScalarFormatter

    getattr(ax, f"set_{axis}scale")("log", base=2)
    getattr(ax, f"{axis}axis").set_major_formatter(ScalarFormatter())


# --- 01 data tour ----------------------------------------------------------------------------------------------

# --- 02 NAR cost -----------------------------------------------------------------------------------------------

# --- 03 ResRep -------------------------------------------------------------------------------------------------


def resrep_mask_schedule(logs: dict, flops_target: float):
    """Progressive masking: masked channel classes and predicted FLOPs ratio at each mask update.

    ``logs``: network name -> ``ResRepSchedule.log`` (dicts with step, masked, flops_ratio).
    """
    import pandas as pd

    frame = pd.DataFrame([{**e, "network": name} for name, log in logs.items() for e in log])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    if frame.empty:
        left.set_title("no mask update happened (run shorter than the warm-up)")
        return fig
    sns.lineplot(frame, x="step", y="masked", hue="network", marker="o", ax=left)
    left.set_title("masked channel classes per update")
    sns.lineplot(frame, x="step", y="flops_ratio", hue="network", marker="o", ax=right, legend=False)
    right.axhline(flops_target, color="grey", ls="--", lw=0.8)
    right.set_title(f"predicted FLOPs / original (target {flops_target:g})")
    fig.tight_layout()
    return fig


def resrep_row_norms(norms: dict, epsilons=()):
    """Histogram of compactor row norms, masked vs kept, per network; dashed lines at the epsilons.

    ``norms``: network name -> ``(row norms, masked)`` as ``ResRepNet.row_norms()`` returns them.
    """
    import numpy as np
    import pandas as pd

    fig, axes = plt.subplots(1, len(norms), figsize=(5 * len(norms), 3.5), squeeze=False)
    for ax, (name, (values, masked)) in zip(axes[0], norms.items()):
        frame = pd.DataFrame({"row norm": values, "row": np.where(masked, "masked", "kept")})
        sns.histplot(frame, x="row norm", hue="row", bins=30, ax=ax, hue_order=["kept", "masked"])
        for eps in epsilons:
            ax.axvline(eps, color="grey", ls="--", lw=0.8)
        median = {k: float(np.median(values[m])) if m.any() else float("nan") for k, m in
                  (("masked", masked), ("kept", ~masked))}
        ax.set_title(f"{name}: median masked {median['masked']:.2f}, kept {median['kept']:.2f}")
    fig.tight_layout()
    return fig


def resrep_vs_paper(paper, ours):
    """AUC change vs FLOPs ratio: the paper's epsilon sweep next to our conversions.

    ``paper``: DataFrame with flops_ratio, auc_change. ``ours``: DataFrame with model, data_kind,
    flops_ratio, auc_change.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(paper.flops_ratio, paper.auc_change, "o--", label="NAR paper, ResNet50V2 (TIL)")
    for (name, kind), group in ours.groupby(["model", "data_kind"]):
        ax.plot(group.flops_ratio, group.auc_change, "s", label=f"ours: {name} ({kind} PCam)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("FLOPs / original FLOPs")
    ax.set_ylabel("AUC change vs unpruned")
    ax.legend(fontsize=8)
    return fig

# --- 04 streaming SGD ------------------------------------------------------------------------------------------

# --- 05 TIL: NAR vs IR vs ResRep -------------------------------------------------------------------------------

# --- 06 nuclei pruning -----------------------------------------------------------------------------------------

# --- 07 PCam / IDC CNN zoo -------------------------------------------------------------------------------------

# --- 08 TIL maps -----------------------------------------------------------------------------------------------
