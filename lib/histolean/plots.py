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

# --- 04 streaming SGD ------------------------------------------------------------------------------------------

# --- 05 TIL: NAR vs IR vs ResRep -------------------------------------------------------------------------------

# --- 06 nuclei pruning -----------------------------------------------------------------------------------------

# --- 07 PCam / IDC CNN zoo -------------------------------------------------------------------------------------


def zoo_auc_vs_cost(ours, paper=None):
    """AUC against depth, parameters and GFLOPs per patch (the paper's Fig. 3, plus the cost plane of
    the NAR study). ``ours``: rows with auc, layers, params, gflops, dataset, method, paper (abbreviation);
    ``paper``: optional published rows with auc, depth, params, dataset, method, paper, drawn hollow."""
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (("layers", "depth (layers)", False), ("params", "parameters", True), ("gflops", "GFLOPs per patch", True))
    for ax, (col, label, log) in zip(axes, panels):
        if len(ours):
            sns.scatterplot(data=ours, x=col, y="auc", hue="dataset", style="method", s=70, ax=ax,
                            legend=ax is axes[0])
            for _, r in ours.iterrows():
                ax.annotate(r["paper"], (r[col], r["auc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if paper is not None and col in paper and len(paper):
            for dataset, marker in (("pcam", "o"), ("idc", "s")):
                sub = paper[paper["dataset"] == dataset]
                ax.scatter(sub[col], sub["auc"], facecolors="none", edgecolors="grey", marker=marker,
                           label=f"paper, {dataset}" if ax is axes[0] else None)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test AUC")
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("AUC against depth, parameters and cost (hollow: the paper's Tables 1, 3, 4)")
    fig.tight_layout()
    return fig


def zoo_epoch_times(times):
    """Seconds per PCam epoch: ours (extrapolated from the subset to the full 262,144-patch epoch) beside
    the paper's Table 2 GPUs. ``times``: rows with device, model ("B2", "B6", "IV3-F", "IV3-TL"), seconds."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    sns.barplot(data=times, x="model", y="seconds", hue="device", ax=ax)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per full PCam epoch (log)")
    ax.set_title("Time per epoch: the paper's GPUs (Table 2) and this machine (extrapolated from the subset)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def zoo_full_vs_transfer(ours, paper=None, tests=None):
    """Test AUC of full training vs transfer (the paper's Fig. 4): one panel per source of rows.
    ``ours`` / ``paper``: rows with dataset, method, auc; ``tests``: {panel: {dataset: welch dict}}."""
    panels = [("ours", ours)] + ([("paper", paper)] if paper is not None and len(paper) else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, frame) in zip(axes[0], panels):
        if len(frame):
            sns.boxplot(data=frame, x="dataset", y="auc", hue="method", ax=ax, fill=False)
            sns.stripplot(data=frame, x="dataset", y="auc", hue="method", dodge=True, ax=ax, legend=False, size=4)
        notes = []
        for dataset, t in ((tests or {}).get(title) or {}).items():
            notes.append(f"{dataset}: t={t['t']:.2f}, df={t['df']:.1f}, p={t['p']:.3g}")
        ax.set_title(f"{title}" + ("\n" + "; ".join(notes) if notes else ""), fontsize=9)
        ax.set_ylabel("test AUC")
    fig.tight_layout()
    return fig


# --- 08 TIL maps -----------------------------------------------------------------------------------------------
