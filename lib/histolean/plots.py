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

# --- 08 TIL maps -----------------------------------------------------------------------------------------------


def til_map_grid(images: dict, titles: dict | None = None, width: float = 7.0):
    """Map images (thumbnail beside the map, as ``tilmap`` writes them) in a grid: one row per slide,
    one column per model. ``images``: {(slide, model): RGB array or image path}."""
    import numpy as np
    from PIL import Image

    slides = list(dict.fromkeys(s for s, _ in images))
    names = list(dict.fromkeys(m for _, m in images))
    arrays = {k: np.asarray(Image.open(v).convert("RGB")) if not hasattr(v, "shape") else v for k, v in images.items()}
    heights = [max(arrays[(s, m)].shape[0] / arrays[(s, m)].shape[1] for m in names if (s, m) in arrays) for s in slides]
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
