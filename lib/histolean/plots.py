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


PRUNING_METRICS = (("dice", "Dice (semantic)"), ("mse", "MSE (regression)"), ("aji", "AJI (instances)"),
                   ("pq", "PQ (instances)"))


def pruning_curves(frame, title: str = ""):
    """The paper's Figs. 2-3: Dice, MSE, AJI and PQ against the compression ratio, one line per scheme
    (median over images) with the interquartile range of the images shaded.

    ``frame``: one row per (scheme, cr, image) with the metric columns; CR 1 (the unpruned
    model) is drawn at the start of every scheme's line.
    """
    import pandas as pd

    fig, axes = plt.subplots(1, len(PRUNING_METRICS), figsize=(4 * len(PRUNING_METRICS), 3.3))
    schemes = [s for s in frame["scheme"].unique() if s != "unpruned"]
    base = frame[frame["scheme"] == "unpruned"]
    palette = dict(zip(schemes, sns.color_palette("deep", len(schemes))))
    for ax, (key, label) in zip(axes, PRUNING_METRICS):
        for scheme in schemes:
            part = pd.concat([base.assign(scheme=scheme), frame[frame["scheme"] == scheme]])
            stats = part.groupby("cr")[key].describe(percentiles=[0.25, 0.5, 0.75])
            ax.plot(stats.index, stats["50%"], "o-", color=palette[scheme], label=scheme)
            ax.fill_between(stats.index, stats["25%"], stats["75%"], color=palette[scheme], alpha=0.2)
        log2_axis(ax)
        ax.set_xlabel("compression ratio")
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def instance_gallery(image, truth, predictions: dict, title: str = ""):
    """The paper's Fig. 4: the image, its ground-truth instances, and predicted instances per CR
    (``predictions``: {column title: instance map}). Instances get random colours."""
    import numpy as np
    from skimage.color import label2rgb

    panels = [("image", image), ("ground truth", truth), *predictions.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    for ax, (name, array) in zip(np.atleast_1d(axes), panels):
        if array.ndim == 3:
            ax.imshow(array)
        else:
            colours = np.random.default_rng(0).uniform(0.2, 1.0, (max(int(array.max()), 1), 3))
            ax.imshow(label2rgb(array, colors=colours, bg_label=0))
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def speedup_vs_cr(frame):
    """Theoretical speed-up (dense / sparsity-aware FLOPs) against CR, ours beside the paper's Table 1.

    ``frame``: rows with ``source`` (legend label), ``scheme``, ``cr``, ``speedup``.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    sns.lineplot(frame.dropna(subset=["speedup"]), x="cr", y="speedup", hue="source", style="scheme",
                 markers=True, ax=ax)
    log2_axis(ax)
    log2_axis(ax, "y")
    ax.set_xlabel("compression ratio")
    ax.set_ylabel("theoretical speed-up")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --- 07 PCam / IDC CNN zoo -------------------------------------------------------------------------------------

# --- 08 TIL maps -----------------------------------------------------------------------------------------------
