"""FLOPs of the network that a set of removed channels leaves, and which channels to remove.

The cost is the papers' formula (conv: ``2 * Cin * kh * kw * Hout * Wout * Cout / groups``,
dense: ``2 * in * out``), the formula ``histolean.core.flops`` applies to the converted module, so
the FLOPs predicted here from a mask are the converted network's FLOPs exactly.
"""

from __future__ import annotations

import numpy as np

from .channels import ChannelGraph


class FlopsModel:
    """Per-layer input/output channel counts as a function of the removed classes."""

    def __init__(self, graph: ChannelGraph):
        self.graph = graph
        self.layers = graph.layers
        n = len(self.layers)
        self.in_full = np.array([len(layer.in_labels) for layer in self.layers], dtype=np.int64)
        self.out_full = np.array([layer.out_features for layer in self.layers], dtype=np.int64)
        # class -> [(layer index, input features removed, output channels removed)]
        self.effects: dict[int, list[tuple[int, int, int]]] = {}
        counts: dict[tuple[int, int], list[int]] = {}
        for i, layer in enumerate(self.layers):
            for labels, side in ((layer.in_labels, 0), (layer.out_slots, 1)):
                if labels is None:
                    continue
                classes, n_per = np.unique(graph.slot_class[labels[labels >= 0]], return_counts=True)
                for cls, cnt in zip(classes.tolist(), n_per.tolist()):
                    counts.setdefault((cls, i), [0, 0])[side] += cnt
        for (cls, i), (n_in, n_out) in sorted(counts.items()):
            self.effects.setdefault(cls, []).append((i, n_in, n_out))
        self.depthwise = np.array([layer.depthwise for layer in self.layers], dtype=bool)
        self.full_flops = int(sum(self._layer_flops(i, self.in_full[i], self.out_full[i]) for i in range(n)))

    def _layer_flops(self, i: int, n_in: int, n_out: int) -> int:
        if self.depthwise[i]:
            n_out = n_in  # a depthwise conv keeps exactly the channels it receives
        return self.layers[i].flops(int(n_in), int(n_out))

    def counts(self, dropped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input features and output channels of every layer after removing ``dropped`` classes."""
        n_in, n_out = self.in_full.copy(), self.out_full.copy()
        for cls in np.flatnonzero(dropped).tolist():
            for i, di, do in self.effects.get(cls, ()):
                n_in[i] -= di
                n_out[i] -= do
        n_out[self.depthwise] = n_in[self.depthwise]
        return n_in, n_out

    def total(self, dropped: np.ndarray) -> int:
        n_in, n_out = self.counts(dropped)
        return int(sum(self._layer_flops(i, n_in[i], n_out[i]) for i in range(len(self.layers))))

    def select(self, scores: np.ndarray, *, flops_target: float | None = None, below: float | None = None,
               min_channels: int = 1, limit: int | None = None) -> np.ndarray:
        """Remove classes in increasing ``scores`` order; returns the boolean ``dropped`` per class.

        ``flops_target``: stop once the FLOPs fall to this fraction of the original network's.
        ``below``: only classes whose score is below it are candidates (threshold conversion).
        ``limit``: remove at most this many classes (progressive masking).
        A class is skipped when removing it would leave a convolution fewer than ``min_channels``
        output channels; pinned classes are never removed.
        """
        if flops_target is not None and not 0.0 < flops_target <= 1.0:
            raise ValueError(f"flops_target must be a fraction in (0, 1], got {flops_target!r}")
        if min_channels < 1:
            raise ValueError(f"min_channels must be >= 1, got {min_channels!r}")
        candidates = np.flatnonzero(~self.graph.class_pinned & np.isfinite(scores))
        if below is not None:
            candidates = candidates[scores[candidates] < below]
        order = candidates[np.argsort(scores[candidates], kind="stable")]
        n_in, n_out = self.in_full.copy(), self.out_full.copy()
        flops = np.array([self._layer_flops(i, n_in[i], n_out[i]) for i in range(len(self.layers))],
                         dtype=np.int64)
        total = int(flops.sum())
        target = None if flops_target is None else flops_target * self.full_flops
        dropped = np.zeros(self.graph.n_classes, dtype=bool)
        for cls in order.tolist():
            if target is not None and total <= target:
                break
            if limit is not None and dropped.sum() >= limit:
                break
            effects = self.effects.get(cls, ())
            if any(do and n_out[i] - do < min_channels for i, _, do in effects):
                continue
            for i, di, do in effects:
                n_in[i] -= di
                n_out[i] -= do
                new = self._layer_flops(i, n_in[i], n_out[i])
                total += new - int(flops[i])
                flops[i] = new
            dropped[cls] = True
        return dropped
