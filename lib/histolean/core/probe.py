"""What one training step holds: the activations a forward pass keeps, its largest tensor, the parameters.

The dry run (:mod:`histolean.util.dryrun`) measures the first step of every training with
:func:`activations` and logs it with :func:`step_facts`; :func:`gpu_estimate` turns that into the
memory a GPU would need at the same batch, and the batch size that fits a card.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

GIB = 2**30
# weights, their gradients and Adam's two moments: four copies of the parameters
OPTIMIZER_COPIES = 4
CARDS_GIB = (16, 80)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


@contextlib.contextmanager
def activations(model: nn.Module):
    """Within the block, every leaf module's outputs are counted: yields a dict that fills with
    ``activation_bytes`` (their sum: what backward keeps, roughly), ``largest_tensor_bytes`` and
    ``largest_tensor_shape``."""
    seen = {"activation_bytes": 0, "largest_tensor_bytes": 0, "largest_tensor_shape": []}

    def hook(_module, _inputs, output):
        for t in _tensors(output):
            size = t.numel() * t.element_size()
            seen["activation_bytes"] += size
            if size > seen["largest_tensor_bytes"]:
                seen["largest_tensor_bytes"], seen["largest_tensor_shape"] = size, list(t.shape)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def gpu_estimate(activation_bytes: float, batch: int, param_bytes: float) -> dict:
    """GPU memory of a training step at ``batch`` (the measured activations scale with the batch; four
    copies of the parameters for weights, gradients and Adam), and for each card of :data:`CARDS_GIB` that
    would not hold it, the largest batch that would (0: not even one sample)."""
    per_sample = activation_bytes / max(batch, 1)
    fixed = OPTIMIZER_COPIES * param_bytes
    need = fixed + per_sample * batch
    out = {"gpu_gib": need / GIB, "fits": {}}
    for card in CARDS_GIB:
        if need <= card * GIB:
            out["fits"][card] = batch
        else:
            out["fits"][card] = max(0, math.floor((card * GIB - fixed) / per_sample)) if per_sample else 0
    return out
