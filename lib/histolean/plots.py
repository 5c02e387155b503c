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

TIL_METHOD_COLOURS = {"original": "black", "ir": "tab:blue", "nar": "tab:red", "resrep": "tab:green"}


def til_auc_vs_gflops(ours, paper):
    """AUC against GFLOPs per 50 um patch, one column per architecture: ours (top, 95% bootstrap CI,
    Pareto front dashed) and the paper's Tables 3-4 (bottom). Frames need model, method, gflops,
    auc (+ auc_ci_lo / auc_ci_hi for ours, pareto: bool)."""
    import numpy as np

    model_names = list(dict.fromkeys(ours["model"]))
    fig, axes = plt.subplots(2, len(model_names), figsize=(5.2 * len(model_names), 7), squeeze=False)
    for col, name in enumerate(model_names):
        for row, (frame, who) in enumerate(((ours, "ours"), (paper, "paper"))):
            ax = axes[row, col]
            d = frame[frame["model"] == name]
            for method, g in d.groupby("method", sort=False):
                colour = TIL_METHOD_COLOURS.get(method, "grey")
                if who == "ours":
                    err = np.vstack([g["auc"] - g["auc_ci_lo"], g["auc_ci_hi"] - g["auc"]])
                    ax.errorbar(g["gflops"], g["auc"], yerr=err, fmt="o", color=colour, label=method, capsize=2)
                else:
                    ax.plot(g["gflops"], g["auc"], "s", color=colour, label=method)
            if who == "ours" and "pareto" in d:
                front = d[d["pareto"]].sort_values("gflops")
                ax.plot(front["gflops"], front["auc"], "--", color="grey", lw=1, label="Pareto front")
            if len(d):
                log2_axis(ax)
            ax.set_xlabel("GFLOPs per 50 um patch")
            ax.set_ylabel("test AUC")
            ax.set_title(f"{name}: {'ours' if who == 'ours' else 'NAR paper (Tables 3-4, 240 px base)'}", fontsize=10)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def til_speedup_vs_flops(frame):
    """Measured inference speed-up (median, min-max bar) against FLOP reduction, both vs the original;
    the dotted line is y = x (a FLOP saving fully turned into wall-clock time)."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    markers = {"resnet50v2": "o", "inception_v4": "^"}
    for (model, method), g in frame.groupby(["model", "method"], sort=False):
        err = np.vstack([g["speedup"] - g["speedup_min"], g["speedup_max"] - g["speedup"]])
        ax.errorbar(g["flop_reduction"], g["speedup"], yerr=err, fmt=markers.get(model, "s"),
                    color=TIL_METHOD_COLOURS.get(method, "grey"), capsize=2, label=f"{model} {method}")
    top = float(max(frame["flop_reduction"].max(), frame["speedup_max"].max())) * 1.1
    ax.plot([1, top], [1, top], ":", color="grey", label="y = x")
    log2_axis(ax, "x")
    log2_axis(ax, "y")
    ax.set_xlabel("FLOP reduction vs original (x)")
    ax.set_ylabel("measured speed-up vs original (x)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def til_resrep_widths(ours, paper):
    """Fraction of output channels ResRep kept per stage (ours, one row per model and epsilon) beside
    the paper's Table 2 (1 = the stage was pruned). Both frames: index = row label, columns = stages."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * max(len(ours), len(paper)) + 2))
    sns.heatmap(ours, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=axes[0], cbar=False)
    axes[0].set_title("ours: fraction of channels kept")
    sns.heatmap(paper, annot=True, fmt=".0f", vmin=0, vmax=1, cmap="Reds", ax=axes[1], cbar=False)
    axes[1].set_title("NAR paper Table 2: stage pruned (1) or not (0)")
    fig.tight_layout()
    return fig


def til_grid_search(frame):
    """Validation AUC of every (alpha, beta, gamma) candidate of the NAR grid search; the paper's
    choice (1.2, 1.1, 1.15) in red."""
    frame = frame.sort_values("val_auc", ascending=False)
    labels = [f"{a:.2f}/{b:.2f}/{g:.2f}" for a, b, g in zip(frame["alpha"], frame["beta"], frame["gamma"])]
    colours = ["tab:red" if p else "tab:grey" for p in frame["paper_choice"]]
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(frame) + 2), 3.8))
    ax.bar(range(len(frame)), frame["val_auc"], color=colours)
    ax.set_xticks(range(len(frame)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("alpha / beta / gamma")
    ax.set_ylabel("validation AUC")
    lo = float(frame["val_auc"].min())
    ax.set_ylim(max(0.0, lo - 0.05), min(1.0, float(frame["val_auc"].max()) + 0.05))
    fig.tight_layout()
    return fig


# --- 06 nuclei pruning -----------------------------------------------------------------------------------------

# --- 07 PCam / IDC CNN zoo -------------------------------------------------------------------------------------

# --- 08 TIL maps -----------------------------------------------------------------------------------------------
