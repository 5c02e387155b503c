"""Forgetting: fold BN and compactors into the convolutions and physically drop removed channels.

Which channels are removed (``convert(net, mode=...)``):

* ``"collapsed"`` (default, Ding et al.'s conversion): the channels whose compactor rows have
  collapsed, i.e. every tied row has an L2 norm below ``threshold`` (1e-5). Exact up to that
  norm, whatever the mask says.
* ``"epsilon"`` (``convert(net, epsilon=0.9)``): the NAR paper's epsilon read as a threshold on
  the compactor row norm (mean over tied rows): every channel with ``||F|| < epsilon`` goes. Our
  reading of the paper; its range 0.82-0.94 fits, because under Adam + StepLR masked rows level
  off near 0.7 instead of collapsing. Not exact: removed rows still carried signal.
* ``"mask"``: the masked channels whatever their norm (what a short run needs to reach the
  FLOPs target before the rows have collapsed). Exact only once the masked rows are zero.

Every conversion comes with a :class:`ConversionReport`: the largest norm among removed rows,
the largest output difference between the compactor network and the converted one on a batch
(eval mode), and ``exact``; an :class:`InexactConversionWarning` is issued when the difference
is above the tolerance.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import fx, nn

from . import channels as ch
from .compactor import COMPACTOR_PREFIX, ResRepNet


MODES = ("collapsed", "epsilon", "mask")
COLLAPSED_NORM = 1e-5   # Ding et al.: a compactor row below this norm has collapsed
TOLERANCE = 1e-3        # default bound on max |output difference| / max(1, max |output|)


class InexactConversionWarning(UserWarning):
    """The converted network's outputs differ from the compactor network's by more than the tolerance."""


@dataclass
class ConversionReport:
    """How far a conversion is from exact; ``as_dict()`` gives plain values for result rows."""

    mode: str                   # "collapsed" | "epsilon" | "mask"
    threshold: float | None     # the row-norm threshold (collapsed: 1e-5, epsilon: epsilon); None for mask
    removed_classes: int        # pruning units removed (tied channels count once)
    removed_channels: int       # output channels removed over all layers
    max_removed_norm: float     # largest compactor row norm among the removed rows (0.0: none removed)
    max_output_diff: float      # max |compactor net(x) - converted(x)| on the check batch, eval mode
    output_scale: float         # max |compactor net(x)|
    tolerance: float            # exact <=> max_output_diff <= tolerance * max(1, output_scale)
    exact: bool
    batch: str                  # what x was, e.g. "4 random normal inputs"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ConvertedNetwork:
    """The plain, smaller network and its width table (its spec as far as FLOPs are concerned)."""

    module: nn.Module                       # an fx.GraphModule: no compactors, no fused BNs
    widths: dict[str, tuple[int, int]]      # layer -> (input features, output channels) after pruning
    original_widths: dict[str, tuple[int, int]]
    predicted_flops: int                    # the papers' formula from the mask; histolean.core.flops agrees
    original_flops: int
    removed_channels: int                   # output channels removed over all layers (tied ones counted per layer)
    input_size: tuple[int, int]
    epsilon: float | None = None
    mode: str = "collapsed"
    report: ConversionReport | None = None

    @property
    def flops_ratio(self) -> float:
        return self.predicted_flops / self.original_flops


def _mode(mode: str | None, epsilon: float | None) -> str:
    mode = mode or ("epsilon" if epsilon is not None else "collapsed")
    if mode not in MODES:
        raise ValueError(f"conversion mode must be one of {MODES}, got {mode!r}")
    if (mode == "epsilon") != (epsilon is not None):
        raise ValueError(f"epsilon={epsilon!r} goes with mode='epsilon' only (got mode={mode!r})")
    return mode


def removed_classes(net: ResRepNet, epsilon: float | None = None, min_channels: int = 1, *,
                    mode: str | None = None, threshold: float = COLLAPSED_NORM) -> np.ndarray:
    """Classes that conversion removes (see the module docstring for the modes).

    ``mode="collapsed"`` (default): every class whose rows all have a norm below ``threshold``.
    ``epsilon=<float>``: the NAR paper's threshold, i.e. every class whose compactor row norm
    (mean over tied rows) is below ``epsilon`` - rows start at norm 1, so 0.9 removes the
    channels that lost more than 10 % of it. ``mode="mask"``: the masked classes. Threshold
    modes keep ``min_channels`` per conv.
    """
    mode = _mode(mode, epsilon)
    if mode == "mask":
        return net.dropped_classes()
    if mode == "epsilon":
        return net.flops_model.select(net.class_scores(), below=float(epsilon), min_channels=min_channels)
    return net.flops_model.select(net.class_max_norms(), below=float(threshold), min_channels=min_channels)


@torch.no_grad()
def convert(net: ResRepNet, epsilon: float | None = None, min_channels: int = 1, *, mode: str | None = None,
            threshold: float = COLLAPSED_NORM, batch: torch.Tensor | None = None, tolerance: float = TOLERANCE,
            warn: bool = True) -> ConvertedNetwork:
    """Return the plain network without the removed channels, and a report on how exact it is.

    ``mode``: "collapsed" (default; rows with norm < ``threshold``), "epsilon" (implied by
    ``epsilon=``) or "mask" (see the module docstring). BN is fused into its conv, the compactor
    folded in, removed output channels dropped from the conv and removed input channels from
    every consumer (conv, depthwise conv, BN, linear); where a removed channel reaches a
    consumer as a non-zero constant (after a pre-activation BN), that constant is folded into
    the consumer's bias. In eval mode the result equals the compactor network whose removed
    compactor rows are zero. ``result.report`` compares both networks on ``batch`` (default:
    4 seeded random normal inputs) and, with ``warn``, warns when they differ by more than
    ``tolerance`` (relative to max(1, max |output|)).
    """
    mode = _mode(mode, epsilon)
    graph = net.channels
    dropped = removed_classes(net, epsilon, min_channels, mode=mode, threshold=threshold)
    gm = _copy_structure(net.net).eval()
    nodes = {n.name: n for n in gm.graph.nodes}
    values = _removed_channel_values(gm, graph)
    pruned = {layer.node for layer in net.pruned_layers}
    fused_bn_nodes = {layer.bn_node for layer in net.pruned_layers if layer.bn_node}
    n_in, n_out = net.flops_model.counts(dropped)
    widths, original, removed = {}, {}, 0
    for i, layer in enumerate(graph.layers):
        node = nodes[layer.node]
        src = node.args[0]
        keep_in = torch.as_tensor(graph.kept_features(layer.in_labels, dropped))
        const_in = values[src.name]
        old = gm.get_submodule(layer.name)
        if layer.kind == "linear":
            new = _linear(old, keep_in, const_in)
        elif layer.depthwise:
            new = _depthwise(old, keep_in)
        elif layer.groups > 1:  # grouped convs and their inputs are never pruned
            new = copy.deepcopy(net.net.get_submodule(layer.name))
        else:
            comp = gm.get_submodule(net.compactor_names[layer.node]) if layer.node in pruned else None
            bn = gm.get_submodule(layer.bn) if layer.node in pruned and layer.bn else None
            keep_out = torch.ones(layer.out_features, dtype=torch.bool)
            if comp is not None:
                keep_out = torch.as_tensor(~dropped[graph.slot_class[layer.out_slots]])
            new = _conv(old, keep_in, const_in, bn, comp, keep_out)
        _set_module(gm, layer.name, new)
        original[layer.name] = (int(net.flops_model.in_full[i]), int(net.flops_model.out_full[i]))
        widths[layer.name] = (int(n_in[i]), int(n_out[i]))
        removed += original[layer.name][1] - widths[layer.name][1]
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        if node.name in fused_bn_nodes or node.target.startswith(COMPACTOR_PREFIX + "."):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
        elif isinstance(gm.get_submodule(node.target), nn.BatchNorm2d):
            keep = torch.as_tensor(graph.kept_features(graph.node_labels[node.args[0].name], dropped))
            _set_module(gm, node.target, _batchnorm(gm.get_submodule(node.target), keep))
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    result = ConvertedNetwork(gm, widths, original, net.flops_model.total(dropped), net.original_flops,
                              removed, net.input_size, epsilon, mode)
    threshold_used = {"collapsed": float(threshold), "epsilon": epsilon, "mask": None}[mode]
    result.report = _report(net, result, dropped, threshold_used, batch, tolerance)
    if warn and not result.report.exact:
        r = result.report
        warnings.warn(InexactConversionWarning(
            f"ResRep conversion (mode {mode!r}) is not exact: removed compactor rows had norms up to "
            f"{r.max_removed_norm:.3g}, outputs differ by up to {r.max_output_diff:.3g} (largest output "
            f"{r.output_scale:.3g}, tolerance {tolerance:g}) on {r.batch}"),
            stacklevel=3)  # 3: past torch.no_grad's wrapper
    return result


def _report(net: ResRepNet, result: ConvertedNetwork, dropped: np.ndarray, threshold, batch, tolerance: float
            ) -> ConversionReport:
    """Largest removed row norm and output difference of the two networks (eval mode) on ``batch``."""
    norms = [comp.row_norms().cpu()[torch.as_tensor(dropped[net.channels.slot_class[layer.out_slots]])]
             for layer, comp in net.compactors()]
    removed_norms = torch.cat(norms) if norms else torch.zeros(0)
    ref = next(net.parameters())
    if batch is None:  # a private generator: conversion must not move the global random state
        g = torch.Generator().manual_seed(0)
        batch = torch.randn(4, net.in_channels, *net.input_size, generator=g)
        what = f"4 random normal inputs of {net.input_size[0]}x{net.input_size[1]} px"
    else:
        what = f"the given batch of shape {tuple(batch.shape)}"
    batch = batch.to(device=ref.device, dtype=ref.dtype)
    was_training = net.training
    try:
        expected = net.eval()(batch).double()
        got = result.module.eval()(batch).double()
    finally:
        net.train(was_training)
    diff = float((got - expected).abs().max())
    scale = float(expected.abs().max())
    return ConversionReport(result.mode, threshold, int(dropped.sum()), result.removed_channels,
                            float(removed_norms.max()) if len(removed_norms) else 0.0, diff, scale, float(tolerance),
                            diff <= tolerance * max(1.0, scale), what)


def _set_module(gm: fx.GraphModule, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, module)


def _copy_structure(gm: fx.GraphModule) -> fx.GraphModule:
    """Deep copy without copying the tensors of the layers conversion rebuilds anyway (they are large)."""
    rebuilt = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
    memo = {}
    for name, mod in gm.named_modules():
        if isinstance(mod, rebuilt) or name.startswith(COMPACTOR_PREFIX + "."):
            for t in list(mod.parameters(recurse=False)) + list(mod.buffers(recurse=False)):
                memo[id(t)] = t
    return copy.deepcopy(gm, memo)


def _conv(old: nn.Conv2d, keep_in, const_in, bn, comp, keep_out) -> nn.Conv2d:
    dev = old.weight.device
    keep_in, keep_out = keep_in.nonzero().flatten().to(dev), keep_out.nonzero().flatten().to(dev)
    w = old.weight.detach().index_select(1, keep_in).double()
    b = old.bias.double() if old.bias is not None else torch.zeros(old.out_channels, dtype=torch.float64, device=dev)
    if len(keep_in) < old.in_channels:  # a removed input channel holding the constant c adds sum(W[:, c]) * c
        dropped_in = torch.ones(old.in_channels, dtype=torch.bool, device=dev)
        dropped_in[keep_in] = False
        b = b + old.weight.detach()[:, dropped_in].double().sum((2, 3)) @ const_in[dropped_in]
    if bn is not None:
        scale = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
        if bn.affine:
            scale = scale * bn.weight.double()
        w = w * scale[:, None, None, None]
        b = (b - bn.running_mean.double()) * scale + (bn.bias.double() if bn.affine else 0.0)
    if comp is not None:  # fold only the kept compactor rows: removed outputs are never computed
        mix = comp.weight.detach().flatten(1).index_select(0, keep_out).double()
        w = (mix @ w.flatten(1)).view(len(mix), *w.shape[1:])
        b = mix @ b
    else:
        w, b = w.index_select(0, keep_out), b.index_select(0, keep_out)
    new = _empty_conv(old, int(w.shape[1]), int(w.shape[0]))
    new.weight.copy_(w)
    new.bias.copy_(b)
    return new


def _empty_conv(old: nn.Conv2d, cin: int, cout: int, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    """A conv like ``old`` with new widths, built without random initialisation (its weights are copied in)."""
    return nn.Conv2d(cin, cout, old.kernel_size, old.stride, old.padding, old.dilation, groups=groups, bias=bias,
                     padding_mode=old.padding_mode, device="meta").to_empty(device=old.weight.device).to(
                         old.weight.dtype)


def _depthwise(old: nn.Conv2d, keep) -> nn.Conv2d:
    keep = keep.to(old.weight.device)
    n = int(keep.sum())
    new = _empty_conv(old, n, n, groups=n, bias=old.bias is not None)
    new.weight.copy_(old.weight[keep])
    if old.bias is not None:
        new.bias.copy_(old.bias[keep])
    return new


def _linear(old: nn.Linear, keep_in, const_in) -> nn.Linear:
    keep_in = keep_in.to(old.weight.device)
    w = old.weight.double()
    b = old.bias.double() if old.bias is not None else torch.zeros(old.out_features, dtype=torch.float64,
                                                                    device=old.weight.device)
    if (~keep_in).any():
        b = b + w[:, ~keep_in] @ const_in[~keep_in]
    # built on the meta device: nn.Linear's random initialisation would consume the global generator
    new = nn.Linear(int(keep_in.sum()), old.out_features, bias=True, device="meta").to_empty(
        device=old.weight.device).to(old.weight.dtype)
    new.weight.copy_(w[:, keep_in])
    new.bias.copy_(b)
    return new


def _batchnorm(old: nn.BatchNorm2d, keep) -> nn.BatchNorm2d:
    keep = keep.to(old.running_mean.device if old.track_running_stats else old.weight.device)
    new = nn.BatchNorm2d(int(keep.sum()), old.eps, old.momentum, old.affine, old.track_running_stats)
    if old.affine:
        new.weight.copy_(old.weight[keep])
        new.bias.copy_(old.bias[keep])
    if old.track_running_stats:
        new.running_mean.copy_(old.running_mean[keep])
        new.running_var.copy_(old.running_var[keep])
        new.num_batches_tracked.copy_(old.num_batches_tracked)
    return new.to(old.weight.device if old.affine else old.running_mean.device).eval()


def _arithmetic(node: fx.Node, values: dict[str, torch.Tensor], unknown: torch.Tensor) -> torch.Tensor:
    """The node's own operation on the removed-channel values, every operand where the model put it.

    ``1 - x`` stays ``1 - x``, ``x * 0`` stays ``x * 0`` (alpha= and rounding_mode= apply too). Operands
    whose values are unknown here (a number computed in the graph, a broadcast tensor) give ``unknown``:
    the analysis kept those channels, so their values are never used.
    """
    n, known = len(unknown), True

    def value(a: fx.Node):
        nonlocal known
        if a.name not in values or len(values[a.name]) != n:
            known = False
            return a
        return values[a.name].clone().view(1, -1, 1, 1)

    args, kwargs = fx.node.map_arg((node.args, node.kwargs), value)
    if not known:
        return unknown
    fn = node.target if callable(node.target) else getattr(torch.Tensor, node.target)
    return torch.as_tensor(fn(*args, **kwargs), dtype=torch.float64, device=unknown.device).flatten()


def _removed_channel_values(gm: fx.GraphModule, graph: ch.ChannelGraph) -> dict[str, torch.Tensor]:
    """Per node: the value every *removed* channel has there (float64, one entry per feature).

    Removed channels leave their compactor as exact zeros; channel-local operations map the
    zero to a constant (BN, sigmoid, + a number...). Entries of kept channels are meaningless.
    The analysis has pinned every channel whose value would not stay constant.
    """
    modules = dict(gm.named_modules())
    values: dict[str, torch.Tensor] = {}
    device = next(gm.parameters()).device

    def zeros(node) -> torch.Tensor:
        return torch.zeros(len(graph.node_labels[node.name]), dtype=torch.float64, device=device)

    def as_map(v: torch.Tensor) -> torch.Tensor:
        return v.view(1, -1, 1, 1)

    for node in gm.graph.nodes:
        if node.name not in graph.node_labels:
            continue
        srcs = [a for a in fx.node.map_aggregate(node.args, lambda x: x) if isinstance(a, fx.Node)]
        tensors = [s for s in srcs if s.name in values]
        if node.op != "call_module" and node.op != "call_function" and node.op != "call_method" or not tensors:
            values[node.name] = zeros(node)
            continue
        v = values[tensors[0].name]
        target = node.target
        if node.op == "call_module":
            mod = modules[target]
            if isinstance(mod, nn.BatchNorm2d):
                out = _bn_eval(mod, v)
            elif isinstance(mod, ch._ELEMENTWISE_MODULES) or isinstance(mod, nn.PReLU):
                out = _apply(mod, v)
            elif isinstance(mod, nn.Conv2d) and mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels:
                out = v * mod.weight.double().flatten(1).sum(1)
                out = out + (mod.bias.double() if mod.bias is not None else 0.0)
            elif isinstance(mod, nn.ConstantPad2d) or isinstance(mod, (ch._PASS_MODULES, ch._POOL_MODULES, nn.ZeroPad2d,
                                                                       nn.ReflectionPad2d, nn.ReplicationPad2d)):
                out = v
            elif isinstance(mod, nn.Flatten):
                out = _reshape(node, tensors[0], v)
            else:  # conv, linear, compactor: outputs are fresh (removed ones are zero after the compactor)
                out = zeros(node)
        elif target in ch._ELEMENTWISE_FUNCTIONS or target in ch._ELEMENTWISE_METHODS:
            fn = target if callable(target) else getattr(torch.Tensor, target)
            rest = [a for a in node.args[1:] if not isinstance(a, fx.Node)]
            kwargs = {k: a for k, a in node.kwargs.items() if not isinstance(a, fx.Node) and k != "inplace"}
            out = fn(as_map(v.clone()), *rest, **kwargs).flatten()
        elif target in ch._ADD_TARGETS or target in ch._SCALE_TARGETS:
            out = _arithmetic(node, values, zeros(node))
        elif target in ch._CAT_FUNCTIONS:
            out = torch.cat([values[t.name] for t in node.args[0] if isinstance(t, fx.Node)])
        elif target in ch._RESHAPE_TARGETS:
            out = _reshape(node, tensors[0], v)
        else:  # pass-through, pooling, padding, spatial means, dropout
            out = v if len(v) == len(graph.node_labels[node.name]) else zeros(node)
        values[node.name] = out.double()
    return values


def _apply(mod: nn.Module, v: torch.Tensor) -> torch.Tensor:
    return mod(v.float().view(1, -1, 1, 1).clone()).double().flatten()


def _bn_eval(bn: nn.BatchNorm2d, v: torch.Tensor) -> torch.Tensor:
    mean = bn.running_mean.double() if bn.track_running_stats else 0.0
    var = bn.running_var.double() if bn.track_running_stats else 1.0
    out = (v - mean) / torch.sqrt(var + bn.eps)
    return out * bn.weight.double() + bn.bias.double() if bn.affine else out


def _reshape(node: fx.Node, src: fx.Node, v: torch.Tensor) -> torch.Tensor:
    out_shape = ch._tensor_shape(node)
    repeat = out_shape[1] // max(len(v), 1)
    return v.repeat_interleave(repeat) if repeat > 1 else v
