"""Macenko stain normalisation (Macenko et al. 2009), fitted once per slide, numpy only.

A slide's H&E stain vectors and stain maxima are estimated from its held-out tissue patches (one
fit per slide: a single patch with little stain would give an unstable fit); every patch is then
mapped to the reference stain. The reference is the checkpoint's ``stain_reference`` ({"he": 3x2,
"max_c": 2}) when it carries one, else the published Macenko reference (the values torchstain and
most pipelines use), which the rows then name.
"""

from __future__ import annotations

import numpy as np

IO = 240.0  # transmitted light intensity
MACENKO_REFERENCE = {"he": [[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]], "max_c": [1.9705, 1.0308]}


def _od(images: np.ndarray) -> np.ndarray:
    return -np.log((images.reshape(-1, 3).astype(np.float64) + 1) / IO)


def fit(images: np.ndarray, alpha: float = 1.0, beta: float = 0.15) -> dict:
    """The stain vectors ``he`` (3 x 2: haematoxylin, eosin) and the 99th-percentile concentrations
    ``max_c`` of uint8 RGB ``images`` (any shape ending in 3)."""
    od = _od(images)
    tissue = od[(od >= beta).all(axis=1)]  # transparent (glass) pixels carry no stain
    if len(tissue) < 100:
        raise ValueError(f"Macenko fit: only {len(tissue)} stained pixels; too little tissue to fit a stain")
    _, vectors = np.linalg.eigh(np.cov(tissue.T))
    plane = vectors[:, 1:3]
    t = tissue @ plane
    phi = np.arctan2(t[:, 1], t[:, 0])
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    v1, v2 = plane @ [np.cos(lo), np.sin(lo)], plane @ [np.cos(hi), np.sin(hi)]
    he = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1], axis=1)  # haematoxylin first (more red absorbed)
    he *= np.sign(he.sum(axis=0, keepdims=True))  # optical densities are positive
    conc = np.linalg.lstsq(he, od.T, rcond=None)[0]
    return {"he": he.tolist(), "max_c": np.percentile(conc, 99, axis=1).tolist()}


class Normaliser:
    """uint8 patches in a slide's stain (``source``: a :func:`fit`) -> uint8 patches in ``reference``'s."""

    def __init__(self, source: dict, reference: dict | None = None):
        reference = reference or MACENKO_REFERENCE
        self.he, self.max_c = np.asarray(source["he"]), np.asarray(source["max_c"])
        self.he_ref, self.max_c_ref = np.asarray(reference["he"]), np.asarray(reference["max_c"])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        conc = np.linalg.lstsq(self.he, _od(images).T, rcond=None)[0]
        conc *= (self.max_c_ref / np.maximum(self.max_c, 1e-6))[:, None]
        out = IO * np.exp(-self.he_ref @ conc)
        return np.clip(out.T, 0, 255).round().astype(np.uint8).reshape(images.shape)
