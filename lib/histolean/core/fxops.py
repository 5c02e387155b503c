"""One table of the torch operations that act value by value, shared by the graph passes of
:mod:`histolean.methods.streaming` and :mod:`histolean.methods.resrep` (a leaf: imports only torch).

*Pointwise* here means: the output at (image, channel, row, column) depends only on the input at
the same (image, channel, row, column) - activations, clamps, signs. Both users need exactly that:

* streaming needs every layer to be spatially local; a pointwise op needs no context, so a
  tile computes it exactly;
* ResRep needs channel-local ops, so a removed channel stays one channel; whether it stays
  *zero* (or becomes a constant that conversion folds into the next layer's bias) depends on
  the op and its arguments, which :func:`maps_zero_to_zero` evaluates (``softplus(0) = log 2``,
  ``clamp(0, min=1) = 1``, ``elu(0) = 0``).

Decisions per op, checked numerically in ``tests/test_fxops.py``:

* ELU, CELU, SELU, GELU, SiLU, Mish, Softplus, Hardswish, Hardsigmoid, Hardtanh, ReLU(6),
  LeakyReLU, Sigmoid, Tanh, LogSigmoid, Softsign, Tanhshrink, Hard/Softshrink, Threshold,
  ``torch.clamp``/``clip``, ``abs``, ``neg``: pointwise - streamable and channel-local.
* PReLU: pointwise (its slope is per channel, not per position) - streamable; ResRep accepts
  it only with one shared slope, since conversion does not slice per-channel parameters.
* RReLU and dropout: pointwise but *random* in training - not in the table. Streaming refuses
  them while active (a tile's forward and its recomputation would draw different masks);
  ResRep passes dropout through (a zero stays zero) on its own.
* :data:`VALUE_PRESERVING_FUNCTIONS` / ``_METHODS`` (clone, contiguous, dtype casts): the
  identity on values, so also pointwise and zero-preserving.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.LogSigmoid, nn.Softsign,
    nn.Tanhshrink, nn.Hardshrink, nn.Softshrink, nn.Threshold,
)
POINTWISE_FUNCTIONS = frozenset({
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.celu, F.selu, torch.selu, F.gelu, F.silu, F.mish,
    F.softplus, F.hardswish, F.hardsigmoid, F.hardtanh, F.logsigmoid, F.softsign, F.tanhshrink, F.hardshrink,
    F.softshrink, F.threshold, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, torch.clamp, torch.clip, torch.abs,
    torch.neg,
})
POINTWISE_METHODS = frozenset({
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "clip_", "abs", "abs_",
    "neg", "neg_",
})
VALUE_PRESERVING_FUNCTIONS = frozenset({torch.clone})
VALUE_PRESERVING_METHODS = frozenset({"contiguous", "clone", "float", "double", "half", "bfloat16", "to"})


def is_pointwise_module(module: nn.Module) -> bool:
    """A module that acts value by value (see the module docstring); nn.Identity counts."""
    return isinstance(module, POINTWISE_MODULES + (nn.Identity,))


def is_pointwise_call(op: str, target) -> bool:
    """An fx ``call_function`` / ``call_method`` node target that acts value by value (value-preserving ones too)."""
    if op == "call_function":
        return target in POINTWISE_FUNCTIONS or target in VALUE_PRESERVING_FUNCTIONS
    if op == "call_method":
        return target in POINTWISE_METHODS or target in VALUE_PRESERVING_METHODS
    return False


def maps_zero_to_zero(fn, *args, **kwargs) -> bool:
    """Whether ``fn(0, *args, **kwargs) == 0`` (a module, a function or an unbound Tensor method)."""
    with torch.no_grad():
        return bool(torch.all(fn(torch.zeros(1, 1, 1, 1), *args, **kwargs) == 0))
