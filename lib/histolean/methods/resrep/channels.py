"""Which output channels of which convolutions can be removed, found by tracing the model.

The model is traced with ``torch.fx`` and run once on an example input (shape
propagation). Every output channel of an ordinary convolution (``groups == 1``)
gets a *slot*; the slots flow through the graph as per-feature labels:

* channel-local operations (BN, activations, pooling, padding, dropout, a
  depthwise convolution, spatial means) keep the labels;
* a residual addition ties the two inputs' labels channel by channel
  (union-find), so tied channels are pruned together;
* a concatenation along channels concatenates the labels (Inception);
* a flatten repeats each channel's label over its spatial positions (B6 head);
* convolutions and linear layers *consume* labels: pruning a channel removes
  the matching input slice of every consumer.

A union-find class of tied slots is one pruning unit (one mask bit).

When a channel is removed, its consumers must see the same value as before.
Compactor rows of removed channels are zero, so the channel is zero where it
leaves the compactor; downstream it may become a per-channel constant (a
pre-activation BN maps 0 to ``beta - gamma * mean / std``), which is folded
into the consumer's bias at conversion - exact only if the consumer does not
zero-pad. So units are *kept* (not pruned, no error) when:

* a non-zero constant would reach a zero-padded convolution, pooling or pad;
* they feed a grouped convolution (1 < groups, not depthwise) or come out of one;
* they reach the model's output, or are added to a tensor without slots
  (the input, a parameter, an excluded conv);
* they are combined with a number computed in the graph (a tensor constant, a
  size), whose value conversion cannot fold;
* the user lists their conv in ``exclude``;
* a non-zero constant padding (``ConstantPad2d``, ``F.pad(value != 0)``) pads them: a removed
  channel would be constant inside but the pad value on the border;
* the pruning ``scope`` leaves them out (below).

Pruning scope (``analyse(..., scope=...)``, passed on by ``resrep.prepare``):

* ``"any"`` (default): every channel the rules above allow, including the residual stream
  (tied channels pruned together), the shortcut and the stem;
* ``"bottleneck"``: only the internal convolutions of residual blocks - convs inside a module
  whose forward adds two feature maps, whose channels never reach an addition. In ResNet50V2
  these are ``conv1`` and ``conv2`` of each bottleneck; the residual stream (``conv3``, the
  shortcut) and the stem are kept. This is what the official ResRep code prunes in ResNet-50
  and what the NAR paper's Table 2 shows.

An :class:`UnprunableModelError` naming the module is raised when the model
cannot be traced, or when an operation whose channel semantics are unknown
(a reshape that is not a flatten, a product of two tensors such as an SE block,
slicing, a reused conv, a number divided by the channels, ...) consumes prunable channels: guessing there would
give a wrong network. Excluding the convs it names removes the error.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from histolean.core import fxops

ZERO, CONST = 0, 1  # value of a removed channel at a tensor: exactly zero, or a per-channel constant
FIXED = -1          # label of a feature that is never removed
SCOPES = ("any", "bottleneck")  # see the module docstring

# value-by-value ops come from the shared table (histolean.core.fxops); PReLU is handled apart (one slope only)
_ELEMENTWISE_MODULES = tuple(m for m in fxops.POINTWISE_MODULES if m is not nn.PReLU)
_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout)
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_PAD_MODULES = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)
_ELEMENTWISE_FUNCTIONS = fxops.POINTWISE_FUNCTIONS
_ELEMENTWISE_METHODS = fxops.POINTWISE_METHODS
_PASS_FUNCTIONS = {F.dropout, F.dropout2d} | fxops.VALUE_PRESERVING_FUNCTIONS  # dropout maps zero to zero
_PASS_METHODS = fxops.VALUE_PRESERVING_METHODS
_POOL_FUNCTIONS = {F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.max_pool2d}
_ADD_TARGETS = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub, torch.rsub,
                "add", "add_", "sub", "sub_"}
_SCALE_TARGETS = {operator.mul, operator.imul, torch.mul, operator.truediv, torch.div, "mul", "mul_", "div", "div_"}
_DIV_TARGETS = {operator.truediv, torch.div, "div", "div_"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_RESHAPE_TARGETS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
                    "flatten", "view", "reshape", "squeeze", "unsqueeze"}
_MEAN_TARGETS = {torch.mean, torch.amax, "mean", "amax"}
_SHAPE_QUERIES = {"size", "dim"}


class UnprunableModelError(ValueError):
    """The model contains an operation that channel pruning cannot pass through safely."""


@dataclass
class Layer:
    """One Conv2d / Linear call in the graph: what it costs and which slots it produces and consumes."""

    name: str                  # module path, e.g. "stage2.block1.conv2"
    node: str                  # fx node name
    kind: str                  # "conv" | "linear"
    in_labels: np.ndarray      # per input feature: slot id or FIXED
    out_slots: np.ndarray | None  # slot ids of its output channels; None: outputs are never removed
    out_features: int
    groups: int = 1
    depthwise: bool = False    # groups == in == out: follows its input's channels
    flops_per_unit: int = 0    # conv: 2*kh*kw*Hout*Wout ; linear: 2
    bn: str | None = None      # BatchNorm2d fused into this conv at conversion (its only consumer)
    bn_node: str | None = None

    def flops(self, n_in: int, n_out: int) -> int:
        """The papers' formula, ``2 * Cin * kh * kw * Hout * Wout * Cout / groups``."""
        if self.depthwise:
            return self.flops_per_unit * n_out
        return self.flops_per_unit * n_in * n_out // self.groups


@dataclass
class ChannelGraph:
    """The result of the analysis: layers, slots and their union-find classes."""

    graph_module: fx.GraphModule
    layers: list[Layer]
    slot_layer: np.ndarray        # slot -> index into layers
    slot_class: np.ndarray        # slot -> pruning unit (class) id, 0..n_classes-1
    class_pinned: np.ndarray      # class -> True when it must be kept
    source_node: dict[str, str]   # conv node name -> node whose output carries its slots (BN or conv)
    reasons: dict[int, str] = field(default_factory=dict)  # pinned class -> why (first reason)
    node_labels: dict[str, np.ndarray] = field(default_factory=dict)  # fx node name -> feature labels
    scope: str = "any"            # which channels may be pruned at all (see SCOPES)

    def kept_features(self, labels: np.ndarray, dropped: np.ndarray) -> np.ndarray:
        """Boolean mask over ``labels``: FIXED features and features of classes not in ``dropped``."""
        out = np.ones(len(labels), dtype=bool)
        slots = labels >= 0
        out[slots] = ~dropped[self.slot_class[labels[slots]]]
        return out

    @property
    def n_classes(self) -> int:
        return len(self.class_pinned)

    def prunable_layers(self) -> list[Layer]:
        """Convolutions with at least one removable output channel (they get a compactor)."""
        out = []
        for layer in self.layers:
            if layer.out_slots is not None and not self.class_pinned[self.slot_class[layer.out_slots]].all():
                out.append(layer)
        return out


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def add(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"module '{node.target}' ({type(modules[node.target]).__name__})"
    if node.op == "call_method":
        return f"method .{node.target}() at graph node '{node.name}'"
    name = getattr(node.target, "__name__", str(node.target))
    return f"function {name}() at graph node '{node.name}'"


def _arg(node: fx.Node, index: int, name: str, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _operand_nodes(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _zero_padding(padding, padding_mode: str = "zeros") -> bool:
    """True when the op adds zeros around the map (a non-zero constant would stop being constant)."""
    if padding_mode != "zeros":
        return False
    if isinstance(padding, str):
        return padding != "valid"
    pads = padding if isinstance(padding, (tuple, list)) else (padding,)
    return any(int(p) != 0 for p in pads)


def _tensor_shape(node) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """``torch.fx`` trace + shape propagation (eval mode, no grad); clear error when untraceable."""
    name = type(model).__name__
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:
        raise UnprunableModelError(
            f"{name}: torch.fx cannot trace this model ({type(err).__name__}: {err}); ResRep needs a "
            f"traceable graph (no data-dependent Python control flow in forward)") from err
    was_training = model.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except RuntimeError as err:
        raise ValueError(f"{name}: the forward pass on an input of shape {tuple(example.shape)} failed "
                         f"({err}); pass the input_size the model is trained at") from None
    finally:
        gm.train(was_training)
    return gm


def analyse(model: nn.Module, example: torch.Tensor, exclude=(), scope: str = "any") -> ChannelGraph:
    """Trace ``model`` on ``example`` and find its prunable channels (see the module docstring)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    exclude = {exclude} if isinstance(exclude, str) else set(exclude)
    convs = {name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if exclude - convs:
        raise ValueError(f"{type(model).__name__}: exclude names {sorted(exclude - convs)} are not Conv2d modules "
                         f"of the model (e.g. {sorted(convs)[:3]})")
    gm = trace(model, example)
    return _Analysis(gm, exclude, type(model).__name__, scope).run()


class _Analysis:
    def __init__(self, gm: fx.GraphModule, exclude: set[str], model_name: str, scope: str = "any"):
        self.gm = gm
        self.scope = scope
        self.added: set[int] = set()          # slots that take part in an addition of two feature maps
        self.residual_blocks: set[str] = set()  # module paths whose forward adds two feature maps
        self.modules = dict(gm.named_modules())
        self.exclude = exclude
        self.model_name = model_name
        self.uf = _UnionFind()
        self.labels: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self.layers: list[Layer] = []
        self.slot_layer: list[int] = []
        self.pins: dict[int, str] = {}   # slot -> reason
        self.source_node: dict[str, str] = {}
        self.calls = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                self.calls[node.target] = self.calls.get(node.target, 0) + 1

    # -- helpers -------------------------------------------------------------------------------
    def pin(self, labels: np.ndarray, mask: np.ndarray | None, reason: str) -> None:
        sel = labels if mask is None else labels[mask]
        for slot in sel[sel >= 0]:
            self.pins.setdefault(int(slot), reason)

    def fail(self, node: fx.Node, labels: np.ndarray, what: str) -> None:
        producers = sorted({self.layers[self.slot_layer[s]].name for s in labels[labels >= 0]})
        shown = ", ".join(repr(p) for p in producers[:6]) + (" ..." if len(producers) > 6 else "")
        raise UnprunableModelError(
            f"{self.model_name}: cannot prune through {_describe(node, self.modules)}: {what}. It consumes "
            f"channels of conv {shown}; pass exclude=[...] with those convs to keep their channels")

    def inputs(self, node: fx.Node) -> list[fx.Node]:
        found = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if n.name in self.labels else None)
        return found

    def set(self, node: fx.Node, labels: np.ndarray, state: np.ndarray) -> None:
        self.labels[node.name], self.state[node.name] = labels, state

    def passthrough(self, node: fx.Node, src: fx.Node, state: np.ndarray | None = None) -> None:
        self.set(node, self.labels[src.name], self.state[src.name] if state is None else state)

    # -- main loop -------------------------------------------------------------------------------
    def run(self) -> ChannelGraph:
        for node in self.gm.graph.nodes:
            shape = _tensor_shape(node)
            if node.op == "output":
                for src in self.inputs(node):
                    self.pin(self.labels[src.name], None, "reaches the model output")
                continue
            ins = self.inputs(node)
            if shape is None or len(shape) < 2:
                self.non_tensor(node, ins)
                continue
            if node.op in ("placeholder", "get_attr") or not ins:
                self.set(node, np.full(shape[1], FIXED), np.zeros(shape[1], np.uint8))
                continue
            if node.op == "call_module":
                self.module(node, self.modules[node.target], ins, shape)
            else:
                self.function(node, ins, shape)
        return self.finish()

    def non_tensor(self, node: fx.Node, ins: list[fx.Node]) -> None:
        """Shape queries are fine; anything else producing a non-tensor from prunable channels is not."""
        if node.op == "call_method" and node.target in _SHAPE_QUERIES:
            return
        if node.op == "call_function" and node.target is getattr:
            return
        for src in ins:
            if (self.labels[src.name] >= 0).any():
                self.fail(node, self.labels[src.name], "its output is not a single feature map")

    def module(self, node: fx.Node, mod: nn.Module, ins: list[fx.Node], shape) -> None:
        src = ins[0]
        labels, state = self.labels[src.name], self.state[src.name]
        reused = self.calls[node.target] > 1
        if isinstance(mod, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and reused and (labels >= 0).any():
            self.fail(node, labels, "the module is called more than once (shared weights)")
        if isinstance(mod, nn.Conv2d):
            self.conv(node, mod, labels, state, shape, reused)
        elif isinstance(mod, nn.Linear):
            self.layers.append(Layer(node.target, node.name, "linear", labels, None, mod.out_features,
                                     flops_per_unit=2))
            self.set(node, np.full(shape[1], FIXED), np.zeros(shape[1], np.uint8))
        elif isinstance(mod, nn.BatchNorm2d):
            # the BN right after a conv is fused into it, and the compactor follows it: zero stays zero
            fused = self.fused_bn(node, src)
            self.passthrough(node, src, state if fused else np.full_like(state, CONST))
        elif isinstance(mod, _ELEMENTWISE_MODULES) or (isinstance(mod, nn.PReLU) and mod.num_parameters == 1):
            self.elementwise(node, src, fxops.maps_zero_to_zero(mod))
        elif isinstance(mod, _PASS_MODULES):
            self.passthrough(node, src)
        elif isinstance(mod, nn.Flatten):
            self.reshape(node, src, shape)
        elif isinstance(mod, _POOL_MODULES):
            padded = isinstance(mod, nn.AvgPool2d) and mod.count_include_pad and _zero_padding(mod.padding)
            self.pool(node, src, padded)
        elif isinstance(mod, _PAD_MODULES):
            value = getattr(mod, "value", 0.0)
            zeros = isinstance(mod, (nn.ZeroPad2d, nn.ConstantPad2d))
            self.pad(node, src, adds_values=zeros, value=value)
        elif any((self.labels[s.name] >= 0).any() for s in ins):
            self.fail(node, np.concatenate([self.labels[s.name] for s in ins]),
                      f"{type(mod).__name__} is not a channel-local operation ResRep knows")
        else:
            self.set(node, np.full(shape[1], FIXED), np.zeros(shape[1], np.uint8))

    def fused_bn(self, bn_node: fx.Node, src: fx.Node) -> bool:
        return (src.op == "call_module" and isinstance(self.modules[src.target], nn.Conv2d)
                and len(src.users) == 1 and self.calls[bn_node.target] == 1)

    def conv(self, node, mod: nn.Conv2d, labels, state, shape, reused: bool) -> None:
        h, w = shape[2], shape[3]
        per_unit = 2 * mod.kernel_size[0] * mod.kernel_size[1] * h * w
        padded = _zero_padding(mod.padding, mod.padding_mode)
        if padded:
            self.pin(labels, state == CONST, f"a non-zero constant would reach zero-padded conv '{node.target}'")
        cin, cout, groups = mod.in_channels, mod.out_channels, mod.groups
        if groups > 1 and groups == cin == cout:  # depthwise: output channel c is input channel c
            if node.target in self.exclude:
                self.pin(labels, None, f"feeds excluded depthwise conv '{node.target}'")
            self.layers.append(Layer(node.target, node.name, "conv", labels, None, cout, groups, True,
                                     per_unit * (cin // groups)))
            out_state = np.full_like(state, CONST) if mod.bias is not None else state.copy()
            self.set(node, labels, out_state)
            return
        if groups > 1:
            self.pin(labels, None, f"feeds grouped conv '{node.target}'")
        layer = Layer(node.target, node.name, "conv", labels, None, cout, groups, False, per_unit)
        self.layers.append(layer)
        if groups == 1 and not reused and node.target not in self.exclude:
            layer.out_slots = self.uf.add(cout)
            self.slot_layer.extend([len(self.layers) - 1] * cout)
            self.set(node, layer.out_slots, np.zeros(cout, np.uint8))
        else:
            self.set(node, np.full(cout, FIXED), np.zeros(cout, np.uint8))

    def elementwise(self, node, src, zero_to_zero: bool) -> None:
        state = self.state[src.name]
        self.passthrough(node, src, state if zero_to_zero else np.full_like(state, CONST))

    def pool(self, node, src, zero_padded: bool) -> None:
        labels, state = self.labels[src.name], self.state[src.name]
        if zero_padded:
            self.pin(labels, state == CONST, f"a non-zero constant would reach zero-padded pooling '{node.name}'")
        self.passthrough(node, src)

    def pad(self, node, src, adds_values: bool, value) -> None:
        labels, state = self.labels[src.name], self.state[src.name]
        if adds_values and value not in (0, 0.0, None):
            # zero (or any constant) inside, the pad value on the border: not a constant any more
            self.pin(labels, None, f"padded with the non-zero constant {value} at '{node.name}'")
        elif adds_values:
            self.pin(labels, state == CONST, f"a non-zero constant would reach padding '{node.name}'")
        self.passthrough(node, src, state)

    def reshape(self, node, src, shape) -> None:
        in_shape = _tensor_shape(src)
        labels, state = self.labels[src.name], self.state[src.name]
        spatial_in = int(np.prod(in_shape[2:])) if len(in_shape) > 2 else 1
        if shape[0] == in_shape[0] and shape[1] == in_shape[1] and int(np.prod(shape[2:] or (1,))) == spatial_in == 1:
            self.passthrough(node, src)  # squeezing / unsqueezing singleton spatial dims
        elif len(shape) == 2 and shape[0] == in_shape[0] and shape[1] == in_shape[1] * spatial_in:
            # torch flattens NCHW channel-major: channel c owns features c*H*W ... (c+1)*H*W - 1
            self.set(node, np.repeat(labels, spatial_in), np.repeat(state, spatial_in))
        elif (labels >= 0).any():
            self.fail(node, labels, f"reshape {tuple(in_shape)} -> {tuple(shape)} mixes channels with other dims")
        else:
            self.set(node, np.full(shape[1], FIXED), np.zeros(shape[1], np.uint8))

    def function(self, node: fx.Node, ins: list[fx.Node], shape) -> None:
        target = node.target
        src = ins[0]
        if target in _ELEMENTWISE_FUNCTIONS or target in _ELEMENTWISE_METHODS:
            fn = target if callable(target) else getattr(torch.Tensor, target)
            rest = [a for a in node.args[1:] if not isinstance(a, fx.Node)]
            kwargs = {k: v for k, v in node.kwargs.items() if not isinstance(v, fx.Node) and k != "inplace"}
            self.elementwise(node, src, fxops.maps_zero_to_zero(fn, *rest, **kwargs))
        elif target in _PASS_FUNCTIONS or target in _PASS_METHODS:
            self.passthrough(node, src)
        elif target in _POOL_FUNCTIONS:
            self.passthrough(node, src)  # max pooling pads with -inf; adaptive pools do not pad
        elif target is F.avg_pool2d:
            padded = _zero_padding(_arg(node, 3, "padding", 0)) and _arg(node, 5, "count_include_pad", True)
            self.pool(node, src, padded)
        elif target is F.pad:
            mode = _arg(node, 2, "mode", "constant")
            self.pad(node, src, adds_values=mode == "constant", value=_arg(node, 3, "value", 0.0))
        elif target in _ADD_TARGETS or (target in _SCALE_TARGETS and len(ins) == 1):
            self.arithmetic(node, ins, shape)
        elif target in _CAT_FUNCTIONS:
            self.cat(node, shape)
        elif target in _RESHAPE_TARGETS:
            self.reshape(node, src, shape)
        elif target in _MEAN_TARGETS and len(_tensor_shape(src)) == 4 and shape[:2] == _tensor_shape(src)[:2]:
            self.passthrough(node, src)  # a spatial mean/max keeps N and C
        elif any((self.labels[s.name] >= 0).any() for s in ins):
            self.fail(node, np.concatenate([self.labels[s.name] for s in ins]),
                      "its channel semantics are unknown to ResRep")
        else:
            self.set(node, np.full(shape[1], FIXED), np.zeros(shape[1], np.uint8))

    def arithmetic(self, node: fx.Node, ins: list[fx.Node], shape) -> None:
        """``+ - * /`` of a feature map and a number (either operand order), or the sum of two feature maps."""
        labels = np.concatenate([self.labels[s.name] for s in ins])
        runtime = [a for a in _operand_nodes(node) if a.name not in self.labels]
        if runtime:  # a number computed in the graph (a tensor constant, a size): conversion cannot fold it
            self.pin(labels, None, f"combined with '{runtime[0].name}', a value known only at run time, "
                                   f"at '{node.name}'")
            self.set(node, np.full(shape[1], FIXED), np.zeros(shape[1], np.uint8))
            return
        if len(ins) > 1:
            self.add(node, ins, shape)
            return
        src = ins[0]
        if node.target in _DIV_TARGETS and _arg(node, 0, "input", None) is not src:
            if (labels >= 0).any():  # number / x: a removed (zero) channel would become inf, not a constant
                self.fail(node, labels, "a number divided by the channels (a removed, zero channel would "
                                        "become inf)")
            self.set(node, np.full(shape[1], FIXED), np.zeros(shape[1], np.uint8))
        elif node.target in _ADD_TARGETS:  # x + c, c - x ...: a zero channel becomes a constant one
            self.passthrough(node, src, np.full_like(self.state[src.name], CONST))
        else:  # x * c, c * x, x / c: zero stays zero, a constant stays constant
            self.passthrough(node, src)

    def add(self, node: fx.Node, ins: list[fx.Node], shape) -> None:
        a, b = (self.labels[s.name] for s in ins[:2])
        sa, sb = (self.state[s.name] for s in ins[:2])
        if len(a) != shape[1] or len(b) != shape[1]:  # broadcast along channels
            self.pin(a if len(a) == shape[1] else b, None, f"added to a broadcast tensor at '{node.name}'")
            full = a if len(a) == shape[1] else b
            self.set(node, np.full(len(full), FIXED), np.zeros(len(full), np.uint8))
            return
        self.added.update(int(v) for v in np.concatenate([a, b]) if v >= 0)
        stack = node.meta.get("nn_module_stack") or {}
        self.residual_blocks.add(next(reversed(stack)) if stack else "")
        out = a.copy()
        for i in range(len(a)):
            if a[i] >= 0 and b[i] >= 0:
                self.uf.union(int(a[i]), int(b[i]))
            elif a[i] >= 0 or b[i] >= 0:
                self.pins.setdefault(int(max(a[i], b[i])), f"added to a fixed channel at '{node.name}'")
                out[i] = FIXED
        self.set(node, out, np.maximum(sa, sb))

    def cat(self, node: fx.Node, shape) -> None:
        tensors = node.args[0]
        dim = _arg(node, 1, "dim", 0)
        ndim = len(shape)
        parts = [t for t in tensors if isinstance(t, fx.Node)]
        if dim % ndim != 1:
            labels = np.concatenate([self.labels[t.name] for t in parts])
            if (labels >= 0).any():
                self.fail(node, labels, f"concatenation along dim {dim}, not channels")
            self.set(node, np.full(shape[1], FIXED), np.zeros(shape[1], np.uint8))
            return
        self.set(node, np.concatenate([self.labels[t.name] for t in parts]),
                 np.concatenate([self.state[t.name] for t in parts]))

    # -- results -------------------------------------------------------------------------------
    def finish(self) -> ChannelGraph:
        n = len(self.uf.parent)
        roots = np.array([self.uf.find(i) for i in range(n)], dtype=np.int64)
        _, slot_class = np.unique(roots, return_inverse=True)
        n_classes = int(slot_class.max()) + 1 if n else 0
        if self.scope == "bottleneck":
            self.pin_outside_bottlenecks(slot_class)
        pinned = np.zeros(n_classes, dtype=bool)
        reasons: dict[int, str] = {}
        for slot, why in self.pins.items():
            cls = int(slot_class[slot])
            pinned[cls] = True
            reasons.setdefault(cls, why)
        self.place_sources()
        return ChannelGraph(self.gm, self.layers, np.asarray(self.slot_layer, dtype=np.int64),
                            slot_class.astype(np.int64), pinned, self.source_node, reasons, self.labels, self.scope)

    def pin_outside_bottlenecks(self, slot_class: np.ndarray) -> None:
        """Scope "bottleneck": keep every class that reaches an addition and every conv outside a residual block."""
        if not self.residual_blocks:
            raise ValueError(f"{self.model_name}: scope='bottleneck' prunes the internal convs of residual blocks, "
                             f"but the model adds no two feature maps; use scope='any'")
        stream = {int(slot_class[s]) for s in self.added}
        for layer in self.layers:
            if layer.out_slots is None:
                continue
            inside = any(block == "" or layer.name.startswith(block + ".") for block in self.residual_blocks)
            if not inside:
                self.pin(layer.out_slots, None, f"'{layer.name}' is outside the residual blocks (scope 'bottleneck')")
            else:
                on_stream = np.isin(slot_class[layer.out_slots], sorted(stream))
                self.pin(layer.out_slots, on_stream, f"'{layer.name}' feeds the residual stream (scope 'bottleneck')")

    def place_sources(self) -> None:
        """The compactor goes after the conv's BN when that BN is the conv's only consumer."""
        nodes = {n.name: n for n in self.gm.graph.nodes}
        for layer in self.layers:
            if layer.out_slots is None:
                continue
            node = nodes[layer.node]
            users = list(node.users)
            if len(users) == 1 and users[0].op == "call_module" and self.calls[users[0].target] == 1 \
                    and isinstance(self.modules[users[0].target], nn.BatchNorm2d):
                layer.bn, layer.bn_node = users[0].target, users[0].name
                self.source_node[layer.node] = users[0].name
            else:
                self.source_node[layer.node] = layer.node
