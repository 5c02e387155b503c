"""Streaming SGD (Pinckaers, van Ginneken & Litjens 2020): train a CNN on images
far larger than memory while holding the activations of only one tile.

``StreamingTrunk(layers, tile_size)`` wraps the local, convolutional first part
of a network. Its forward pass assembles the trunk's output tile by tile under
``no_grad``; its backward pass recomputes each tile with gradients enabled
(gradient checkpointing), feeds it its slice of the output gradient and sums
the weight and input gradients. A plain ``loss.backward()`` through the head
that follows therefore gives the same gradients as the unstreamed network.

How the tiles are cut (the geometry). Along each axis, output index ``j`` of a
chain of local layers reads the input interval
``[j * stride - pad, j * stride - pad + field - 1]`` (composition of every
layer's kernel, stride, padding and dilation; branches are merged by taking the
union of their intervals). The output is cut into tiles of ``tile_size //
stride`` positions; each tile's input *crop* is that interval, widened on the
left to a multiple of the output stride so that every strided layer samples the
same grid as on the full image, and clipped to the image. Output positions
whose interval lies inside the crop are exact; so are those at the image
border, where the layers' zero padding is the real one. Tiles that share
context overlap only in the input, never in the output, so summing the tiles'
gradients is exact, not an approximation.
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .models import FrozenBatchNorm2d, freeze_batchnorm  # noqa: F401  (re-exported: part of the streaming API)

__all__ = [
    "Axis", "Geometry", "Tile", "StreamingTrunk", "NonLocalLayerError",
    "trunk_geometry", "tile_grid", "probe_geometry", "probe_border_effect",
    "freeze_batchnorm", "FrozenBatchNorm2d", "imagenette_network", "check_equivalence", "training_step",
    "patch_mosaics", "saliency", "saliency_overlay",
]


class NonLocalLayerError(ValueError):
    """A layer in the streamed trunk needs more than a local neighbourhood of its input."""


# ---------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Axis:
    """Along one axis, output ``j`` reads input ``[j*stride - pad, j*stride - pad + field - 1]``."""

    stride: int = 1
    pad: int = 0
    field: int = 1

    def then(self, nxt: Axis) -> Axis:
        """This mapping followed by ``nxt``."""
        return Axis(self.stride * nxt.stride, nxt.pad * self.stride + self.pad,
                    (nxt.field - 1) * self.stride + self.field)

    def merge(self, other: Axis, where: str) -> Axis:
        """Two branches that are added or concatenated: the union of their input intervals."""
        if self.stride != other.stride:
            raise NonLocalLayerError(f"{where}: merges branches with output strides {self.stride} and "
                                     f"{other.stride}; streaming needs equal strides on every branch")
        pad = max(self.pad, other.pad)
        right = max(self.field - self.pad, other.field - other.pad)
        return Axis(self.stride, pad, pad + right)

    @property
    def overlap(self) -> tuple[int, int]:
        """Input context a tile needs beyond its own ``stride``-aligned span, (before, after)."""
        return self.pad, max(0, self.field - self.stride - self.pad)


@dataclass(frozen=True)
class Geometry:
    """Receptive-field geometry of a trunk along height and width."""

    h: Axis
    w: Axis

    @property
    def output_stride(self) -> tuple[int, int]:
        return self.h.stride, self.w.stride

    @property
    def receptive_field(self) -> tuple[int, int]:
        return self.h.field, self.w.field


@dataclass(frozen=True)
class _Window:
    """One sliding-window layer along one axis, as torch defines it."""

    kernel: int
    stride: int
    pad: int
    dilation: int = 1
    ceil_mode: bool = False

    def axis(self) -> Axis:
        return Axis(self.stride, self.pad, self.dilation * (self.kernel - 1) + 1)

    def out_len(self, n: int) -> int:
        span = n + 2 * self.pad - self.dilation * (self.kernel - 1) - 1
        if not self.ceil_mode:
            return span // self.stride + 1
        out = -(-span // self.stride) + 1
        if (out - 1) * self.stride >= n + self.pad:  # torch: the last window must start inside
            out -= 1
        return out


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


_POINTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity,
)
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
    if isinstance(m, _POINTWISE + _DROPOUT + (nn.BatchNorm2d, FrozenBatchNorm2d)):
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


_ELEMENTWISE_FUNCS = {F.relu, torch.relu, torch.sigmoid, torch.tanh, F.gelu, F.silu, F.leaky_relu,
                      F.hardtanh, F.relu6, torch.clone}
_MERGE_FUNCS = {operator.add, operator.iadd, torch.add, operator.mul, torch.mul, operator.sub, torch.cat}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "float", "double",
                        "half", "to"}
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
            local = (node.op == "call_function" and node.target in _ELEMENTWISE_FUNCS | _MERGE_FUNCS) or \
                    (node.op == "call_method" and node.target in _ELEMENTWISE_METHODS | _MERGE_METHODS)
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


# ------------------------------------------------------------------ tiling


@dataclass(frozen=True)
class Tile:
    """One streaming step: ``out`` region of the trunk output, computed from the ``crop``
    region of the input; ``keep`` is where ``out`` sits inside the crop's own output."""

    out: tuple[slice, slice]
    crop: tuple[slice, slice]
    keep: tuple[slice, slice]


def _axis_tiles(axis: Axis, n_in: int, n_out: int, tile: int) -> list[tuple[slice, slice, slice]]:
    per_tile = tile // axis.stride
    left = axis.stride * math.ceil(axis.pad / axis.stride)  # context, widened to the stride grid
    spans = []
    for j0 in range(0, n_out, per_tile):
        j1 = min(j0 + per_tile, n_out)
        start = max(0, j0 * axis.stride - left)
        stop = n_in if j1 == n_out else min(n_in, (j1 - 1) * axis.stride - axis.pad + axis.field)
        first = j0 - start // axis.stride
        spans.append((slice(j0, j1), slice(start, stop), slice(first, first + j1 - j0)))
    return spans


def tile_grid(geometry: Geometry, in_hw: tuple[int, int], out_hw: tuple[int, int], tile_size: int) -> list[Tile]:
    """The tiles that cover the output exactly once, row by row."""
    for axis, name in ((geometry.h, "height"), (geometry.w, "width")):
        if tile_size < axis.stride or tile_size % axis.stride:
            raise ValueError(f"tile_size={tile_size} must be a positive multiple of the trunk's output "
                             f"stride along {name} ({axis.stride}), e.g. "
                             f"{max(axis.stride, tile_size // axis.stride * axis.stride)}")
    rows = _axis_tiles(geometry.h, in_hw[0], out_hw[0], tile_size)
    cols = _axis_tiles(geometry.w, in_hw[1], out_hw[1], tile_size)
    return [Tile((ro, co), (rc, cc), (rk, ck)) for ro, rc, rk in rows for co, cc, ck in cols]


# --------------------------------------------------------- streaming autograd


class _Stream(torch.autograd.Function):
    """Output assembled tile by tile without a graph; backward recomputes each tile."""

    @staticmethod
    def forward(ctx, streamer: StreamingTrunk, x: torch.Tensor, *params: torch.Tensor):
        ctx.streamer = streamer
        ctx.save_for_backward(x)
        return streamer._assemble(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad_x, grad_params = ctx.streamer._backward_tiles(
            x, grad_out, ctx.needs_input_grad[1], ctx.needs_input_grad[2:])
        return (None, grad_x, *grad_params)


class StreamingTrunk(nn.Module):
    """Behaves like ``layers`` under autograd, with the memory of one tile.

    ``tile_size``: side, in input pixels, of the stride-aligned part of the image a
    step is responsible for; the crop actually processed adds the receptive-field
    context on each side (``crop_size``). ``mixed_precision``: autocast tiles on CUDA
    (no-op on CPU). ``skip_zero_gradient_tiles``: skip the recomputation of tiles whose
    output gradient is exactly zero (exact; a global max-pool head leaves most tiles at
    zero). Batches are streamed one image at a time and accumulated.

    Results equal the conventional ones up to floating-point rounding. One consequence:
    where a max pool sees an exact tie (flat regions of 8-bit images), rounding can pick
    a different, equally valid element, moving that input gradient to a neighbour pixel.
    """

    def __init__(self, layers: nn.Module | Sequence[nn.Module], tile_size: int, *,
                 mixed_precision: bool = True, skip_zero_gradient_tiles: bool = True):
        super().__init__()
        self.layers = layers if isinstance(layers, nn.Module) else nn.Sequential(*layers)
        if not isinstance(tile_size, int) or tile_size < 1:
            raise ValueError(f"tile_size must be a positive int, got {tile_size!r}")
        self.tile_size = tile_size
        self.mixed_precision = mixed_precision
        self.skip_zero_gradient_tiles = skip_zero_gradient_tiles
        # the traced graph is kept outside nn.Module bookkeeping (no duplicate parameters)
        object.__setattr__(self, "_graph", _trace(self.layers))
        ah, aw, _ = _walk(self._graph, self.layers, None)  # rejects non-local layers now, not mid-training
        self.geometry = Geometry(ah, aw)
        tile_grid(self.geometry, (tile_size, tile_size), (1, 1), tile_size)  # validates tile_size
        self.tiles_processed = 0  # tile computations (forward + recomputation), for benchmarks

    @property
    def crop_size(self) -> tuple[int, int]:
        """Largest input crop a step processes (tile plus context), per axis."""
        out = []
        for a in (self.geometry.h, self.geometry.w):
            left = a.stride * math.ceil(a.pad / a.stride)
            out.append(left + self.tile_size - a.stride - a.pad + a.field)
        return out[0], out[1]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        _, _, hw = _walk(self._graph, self.layers, (height, width))
        return hw

    def tiles(self, height: int, width: int) -> list[Tile]:
        return tile_grid(self.geometry, (height, width), self.output_size(height, width), self.tile_size)

    def extra_repr(self) -> str:
        return (f"tile_size={self.tile_size}, output_stride={self.geometry.output_stride}, "
                f"receptive_field={self.geometry.receptive_field}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"StreamingTrunk expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        _check_modes(self.layers)
        params = [p for p in self.layers.parameters() if p.requires_grad]
        if torch.is_grad_enabled() and (x.requires_grad or params):
            return _Stream.apply(self, x, *params)
        with torch.no_grad():
            return self._assemble(x)

    def _autocast(self, x: torch.Tensor):
        return torch.autocast("cuda", enabled=self.mixed_precision and x.is_cuda)

    def _assemble(self, x: torch.Tensor) -> torch.Tensor:
        tiles = self.tiles(x.shape[2], x.shape[3])
        out = None
        for b in range(x.shape[0]):
            for t in tiles:
                with self._autocast(x):
                    y = self.layers(x[b:b + 1, :, t.crop[0], t.crop[1]])
                self.tiles_processed += 1
                if out is None:  # in the input's dtype: tiles may run in float16 under autocast
                    h, w = self.output_size(x.shape[2], x.shape[3])
                    out = y.new_empty((x.shape[0], y.shape[1], h, w), dtype=x.dtype)
                out[b:b + 1, :, t.out[0], t.out[1]] = y[:, :, t.keep[0], t.keep[1]]
        return out

    def _backward_tiles(self, x, grad_out, need_x: bool, need_params: Sequence[bool]):
        params = [p for p in self.layers.parameters() if p.requires_grad]
        wanted = [p for p, need in zip(params, need_params) if need]
        grad_x = torch.zeros_like(x) if need_x else None
        sums = [torch.zeros_like(p) for p in wanted]
        for b in range(x.shape[0]):
            for t in self.tiles(x.shape[2], x.shape[3]):
                g = grad_out[b:b + 1, :, t.out[0], t.out[1]]
                if self.skip_zero_gradient_tiles and not torch.any(g):
                    continue
                with torch.enable_grad():
                    crop = x[b:b + 1, :, t.crop[0], t.crop[1]].detach().requires_grad_(need_x)
                    with self._autocast(x):
                        y = self.layers(crop)[:, :, t.keep[0], t.keep[1]]
                    inputs = ([crop] if need_x else []) + wanted
                    grads = torch.autograd.grad(y, inputs, g.to(y.dtype), allow_unused=True)
                self.tiles_processed += 1
                if need_x:
                    grad_x[b:b + 1, :, t.crop[0], t.crop[1]] += grads[0]
                    grads = grads[1:]
                for acc, gr in zip(sums, grads):
                    if gr is not None:
                        acc += gr
        it = iter(sums)
        return grad_x, [next(it) if need else None for need in need_params]


# --------------------------------------------------- the paper's probing method


def _probe_copy(trunk: nn.Module) -> nn.Module:
    """Copy whose every output is a positive average of its inputs (paper, Section 3.3).

    Convolutions get weights 1/n and no bias; max pools become average pools of the
    same geometry counting the padding (a max of ones would hide the padding);
    frozen BatchNorm becomes the identity.
    """
    probe = copy.deepcopy(trunk).double().eval()
    for name, m in list(probe.named_modules()):
        if isinstance(m, nn.Conv2d):
            with torch.no_grad():
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            _replace(probe, name, nn.Identity())
        elif isinstance(m, nn.MaxPool2d):
            if _pair(m.dilation) != (1, 1):
                raise NonLocalLayerError(f"layer {name!r}: the probe cannot mimic a dilated max pool")
            _replace(probe, name, nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                               count_include_pad=True))
    return probe


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def probe_border_effect(trunk: nn.Module, tile_size: int, in_channels: int = 3) -> dict[str, int]:
    """The paper's forward probe: pass an all-ones tile through the averaging copy and count,
    per side, the output rows/columns that fall short of the interior maximum (border effect)."""
    probe = _probe_copy(trunk)
    with torch.no_grad():
        y = probe(torch.ones(1, in_channels, tile_size, tile_size, dtype=torch.float64))[0].amin(0)
    full = y.max()
    bad = (y < full * (1 - 1e-9))
    rows, cols = bad[:, bad.shape[1] // 2].tolist(), bad[bad.shape[0] // 2, :].tolist()

    def run(flags: list[bool]) -> int:
        n = 0
        for f in flags:
            if not f:
                break
            n += 1
        return n

    return {"top": run(rows), "bottom": run(rows[::-1]), "left": run(cols), "right": run(cols[::-1]),
            "out_h": y.shape[0], "out_w": y.shape[1]}


def probe_geometry(trunk: nn.Module, size: int = 256, in_channels: int = 3) -> Geometry:
    """Stride, padding and receptive field measured by backpropagation (the paper's backward
    probe): the input support of the gradient of single output units of the averaging copy."""
    probe = _probe_copy(trunk)
    x = torch.ones(1, in_channels, size, size, dtype=torch.float64, requires_grad=True)
    y = probe(x)
    ch, cw = y.shape[2] // 2, y.shape[3] // 2

    def support(i: int, j: int) -> tuple[tuple[int, int], tuple[int, int]]:
        (g,) = torch.autograd.grad(y[0, :, i, j].sum(), x, retain_graph=True)
        nz = g[0].abs().sum(0) > 0
        r = torch.nonzero(nz.any(1)).flatten()
        c = torch.nonzero(nz.any(0)).flatten()
        return (int(r[0]), int(r[-1])), (int(c[0]), int(c[-1]))

    (r0, r1), (c0, c1) = support(ch, cw)
    (r0n, _), (c0n, _) = support(ch + 1, cw + 1)
    if r0 == 0 or c0 == 0 or r1 == size - 1 or c1 == size - 1:
        raise ValueError(f"probe size {size} is too small for this trunk's receptive field; use a larger size")
    sh, sw = r0n - r0, c0n - c0
    return Geometry(Axis(sh, ch * sh - r0, r1 - r0 + 1), Axis(sw, cw * sw - c0, c1 - c0 + 1))


# ----------------------------------------------------------------- helpers


def imagenette_network(num_classes: int = 10, channels: Iterable[int] = (16, 32, 64, 128, 256),
                       streamed_blocks: int = 4, in_channels: int = 3) -> tuple[nn.Sequential, nn.Sequential]:
    """The paper's ImageNette network (Table 1), split into (trunk, head).

    Five blocks of 3x3 convolution (+ReLU) and 2x2 max pool; the last 10x10 max pool of
    the paper (global at its 320-px input) is a global max pool here so that any image size
    works; then a fully connected layer. The first ``streamed_blocks`` blocks form the trunk.
    """
    channels = list(channels)
    if len(channels) != 5 or not 0 <= streamed_blocks <= 5:
        raise ValueError("imagenette_network needs 5 channel counts and 0..5 streamed blocks")
    blocks, c_in = [], in_channels
    for i, c in enumerate(channels):
        conv = nn.Conv2d(c_in, c, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")  # He et al. 2015, as the paper
        nn.init.zeros_(conv.bias)
        pool = nn.MaxPool2d(2) if i < 4 else nn.AdaptiveMaxPool2d(1)
        blocks.append([conv, nn.ReLU(), pool])
        c_in = c
    trunk = nn.Sequential(*[m for blk in blocks[:streamed_blocks] for m in blk])
    head = nn.Sequential(*[m for blk in blocks[streamed_blocks:] for m in blk])
    if streamed_blocks == 5:
        trunk = nn.Sequential(*list(trunk)[:-1])  # the global pool always runs conventionally
        head = nn.Sequential(nn.AdaptiveMaxPool2d(1))
    head.append(nn.Flatten())
    head.append(nn.Linear(channels[-1], num_classes))
    return trunk, head


def check_equivalence(trunk: nn.Module, head: nn.Module, x: torch.Tensor, target: torch.Tensor,
                      tile_size: int) -> dict[str, float]:
    """Streamed vs conventional: max absolute and relative differences of the trunk output,
    the input gradient and the weight gradients (trunk and head) of a cross-entropy loss."""
    results = {}
    for mode in ("conventional", "streaming"):
        model_trunk = StreamingTrunk(trunk, tile_size) if mode == "streaming" else trunk
        trunk.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        xi = x.detach().clone().requires_grad_(True)
        feats = model_trunk(xi)
        loss = F.cross_entropy(head(feats), target)
        loss.backward()
        grads = [p.grad.detach().clone() for p in list(trunk.parameters()) + list(head.parameters())]
        results[mode] = (feats.detach(), xi.grad.detach(), grads, loss.detach())
    (f0, gx0, gw0, l0), (f1, gx1, gw1, l1) = results["conventional"], results["streaming"]

    def diffs(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        abs_diff = float((a - b).abs().max())
        return abs_diff, abs_diff / max(float(a.abs().max()), 1e-300)

    out = {}
    out["output_abs"], out["output_rel"] = diffs(f0, f1)
    out["input_grad_abs"], out["input_grad_rel"] = diffs(gx0, gx1)
    per_weight = [diffs(a, b) for a, b in zip(gw0, gw1)]
    out["weight_grad_abs"] = max(d[0] for d in per_weight)
    out["weight_grad_rel"] = max(d[1] for d in per_weight)
    out["loss_abs"] = abs(float(l0 - l1))
    return out


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


def saliency(model: nn.Module, x: torch.Tensor, target_class: int = 1) -> np.ndarray:
    """Saliency map (Simonyan et al. 2013): |d logit / d input|, max over colour channels,
    computed through the streaming backward (input gradients only)."""
    was_training = model.training
    model.eval()
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        x = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x)[:, target_class].sum(), x)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return g.abs().amax(1).cpu().numpy()


def saliency_overlay(saliency_map: np.ndarray, sigma: float) -> np.ndarray:
    """The paper's display: Gaussian blur, cap at the 99th percentile, keep the upper half
    (values under the median are NaN, i.e. transparent), scaled to [0, 1]."""
    from scipy.ndimage import gaussian_filter

    s = gaussian_filter(np.asarray(saliency_map, dtype=np.float64), sigma)
    s = np.minimum(s, np.percentile(s, 99))
    lo, hi = np.percentile(s, 50), s.max()
    out = (s - lo) / max(hi - lo, 1e-12)
    out[s < lo] = np.nan
    return out


def training_step(image_size: int, tile_size: int | None, *, channels: Sequence[int] = (8, 16, 32, 64, 128),
                  batch: int = 1, device: str = "cpu", seed: int = 0,
                  skip_zero_gradient_tiles: bool = False) -> Callable[[], float]:
    """Workload for memory/time benchmarks: one SGD step of the ImageNette network with all
    five conv blocks streamed (``tile_size``) or conventional (``tile_size=None``) on a
    random ``image_size``^2 image. Model, image and optimiser are allocated here, before
    the step, so a benchmark can measure the step alone."""
    torch.manual_seed(seed)
    trunk, head = imagenette_network(2, channels, streamed_blocks=5)
    body = StreamingTrunk(trunk, tile_size, skip_zero_gradient_tiles=skip_zero_gradient_tiles) \
        if tile_size else trunk
    model = nn.Sequential(body, head).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.rand(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, 2, (batch,), device=device)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step
