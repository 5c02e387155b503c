"""The figures the notebooks share: one call per figure, so notebooks stay narrative,
parameters, library calls and plots.

Every function takes data (result rows as a DataFrame, arrays, images), draws with
matplotlib/seaborn, and returns the ``Figure`` (notebooks pass it to
``Recorder.save_figure``). Nothing here computes a result. Sections follow the
notebooks' reading order; shared helpers come first.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

sns.set_theme(style="whitegrid", context="notebook")


# --- shared helpers --------------------------------------------------------------------------------------------


def log2_axis(ax, axis: str = "x") -> None:
    """A base-2 log axis with plain-number tick labels (costs halve per NAR level)."""
    from matplotlib.ticker import ScalarFormatter

    getattr(ax, f"set_{axis}scale")("log", base=2)
    getattr(ax, f"{axis}axis").set_major_formatter(ScalarFormatter())


def image_grid(rows: dict[str, list[tuple[np.ndarray, str]]], cell_inches: float = 2.0):
    """One row of images per key, each image with its title; empty cells stay blank."""
    n_cols = max((len(items) for items in rows.values()), default=1) or 1
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(cell_inches * n_cols, (cell_inches + 0.1) * len(rows)),
                             squeeze=False)
    for row_axes, items in zip(axes, rows.values()):
        for ax in row_axes:
            ax.axis("off")
        for ax, (image, title) in zip(row_axes, items):
            ax.imshow(image)
            ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


# --- 01 data tour ----------------------------------------------------------------------------------------------


def patch_examples(sets: dict) -> plt.Figure:
    """A few patches of each classification dataset (``{name: PatchSet}``), titled with data kind and label."""
    return image_grid({name: [(img, f"{name} ({ps.data_kind[:4]}) y={label}")
                              for img, label in zip(ps.images, ps.labels)] for name, ps in sets.items()})


def nucleus_instances(tiles: dict) -> plt.Figure:
    """Each tile (``{name: InstanceSample}``) with its nucleus outlines in green."""
    from skimage.segmentation import find_boundaries

    fig, axes = plt.subplots(1, len(tiles), figsize=(5 * len(tiles), 5), squeeze=False)
    for ax, (name, tile) in zip(axes[0], tiles.items()):
        shown = tile.image.copy()
        shown[find_boundaries(tile.instances)] = (0, 255, 0)
        ax.imshow(shown)
        ax.set_title(f"{name}: {tile.n_instances} instances ({tile.data_kind})")
        ax.axis("off")
    fig.tight_layout()
    return fig


def slide_grid_and_map(overlay: np.ndarray, value_map: np.ndarray, patch_um: float, value_label: str) -> plt.Figure:
    """A slide thumbnail with its tissue and patch grid (``wsi.grid_overlay``) beside a per-patch map."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 6))
    axes[0].imshow(overlay)
    axes[0].set_title(f"tissue (green) and {patch_um:g} um grid")
    image = axes[1].imshow(value_map, cmap="magma")
    axes[1].set_title(value_label)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(image, ax=axes[1], shrink=0.6)
    return fig


# --- 02 NAR cost -----------------------------------------------------------------------------------------------


def _reduction_level(setting: dict) -> int:
    return int(setting.get("phi", setting.get("k", 0)))


def gflops_vs_level(costs) -> plt.Figure:
    """GFLOPs per patch against the reduction level (NAR phi, IR k), ours solid and the paper's dashed,
    one panel per network. ``costs``: rows with model, method, setting, gflops, paper_gflops."""
    models = list(dict.fromkeys(costs.model))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        sub = costs[costs.model == model]
        for method, marker, label in (("nar", "o", "NAR (phi)"), ("ir", "s", "IR (k)")):
            part = sub[sub.method.isin(["original", method])]
            level = [_reduction_level(s) for s in part.setting]
            ax.plot(level, part.gflops, marker=marker, label=f"{label}, ours")
            ax.plot(level, part.paper_gflops, marker=marker, linestyle="--", alpha=0.6, label=f"{label}, paper")
        log2_axis(ax, "y")
        ax.set_title(model)
        ax.set_xlabel("reduction level (phi or k)")
    axes[0][0].set_ylabel("GFLOPs per 50 x 50 um patch")
    axes[0][-1].legend()
    fig.tight_layout()
    return fig


def speedup_vs_flop_ratio(speeds) -> plt.Figure:
    """Measured speed-up over the original (median of interleaved rounds, bars from min to max) against
    the FLOP reduction; on the diagonal a network runs exactly as much faster as it has fewer FLOPs.
    ``speeds``: rows with model, method, flop_ratio, speedup, speedup_min, speedup_max."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for (model, method), part in speeds[speeds.method != "original"].groupby(["model", "method"], sort=False):
        err = np.vstack([part.speedup - part.speedup_min, part.speedup_max - part.speedup])
        ax.errorbar(part.flop_ratio, part.speedup, yerr=err, marker="o" if method == "nar" else "s",
                    linestyle="", capsize=3, label=f"{model} {method.upper()}")
    top = float(max(speeds.flop_ratio.max(), speeds.speedup_max.max(), 2))
    ax.plot([1, top], [1, top], color="grey", linestyle=":", label="speed-up = FLOP ratio")
    log2_axis(ax, "x")
    log2_axis(ax, "y")
    ax.set_xlabel("FLOPs(original) / FLOPs(variant)")
    ax.set_ylabel("measured speed-up (patches/s vs the original)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --- 03 ResRep -------------------------------------------------------------------------------------------------

# --- 04 streaming SGD ------------------------------------------------------------------------------------------

# --- 05 TIL: NAR vs IR vs ResRep -------------------------------------------------------------------------------

# --- 06 nuclei pruning -----------------------------------------------------------------------------------------

# --- 07 PCam / IDC CNN zoo -------------------------------------------------------------------------------------

# --- 08 TIL maps -----------------------------------------------------------------------------------------------
