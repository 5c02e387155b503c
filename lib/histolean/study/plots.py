"""The figures the notebooks share: one call per figure, so notebooks stay narrative,
parameters, library calls and plots.

Every function takes data (result rows as a DataFrame, arrays, images), draws with
matplotlib/seaborn, and returns the ``Figure`` (notebooks pass it to
``Recorder.save_figure``). Nothing here computes a result. Sections follow the
notebooks' reading order; shared helpers come first.

Importing the module changes no global state: each figure function draws inside ``style()``
(seaborn's whitegrid theme as an ``rc_context``), so the process's matplotlib settings stay as they were.
"""

from __future__ import annotations

import functools
import inspect

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from cycler import cycler


# --- shared helpers --------------------------------------------------------------------------------------------


def style():
    """The house style as a context manager: seaborn's whitegrid, notebook context and "deep" palette,
    applied to what is drawn inside it only (``with plots.style(): ...``)."""
    theme = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook"),
             "axes.prop_cycle": cycler(color=sns.color_palette("deep"))}
    return mpl.rc_context(theme)


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


METHOD_COLOURS = {"original": "black", "ir": "tab:blue", "nar": "tab:red", "resrep": "tab:green"}


def speedup_vs_flop_reduction(frame) -> plt.Figure:
    """Measured speed-up over the original (median of interleaved rounds, bars from min to max) against the
    FLOP reduction, one marker per model and one colour per method; on the dotted diagonal a variant runs
    exactly as much faster as it has fewer FLOPs. ``frame``: rows with model, method, flop_reduction
    (FLOPs(original) / FLOPs(variant)), speedup, speedup_min, speedup_max (on the deployment backend, named
    by a ``backend`` column when there is one) and, where present, ``speedup_eager_fp32`` (drawn as open
    markers: the same variants in eager float32); the original's own row is left out."""
    fig, ax = plt.subplots(figsize=(6, 5))
    variants = frame[frame["method"] != "original"]
    markers = dict(zip(dict.fromkeys(variants["model"]), "o^sDvP*X"))
    eager = "speedup_eager_fp32" in variants and variants["speedup_eager_fp32"].notna().any()
    for (model, method), part in variants.groupby(["model", "method"], sort=False):
        err = np.vstack([part["speedup"] - part["speedup_min"], part["speedup_max"] - part["speedup"]])
        on = f" on {part['backend'].iloc[0]}" if "backend" in part and part["backend"].notna().any() else ""
        colour = METHOD_COLOURS.get(method, "grey")
        ax.errorbar(part["flop_reduction"], part["speedup"], yerr=err, fmt=markers.get(model, "o"),
                    color=colour, capsize=3, label=f"{model} {method.upper()}{on}")
        if eager:
            ax.plot(part["flop_reduction"], part["speedup_eager_fp32"], markers.get(model, "o"), mfc="none",
                    color=colour, label=f"{model} {method.upper()} eager fp32")
    highest = [frame["flop_reduction"].max(), frame["speedup_max"].max(), 2]
    if eager:
        highest.append(variants["speedup_eager_fp32"].max())
    top = float(max(highest)) * 1.1
    ax.plot([1, top], [1, top], ":", color="grey", label="speed-up = FLOP reduction")
    log2_axis(ax, "x")
    log2_axis(ax, "y")
    ax.set_xlabel("FLOP reduction: FLOPs(original) / FLOPs(variant)")
    ax.set_ylabel("measured speed-up (patches/s vs the original)")
    ax.legend(fontsize=7)
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


# --- 03 ResRep -------------------------------------------------------------------------------------------------


def resrep_mask_schedule(logs: dict, flops_target: float):
    """Progressive masking: masked channel classes and the predicted FLOP reduction at each mask update.

    ``logs``: network name -> ``ResRepSchedule.log`` (dicts with step, masked, flops_ratio: the method's
    predicted FLOPs / original, shown here inverted as original / predicted like every row's flop_reduction).
    ``flops_target``: ResRep's target fraction of the original FLOPs.
    """
    import pandas as pd

    frame = pd.DataFrame([{**e, "network": name, "flop_reduction": 1 / e["flops_ratio"]}
                          for name, log in logs.items() for e in log])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    if frame.empty:
        left.set_title("no mask update happened (run shorter than the warm-up)")
        return fig
    sns.lineplot(frame, x="step", y="masked", hue="network", marker="o", ax=left)
    left.set_title("masked channel classes per update")
    sns.lineplot(frame, x="step", y="flop_reduction", hue="network", marker="o", ax=right, legend=False)
    right.axhline(1 / flops_target, color="grey", ls="--", lw=0.8)
    right.set_title(f"predicted FLOP reduction, original / masked (target {1 / flops_target:.2f}x)")
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
    """AUC change vs FLOP reduction (original / pruned): the paper's epsilon sweep next to our conversions.

    ``paper``: DataFrame with flop_reduction, auc_change. ``ours``: DataFrame with model, data_kind,
    flop_reduction, auc_change.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(paper.flop_reduction, paper.auc_change, "o--", label="NAR paper, ResNet50V2 (TIL)")
    for (name, kind), group in ours.groupby(["model", "data_kind"]):
        ax.plot(group.flop_reduction, group.auc_change, "s", label=f"ours: {name} ({kind} PCam)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("FLOP reduction: original FLOPs / FLOPs")
    ax.set_ylabel("AUC change vs unpruned")
    ax.legend(fontsize=8)
    return fig

# --- 04 streaming SGD ------------------------------------------------------------------------------------------


def saliency_overlay(saliency_map: np.ndarray, sigma: float) -> np.ndarray:
    """The paper's display: Gaussian blur, cap at the 99th percentile, keep the upper half
    (values under the median are NaN, i.e. transparent), scaled to [0, 1]."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    s = gaussian_filter(np.asarray(saliency_map, dtype=np.float64), sigma)
    s = np.minimum(s, np.percentile(s, 99))
    lo, hi = np.percentile(s, 50), s.max()
    out = (s - lo) / max(hi - lo, 1e-12)
    out[s < lo] = np.nan
    return out


def mosaics(images, labels, layouts):
    """Mosaics side by side, titled with their image label and number of tumour patches."""
    fig, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3.2), squeeze=False)
    for ax, img, y, lay in zip(axes[0], images, labels, layouts):
        ax.imshow(img)
        ax.set_title(f"label {y}: {lay.sum()} tumour patch(es)")
        ax.axis("off")
    return fig


def loss_curves(histories: dict):
    """Training loss per epoch, one line per method (``histories``: method -> list of losses)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for (method, losses), style in zip(histories.items(), ("-o", "--x", ":s")):
        ax.plot(range(1, len(losses) + 1), losses, style, label=method)
    ax.set(xlabel="epoch", ylabel="training loss", title="Same initialisation, same batches")
    ax.legend()
    return fig


def streaming_memory_time(runs):
    """Peak memory and time per step against image side (constant tile) and tile side (constant input).

    ``runs``: DataFrame with method, sweep, image_size, tile_size, step_peak_mib, process_peak_mib,
    time_s. Memory panels show the step's peak (solid) and the whole process's peak (dotted).
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    tile_sweep = runs[runs.sweep == "constant_tile"]
    sizes = sorted(tile_sweep.image_size.unique())
    for (method, placement), d in tile_sweep.groupby(["method", "input_on"]):
        d = d.sort_values("image_size")
        label = f"{method} (input on {placement})"
        line, = axes[0].plot(d.image_size, d.step_peak_mib, marker="o", label=f"{label}: step")
        axes[0].plot(d.image_size, d.process_peak_mib, ":", marker=".", color=line.get_color(),
                     label=f"{label}: whole process")
        axes[1].plot(d.image_size, d.time_s, marker="o", label=label)
    for ax, what in zip(axes[:2], ("peak memory (MiB)", "time per step (s)")):
        ax.set(yscale="log", xlabel="image side (px)", ylabel=what)
        log2_axis(ax, "x")
        ax.minorticks_off()
        if sizes:
            ax.set_xticks(sizes, [str(int(s)) for s in sizes])
        ax.legend(fontsize=7)
    axes[0].set_title("constant tile: memory follows the tile, not the image")
    d = runs[runs.sweep == "constant_input"].sort_values("tile_size")
    ax2 = axes[2].twinx()
    axes[2].plot(d.tile_size, d.step_peak_mib, "s-", color="C1", label="peak memory (step)")
    ax2.plot(d.tile_size, d.time_s, "^--", color="C2", label="time")
    axes[2].set(xlabel="tile side (px)", ylabel="peak memory (MiB)",
                title=f"constant input ({int(d.image_size.max()) if len(d) else '-'} px)")
    if len(d):
        log2_axis(axes[2], "x")
        axes[2].minorticks_off()
        axes[2].set_xticks(list(d.tile_size), [str(int(t)) for t in d.tile_size])
    ax2.set_ylabel("time per step (s)")
    axes[2].legend(loc="upper left")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    return fig


def auc_vs_size(e2e):
    """Test AUC with its 95% CI against image side (same field of view). ``e2e``: image_size, auc, auc_lo, auc_hi."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(e2e.image_size, e2e.auc, yerr=[e2e.auc - e2e.auc_lo, e2e.auc_hi - e2e.auc], fmt="o-", capsize=4)
    ax.axhline(0.5, color="grey", ls=":", label="chance")
    ax.set(xlabel="image side (px), same field of view", ylabel="test AUC (95% CI)",
           title="Any tumour in the image? (image-level labels)")
    log2_axis(ax, "x")
    ax.minorticks_off()
    ax.set_xticks(list(e2e.image_size), [str(s) for s in e2e.image_size])
    ax.legend()
    return fig


def saliency_panels(images, maps, probabilities, layouts, grid: int):
    """Images (CHW, normalised to [-1, 1]) with their saliency overlay; cyan boxes mark the real tumour patches."""
    fig, axes = plt.subplots(1, len(images), figsize=(4.5 * len(images), 4.5), squeeze=False)
    for ax, x, s, p, layout in zip(axes[0], images, maps, probabilities, layouts):
        size = x.shape[-1]
        cell = size / grid
        ax.imshow((x.permute(1, 2, 0).numpy() * 0.5 + 0.5).clip(0, 1))
        ax.imshow(saliency_overlay(s, sigma=size / 160), cmap="inferno", alpha=0.6)
        for r, c in zip(*layout.nonzero()):
            ax.add_patch(plt.Rectangle((c * cell, r * cell), cell, cell, fill=False, ec="cyan", lw=2))
        ax.set_title(f"p(tumour) = {p:.2f}")
        ax.axis("off")
    return fig


# --- 05 TIL: NAR vs IR vs ResRep -------------------------------------------------------------------------------

def til_auc_vs_gflops(ours, paper):
    """AUC against GFLOPs per 50 um patch, one column per architecture: ours (top, 95% bootstrap CI, Pareto
    front dashed, red x: one class predicted at the threshold; frame column one_class) and the paper's Tables
    3-4 (bottom). Frames need model, method, gflops, auc (+ auc_ci_lo / auc_ci_hi for ours, pareto: bool)."""
    import numpy as np

    model_names = list(dict.fromkeys(ours["model"]))
    fig, axes = plt.subplots(2, len(model_names), figsize=(5.2 * len(model_names), 7), squeeze=False)
    for col, name in enumerate(model_names):
        for row, (frame, who) in enumerate(((ours, "ours"), (paper, "paper"))):
            ax = axes[row, col]
            d = frame[frame["model"] == name]
            for method, g in d.groupby("method", sort=False):
                colour = METHOD_COLOURS.get(method, "grey")
                if who == "ours":
                    err = np.vstack([g["auc"] - g["auc_ci_lo"], g["auc_ci_hi"] - g["auc"]])
                    ax.errorbar(g["gflops"], g["auc"], yerr=err, fmt="o", color=colour, label=method, capsize=2)
                    flagged = g[g["one_class"].fillna(False).astype(bool)] if "one_class" in g else g[:0]
                    ax.plot(flagged["gflops"], flagged["auc"], "x", color="red", ms=10, mew=2)  # one class predicted
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


def zoo_auc_vs_cost(ours, paper=None):
    """AUC against depth, parameters and GFLOPs per patch (the paper's Fig. 3, plus the cost plane of
    the NAR study). ``ours``: rows with auc, layers, params, gflops, dataset, method, paper (abbreviation);
    ``paper``: optional published rows with auc, depth, params, dataset, method, paper, drawn hollow."""

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


def til_map_grid(images: dict, titles: dict | None = None, width: float = 7.0):
    """Map images (thumbnail beside the map, as ``til_maps.map_slide`` writes them) in a grid: one row per slide,
    one column per model. ``images``: {(slide, model): RGB array or image path}."""
    import numpy as np
    from PIL import Image

    slides = list(dict.fromkeys(s for s, _ in images))
    names = list(dict.fromkeys(m for _, m in images))
    arrays = {k: np.asarray(Image.open(v).convert("RGB")) if not hasattr(v, "shape") else v for k, v in images.items()}
    heights = [max(arrays[(s, m)].shape[0] / arrays[(s, m)].shape[1] for m in names if (s, m) in arrays)
               for s in slides]
    fig, axes = plt.subplots(len(slides), len(names), squeeze=False, figsize=(width * len(names),
                             sum(width * h for h in heights) + 0.6 * len(slides)),
                             gridspec_kw={"height_ratios": heights})
    for i, slide in enumerate(slides):
        for j, name in enumerate(names):
            ax = axes[i][j]
            ax.axis("off")
            if (slide, name) in arrays:
                ax.imshow(arrays[(slide, name)])
                ax.set_title((titles or {}).get((slide, name), f"{slide} - {name}"), fontsize=10)
    fig.tight_layout()
    return fig


def backend_throughput(table):
    """Patches/s per backend, model only vs end to end (reading included), one panel per model.
    ``table``: DataFrame with columns model, backend, model_per_s, end_to_end_per_s."""
    long = table.melt(id_vars=["model", "backend"], value_vars=["model_per_s", "end_to_end_per_s"],
                      var_name="measured", value_name="patches_per_s")
    long["measured"] = long["measured"].map({"model_per_s": "model only", "end_to_end_per_s": "end to end"})
    models = list(dict.fromkeys(long["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        sns.barplot(data=long[long["model"] == model], x="backend", y="patches_per_s", hue="measured", ax=ax)
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel("patches / s")
        ax.tick_params(axis="x", rotation=20)
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    return fig


# --- the house style, per figure -------------------------------------------------------------------------------


def _in_style(draw):
    @functools.wraps(draw)
    def styled(*args, **kwargs):
        with style():
            return draw(*args, **kwargs)
    return styled


# Every public function of this module draws inside style(): wrapped here once rather than decorated one by one,
# so a new figure function gets the style without remembering to ask for it.
for _name, _function in list(globals().items()):
    if inspect.isfunction(_function) and _function.__module__ == __name__ and not _name.startswith("_") \
            and _name != "style":
        globals()[_name] = _in_style(_function)
del _name, _function
