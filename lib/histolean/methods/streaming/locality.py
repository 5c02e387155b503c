"""Which layers a streamed trunk may hold, and its geometry derived from them by tracing.

A layer is local when each output position depends on a bounded neighbourhood of its input:
convolutions, pooling, pointwise operations (:mod:`histolean.core.fxops`), frozen BatchNorm.
Anything else raises :class:`NonLocalLayerError` naming the layer and why.
"""

from __future__ import annotations

import operator
from typing import Sequence

import torch
import torch.fx
from torch import nn

from histolean.core import fxops
from histolean.core.models import FrozenBatchNorm2d
from .geometry import Axis, Geometry, NonLocalLayerError, _pair, _Window


_DROPOUT = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)
_WHY_NOT_LOCAL = {
    nn.Linear: "a fully connected layer mixes every position",
    nn.Flatten: "flattening mixes every position",
    nn.Upsample: "upsampling changes the tile grid",
    nn.ConvTranspose2d: "a transposed convolution upsamples",
    nn.AdaptiveAvgPool2d: "global/adaptive pooling reads the whole feature map",
    nn.AdaptiveMaxPool2d: "global/adaptive pooling reads the whole feature map",
    nn.GroupNorm: "it normalises with statistics of the whole feature map",
    nn.LayerNorm: "it normalises with statistics of the whole feature map",
    nn.InstanceNorm2d: "it normalises with statistics of the whole feature map",
    nn.LocalResponseNorm: "not supported by the tile geometry",
    nn.MultiheadAttention: "attention mixes every position",
}


def _layer_windows(name: str, m: nn.Module) -> tuple[_Window, _Window]:
    """Geometry of one torch layer along (h, w); raises for layers that are not local."""
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise NonLocalLayerError(f"layer {name!r} ({type(m).__name__}) uses padding_mode="
                                     f"{m.padding_mode!r}; streaming supports zero padding only")
        k, s, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
        if m.padding == "valid":
            p = (0, 0)
        elif m.padding == "same":
            p = tuple(d[i] * (k[i] - 1) // 2 for i in range(2))
            if any(d[i] * (k[i] - 1) % 2 for i in range(2)):
                raise NonLocalLayerError(f"layer {name!r}: padding='same' with an even kernel pads "
                                         f"asymmetrically; give explicit padding")
        else:
            p = _pair(m.padding)
        return tuple(_Window(k[i], s[i], p[i], d[i]) for i in range(2))  # type: ignore[return-value]
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(m.kernel_size)
        s = _pair(m.stride if m.stride is not None else m.kernel_size)
        p = _pair(m.padding)
        d = _pair(getattr(m, "dilation", 1))
        return tuple(_Window(k[i], s[i], p[i], d[i], bool(m.ceil_mode)) for i in range(2))  # type: ignore
    if fxops.is_pointwise_module(m) or isinstance(m, _DROPOUT + (nn.BatchNorm2d, FrozenBatchNorm2d)):
        return _Window(1, 1, 0), _Window(1, 1, 0)
    for kind, why in _WHY_NOT_LOCAL.items():
        if isinstance(m, kind):
            raise NonLocalLayerError(f"layer {name!r} ({type(m).__name__}) breaks locality: {why}. "
                                     f"Move it after the streamed trunk.")
    raise NonLocalLayerError(f"layer {name!r} ({type(m).__name__}) is not a known local layer "
                             f"(conv, pooling, pointwise activation, frozen BatchNorm2d); move it "
                             f"after the streamed trunk")


def _check_modes(trunk: nn.Module) -> None:
    """Layers that are local only in eval mode (checked on every forward: .train() can flip them)."""
    for name, m in trunk.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise NonLocalLayerError(
                f"layer {name!r} ({type(m).__name__}) is in training mode: it normalises with batch "
                f"statistics of the whole feature map, which a tile cannot see. Freeze it "
                f"(streaming.freeze_batchnorm(trunk)) or move it after the streamed trunk.")
        if isinstance(m, _DROPOUT) and m.training and m.p > 0:
            raise NonLocalLayerError(
                f"layer {name!r} ({type(m).__name__}) is active: its random mask would differ between "
                f"the streamed forward and the recomputation. Put it after the trunk or set p=0.")


_MERGE_FUNCS = {operator.add, operator.iadd, torch.add, operator.mul, torch.mul, operator.sub, torch.cat}
_MERGE_METHODS = {"add", "add_", "mul", "mul_", "sub"}


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, FrozenBatchNorm2d) or super().is_leaf_module(m, qualname)


def _trace(trunk: nn.Module) -> torch.fx.Graph:
    try:
        return _Tracer().trace(trunk)
    except Exception as err:  # noqa: BLE001 - fx raises many types
        raise NonLocalLayerError(
            f"could not trace the trunk ({type(trunk).__name__}) with torch.fx to derive its tile "
            f"geometry: {err}. Express it as nn.Sequential / modules without data-dependent "
            f"control flow.") from err


def _walk(graph: torch.fx.Graph, root: nn.Module, size: tuple[int, int] | None):
    """Propagate (Axis_h, Axis_w, spatial size) through the traced graph of ``root``."""
    modules = dict(root.named_modules())
    state: dict[torch.fx.Node, tuple[Axis, Axis, tuple[int, int] | None]] = {}
    result = None
    for node in graph.nodes:
        tensor_args = [a for a in node.all_input_nodes if a in state]
        if node.op == "placeholder":
            state[node] = (Axis(), Axis(), size)
        elif node.op == "call_module":
            ah, aw, hw = state[tensor_args[0]]
            wh, ww = _layer_windows(node.target, modules[node.target])
            new_hw = None if hw is None else (wh.out_len(hw[0]), ww.out_len(hw[1]))
            if new_hw is not None and min(new_hw) < 1:
                raise ValueError(f"layer {node.target!r}: input {hw} is too small, its output would "
                                 f"be {new_hw}")
            state[node] = (ah.then(wh.axis()), aw.then(ww.axis()), new_hw)
        elif node.op in ("call_function", "call_method"):
            what = node.target if node.op == "call_method" else getattr(node.target, "__name__", node.target)
            if node.op == "call_function" and node.target is torch.cat:
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
                if dim not in (1, -3):
                    raise NonLocalLayerError(f"{node.name}: torch.cat along dim {dim}; only channel "
                                             f"concatenation (dim=1) is local")
            local = fxops.is_pointwise_call(node.op, node.target) or \
                (node.op == "call_function" and node.target in _MERGE_FUNCS) or \
                (node.op == "call_method" and node.target in _MERGE_METHODS)
            if not local:
                raise NonLocalLayerError(f"operation {what!r} ({node.name}) inside the trunk is not "
                                         f"known to be local; use module layers, or move it after the trunk")
            ah, aw, hw = state[tensor_args[0]]
            for other in tensor_args[1:]:
                oh, ow, ohw = state[other]
                ah, aw = ah.merge(oh, node.name), aw.merge(ow, node.name)
            state[node] = (ah, aw, hw)
        elif node.op == "output":
            outs = node.all_input_nodes
            if len(outs) != 1:
                raise NonLocalLayerError("the trunk must return a single tensor")
            result = state[outs[0]]
        else:  # get_attr: a parameter used functionally
            raise NonLocalLayerError(f"{node.name}: the trunk reads attribute {node.target!r} directly; "
                                     f"use module layers")
    return result


def trunk_geometry(trunk: nn.Module | Sequence[nn.Module]) -> Geometry:
    """Analytic output stride, receptive field and padding of a local trunk."""
    trunk = trunk if isinstance(trunk, nn.Module) else nn.Sequential(*trunk)
    ah, aw, _ = _walk(_trace(trunk), trunk, None)
    return Geometry(ah, aw)
