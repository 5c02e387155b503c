"""Compactors: identity-initialised 1x1 convolutions inserted after every prunable conv (+ BN)."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from histolean.core.flops import probe_input

from .channels import ChannelGraph, Layer, analyse
from .selection import FlopsModel

COMPACTOR_PREFIX = "resrep_compactors"


class Compactor(nn.Module):
    """A ``C x C`` 1x1 convolution starting as the identity, with a per-row mask (a buffer).

    The mask does not change the forward pass: it only decides which rows keep the task
    gradient during training (ResRep's gradient resetting).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(channels).reshape(channels, channels, 1, 1))
        self.register_buffer("mask", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight)

    def row_norms(self) -> torch.Tensor:
        return self.weight.detach().flatten(1).norm(dim=1)


class ResRepNet(nn.Module):
    """A model with compactors, the channel graph that placed them and the FLOPs accounting.

    ``forward`` is the wrapped network's. Train it with :mod:`histolean.methods.resrep.training`, then
    turn it into a plain smaller network with :func:`histolean.methods.resrep.convert`.
    """

    def __init__(self, graph: ChannelGraph, input_size: tuple[int, int], in_channels: int):
        super().__init__()
        self.net = graph.graph_module
        self.channels = graph
        self.input_size = input_size
        self.in_channels = in_channels
        self.flops_model = FlopsModel(graph)
        self.pruned_layers: list[Layer] = graph.prunable_layers()
        self.compactor_names = {layer.node: f"{COMPACTOR_PREFIX}.{layer.name.replace('.', '_')}"
                                for layer in self.pruned_layers}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def scope(self) -> str:
        """The pruning scope the channels were analysed with ("any" or "bottleneck")."""
        return self.channels.scope

    def compactors(self) -> list[tuple[Layer, Compactor]]:
        return [(layer, self.net.get_submodule(self.compactor_names[layer.node])) for layer in self.pruned_layers]

    def compactor_parameters(self) -> list[nn.Parameter]:
        return [comp.weight for _, comp in self.compactors()]

    def other_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.compactor_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    # -- per-class views ---------------------------------------------------------------------------
    def class_scores(self) -> np.ndarray:
        """Mean compactor row norm of each class (tied channels share one score); NaN if no compactor."""
        sums = np.zeros(self.channels.n_classes)
        counts = np.zeros(self.channels.n_classes)
        for layer, comp in self.compactors():
            classes = self.channels.slot_class[layer.out_slots]
            np.add.at(sums, classes, comp.row_norms().double().cpu().numpy())
            np.add.at(counts, classes, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / counts, np.nan)

    def class_max_norms(self) -> np.ndarray:
        """Largest compactor row norm of each class (collapsed: all its rows are ~0); NaN if no compactor."""
        out = np.full(self.channels.n_classes, -np.inf)
        for layer, comp in self.compactors():
            np.maximum.at(out, self.channels.slot_class[layer.out_slots], comp.row_norms().double().cpu().numpy())
        return np.where(np.isfinite(out), out, np.nan)

    def row_norms(self) -> tuple[np.ndarray, np.ndarray]:
        """(norm, masked) of every compactor row: what the histogram of the benchmark shows."""
        norms, masked = [], []
        for _, comp in self.compactors():
            norms.append(comp.row_norms().cpu().numpy())
            masked.append(comp.mask.cpu().numpy() == 0)
        return np.concatenate(norms), np.concatenate(masked)

    def dropped_classes(self) -> np.ndarray:
        """Classes whose compactor rows are masked (all tied rows share a mask)."""
        dropped = np.zeros(self.channels.n_classes, dtype=bool)
        for layer, comp in self.compactors():
            masked = comp.mask.cpu().numpy() == 0
            dropped[self.channels.slot_class[layer.out_slots[masked]]] = True
        return dropped

    def set_masks(self, dropped: np.ndarray) -> None:
        """Mask the compactor rows of the ``dropped`` classes, unmask all others."""
        if dropped.shape != (self.channels.n_classes,):
            raise ValueError(f"dropped must have one entry per class ({self.channels.n_classes}), "
                             f"got shape {dropped.shape}")
        if (dropped & self.channels.class_pinned).any():
            raise ValueError("cannot mask pinned (unprunable) channel classes")
        for layer, comp in self.compactors():
            keep = ~dropped[self.channels.slot_class[layer.out_slots]]
            comp.mask.copy_(torch.as_tensor(keep, dtype=comp.mask.dtype))

    # -- cost ----------------------------------------------------------------------------------------
    @property
    def original_flops(self) -> int:
        """FLOPs of the network without compactors (the papers' formula)."""
        return self.flops_model.full_flops

    def predicted_flops(self, dropped: np.ndarray | None = None) -> int:
        """FLOPs of the converted network that removes ``dropped`` (default: the masked classes)."""
        return self.flops_model.total(self.dropped_classes() if dropped is None else dropped)

    def summary(self) -> dict:
        graph = self.channels
        return {"scope": graph.scope, "compactors": len(self.pruned_layers), "classes": graph.n_classes,
                "pinned_classes": int(graph.class_pinned.sum()),
                "prunable_channels": int((~graph.class_pinned[graph.slot_class]).sum()),
                "masked_classes": int(self.dropped_classes().sum()),
                "original_flops": self.original_flops, "predicted_flops": self.predicted_flops()}


def _size2(input_size) -> tuple[int, int]:
    if isinstance(input_size, int):
        return (input_size, input_size)
    h, w = input_size
    return (int(h), int(w))


def prepare(model: nn.Module, input_size, *, in_channels: int = 3, exclude=(), scope: str = "any",
            copy_model: bool = True) -> ResRepNet:
    """Trace ``model``, find its prunable convolutions and insert a compactor after each.

    ``input_size``: int or (H, W) of the training input (FLOPs depend on it). ``exclude``:
    module names of convolutions whose output channels must be kept. ``scope``: "any" (every
    channel the graph allows) or "bottleneck" (only the internal convs of residual blocks, as
    official ResRep prunes ResNet-50; see :mod:`histolean.methods.resrep.channels`). The model is
    deep-copied unless ``copy_model=False``. Raises :class:`UnprunableModelError` naming the
    module when an operation cannot be pruned through.
    """
    size = _size2(input_size)
    model = copy.deepcopy(model) if copy_model else model
    # random rather than zeros: the draw from the global generator is part of the study's seeded sequence
    example = probe_input(model, size, in_channels, random=True)
    device, dtype = example.device, example.dtype
    graph = analyse(model, example, exclude=exclude, scope=scope)
    gm = graph.graph_module
    nodes = {n.name: n for n in gm.graph.nodes}
    for layer in graph.prunable_layers():
        src = nodes[graph.source_node[layer.node]]
        name = f"{COMPACTOR_PREFIX}.{layer.name.replace('.', '_')}"
        gm.add_submodule(name, Compactor(layer.out_features).to(device=device, dtype=dtype))
        with gm.graph.inserting_after(src):
            comp_node = gm.graph.call_module(name, (src,))
        src.replace_all_uses_with(comp_node, delete_user_cb=lambda user, c=comp_node: user is not c)
        graph.node_labels[comp_node.name] = graph.node_labels[src.name]
    gm.recompile()
    gm.train(model.training)
    return ResRepNet(graph, size, in_channels)
