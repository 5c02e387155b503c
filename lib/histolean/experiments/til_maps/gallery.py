"""Judged by eye: a map's highest- and lowest-scoring patches side by side, so a reader sees what the
model calls TIL (lymphocytes, or collagen, folds and tissue edges)."""

from __future__ import annotations

import os

import numpy as np

from histolean.data import wsi
from histolean.experiments.til_maps.outputs import read_patches
from histolean.experiments.til_maps.slides import open_slide


def extremes(folder: str | os.PathLike, slide_path: str | os.PathLike, mpp=None, n: int = 6,
             size: int = 96) -> dict:
    """The ``n`` highest- and ``n`` lowest-probability patches of a mapped slide (its output ``folder``),
    read again from the slide at ``size`` px: {"top": (uint8 (k, size, size, 3), probabilities),
    "bottom": (...)}, highest first and lowest first."""
    table = read_patches(folder).sort_values("probability", kind="stable")
    n = min(n, len(table) // 2) if len(table) > 1 else len(table)
    picks = {"top": table.iloc[::-1][:n], "bottom": table.iloc[:n]}
    out = {}
    with open_slide(slide_path, mpp) as slide:
        for name, rows in picks.items():
            images = [wsi.read_patch(slide, int(r.x), int(r.y), int(r.patch_px), size) for r in rows.itertuples()]
            out[name] = (np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
                         rows["probability"].to_numpy())
    return out


def extremes_figure(entries: dict, tile: float = 1.1):
    """One row per (slide, model) of ``entries`` ({(slide, model): :func:`extremes`}): the highest-scoring
    patches on the left, the lowest on the right, each titled with its probability."""
    import matplotlib.pyplot as plt

    n = max(max(len(e["top"][1]), len(e["bottom"][1])) for e in entries.values())
    fig, axes = plt.subplots(len(entries), 2 * n, squeeze=False,
                             figsize=(tile * 2 * n + 0.4, (tile + 0.5) * len(entries)))
    for i, ((slide, model), e) in enumerate(entries.items()):
        for j in range(2 * n):
            ax = axes[i][j]
            ax.axis("off")
            side, k = ("top", j) if j < n else ("bottom", j - n)
            images, probs = e[side]
            if k < len(probs):
                ax.imshow(images[k])
                ax.set_title(f"{probs[k]:.2f}", fontsize=8, color="firebrick" if side == "top" else "navy")
        axes[i][0].text(0, -0.45, f"{slide} - {model}: highest scores (left), lowest (right)",
                        transform=axes[i][0].transAxes, fontsize=9)
    fig.tight_layout()
    return fig
