"""Large images with image-level labels built from labelled patches (the streaming benchmark's data).

A mosaic of ``grid x grid`` real patches is positive when any of them is a tumour patch, as a
slide label says only whether tumour is present somewhere (Pinckaers et al. 2020, CAMELYON17).
"""

from __future__ import annotations

import numpy as np


def patch_mosaics(images: np.ndarray, labels: np.ndarray, n: int, grid: int, *, seed: int = 0,
                  max_tumour: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Large images with image-level labels, built from labelled patches (e.g. real PCam).

    ``n`` mosaics of ``grid`` x ``grid`` patches; half of them are positive and hold between
    1 and ``max_tumour`` (default ``grid*grid // 4``, at least 1) tumour patches at random
    places among normal ones; negatives hold normal patches only. Returns the mosaics
    (uint8, N x grid*P x grid*P x 3), the image labels (1 = any tumour) and the tumour
    layout (N x grid x grid bool) - the layout is for evaluating saliency maps, never for training.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise ValueError(f"patch_mosaics: images must be (N, P, P, 3), got {images.shape}")
    tumour, normal = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if len(tumour) == 0 or len(normal) == 0:
        raise ValueError("patch_mosaics: need both tumour (label 1) and normal (label 0) patches")
    rng = np.random.default_rng(seed)
    cells, p = grid * grid, images.shape[1]
    max_tumour = max(1, cells // 4) if max_tumour is None else max(1, min(max_tumour, cells))
    mosaic_labels = (np.arange(n) % 2).astype(np.int64)
    rng.shuffle(mosaic_labels)
    out = np.empty((n, grid * p, grid * p, 3), dtype=np.uint8)
    layout = np.zeros((n, grid, grid), dtype=bool)
    for i, positive in enumerate(mosaic_labels):
        k = int(rng.integers(1, max_tumour + 1)) if positive else 0
        where = rng.choice(cells, size=k, replace=False)
        layout[i].flat[where] = True
        picks = np.where(layout[i].ravel(), rng.choice(tumour, cells), rng.choice(normal, cells))
        out[i] = images[picks].reshape(grid, grid, p, p, 3).transpose(0, 2, 1, 3, 4).reshape(grid * p, grid * p, 3)
    return out, mosaic_labels, layout
