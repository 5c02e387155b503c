"""FLOPs, parameters and layers: the NAR paper's formula, on specs and on live models.

The formula (NAR paper, Section 3) counts only convolutions and dense layers::

    F_conv  = 2 x C_in / groups x k_h x k_w x H_out x W_out x C_out
    F_dense = 2 x in x out

i.e. a multiply-accumulate is 2 FLOPs. Biases, batch normalisation, activations, pooling,
residual additions and concatenations are *not* counted (they are a fraction of a percent).
All counts are per image (batch 1).

On a :class:`~histolean.core.arch.Spec` the network is built on torch's ``meta`` device (shapes only,
no weights allocated, no arithmetic), so costing even Inception V4 takes milliseconds; on a
module, forward hooks record each layer's output shape during one batch-1 pass.
``torch_flop_count`` is the independent cross-check (``torch.utils.flop_counter``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import torch
from torch import nn

from histolean.core import models
from histolean.core.arch import Spec


def conv_flops(c_in: int, c_out: int, kernel: int | tuple[int, int], h_out: int, w_out: int,
               groups: int = 1) -> int:
    """The paper's convolution cost: 2 * C_in/groups * k_h * k_w * H_out * W_out * C_out."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if c_in % groups or c_out % groups:
        raise ValueError(f"conv_flops: channels ({c_in} -> {c_out}) must be divisible by groups={groups}")
    return 2 * (c_in // groups) * kh * kw * h_out * w_out * c_out


def dense_flops(n_in: int, n_out: int) -> int:
    """The paper's dense-layer cost: 2 * in * out."""
    return 2 * n_in * n_out


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str                 # "conv" | "dense"
    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    out_hw: tuple[int, int]
    groups: int
    flops: int
    params: int


def meta_network(spec: Spec) -> nn.Module:
    """The spec's network on the meta device (cached: specs are frozen and hashable).

    Global-pool networks do not depend on the input size, so IR variants share one build.
    """
    if spec.head.pool == "avg":
        spec = replace(spec, input_size=1, variant="")
    return _meta_network(spec)


@lru_cache(maxsize=128)
def _meta_network(spec: Spec) -> nn.Module:
    with torch.device("meta"):
        return models.build(spec)


def _module_and_size(model, input_size: int | None) -> tuple[nn.Module, int, int]:
    if isinstance(model, Spec):
        return meta_network(model), int(input_size or model.input_size), model.in_channels
    if isinstance(model, nn.Module):
        spec = getattr(model, "spec", None)
        size = input_size or (spec.input_size if isinstance(spec, Spec) else None)
        if size is None:
            raise ValueError(f"{type(model).__name__} has no .spec: pass input_size= to cost it")
        c_in = spec.in_channels if isinstance(spec, Spec) else _first_conv_in_channels(model)
        return model, int(size), c_in
    raise TypeError(f"expected a histolean.core.arch.Spec or a torch.nn.Module, got {type(model).__name__}")


def _first_conv_in_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError(f"{type(model).__name__}: no Conv2d found to infer the input channels; pass a Spec instead")


def probe_input(model: nn.Module, size: int | tuple[int, int], in_channels: int = 3, *,
                random: bool = False) -> torch.Tensor:
    """One input image for a forward pass that only looks at shapes or costs, on the model's device and in its
    dtype (CPU float32 for a model without parameters): zeros, or standard-normal values with ``random``."""
    try:
        p = next(model.parameters())
        device, dtype = p.device, p.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    h, w = (size, size) if isinstance(size, int) else size
    make = torch.randn if random else torch.zeros
    return make(1, in_channels, h, w, device=device, dtype=dtype)


def layer_costs(model: Spec | nn.Module, input_size: int | None = None) -> list[LayerCost]:
    """Per-layer costs (every Conv2d and Linear, in execution order) at ``input_size`` (default: the spec's)."""
    module, size, c_in = _module_and_size(model, input_size)
    names = {m: n for n, m in module.named_modules()}
    costs: list[LayerCost] = []

    def hook(m, inputs, output):
        n_params = sum(p.numel() for p in m.parameters(recurse=False))
        if isinstance(m, nn.Conv2d):
            h, w = int(output.shape[-2]), int(output.shape[-1])
            costs.append(LayerCost(names.get(m, "?"), "conv", m.in_channels, m.out_channels, tuple(m.kernel_size),
                                   tuple(m.stride), (h, w), m.groups,
                                   conv_flops(m.in_channels, m.out_channels, tuple(m.kernel_size), h, w, m.groups),
                                   n_params))
        else:
            # Extra leading dims (tokens) multiply the dense cost; per image, batch excluded.
            rows = int(output.numel() // output.shape[0] // m.out_features)
            costs.append(LayerCost(names.get(m, "?"), "dense", m.in_features, m.out_features, (1, 1), (1, 1),
                                   (1, 1), 1, rows * dense_flops(m.in_features, m.out_features), n_params))

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(probe_input(module, size, c_in))
    except RuntimeError as err:
        raise ValueError(f"{_label(model)}: forward pass failed at input {size}x{size} "
                         f"(too small for its downsampling?): {err}") from None
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return costs


def _label(model) -> str:
    return model.label if isinstance(model, Spec) else type(model).__name__


def flop_count(model: Spec | nn.Module, input_size: int | None = None) -> int:
    """Total FLOPs per image by the paper's formula."""
    return sum(c.flops for c in layer_costs(model, input_size))


def gflops(model: Spec | nn.Module, input_size: int | None = None) -> float:
    """Giga-FLOPs per image (per 50 x 50 um patch when the input covers one) by the paper's formula."""
    return flop_count(model, input_size) / 1e9


def torch_flop_count(model: Spec | nn.Module, input_size: int | None = None) -> int:
    """FLOPs per image by ``torch.utils.flop_counter.FlopCounterMode`` (the independent cross-check)."""
    from torch.utils.flop_counter import FlopCounterMode

    module, size, c_in = _module_and_size(model, input_size)
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(probe_input(module, size, c_in))
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


def count_params(model: Spec | nn.Module, *, include_bn_stats: bool = False) -> int:
    """Trainable parameters; with ``include_bn_stats`` also BN moving mean/variance (Keras's "Total params")."""
    module = meta_network(model) if isinstance(model, Spec) else model
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a histolean.core.arch.Spec or a torch.nn.Module, got {type(model).__name__}")
    n = sum(p.numel() for p in module.parameters() if p.requires_grad)
    if include_bn_stats:
        n += sum(b.numel() for name, b in module.named_buffers() if name.endswith(("running_mean", "running_var")))
    return int(n)


_LAYER_TYPES = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d,
                nn.AdaptiveAvgPool2d, nn.Dropout, nn.ZeroPad2d, nn.Flatten)


def count_layers(model: Spec | nn.Module) -> dict[str, int]:
    """``param_layers``: convolutions + dense layers; ``layers``: those plus BN, activation, pooling,
    padding, dropout and flatten modules (each torch module a Keras layer would be).

    Additions and concatenations are functional here and not counted, so ``layers`` is below a
    Keras ``len(model.layers)``; the paper's Tables 3-4 counts are printed beside ours, not matched.
    """
    module = meta_network(model) if isinstance(model, Spec) else model
    param_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())
    layers = sum(isinstance(m, _LAYER_TYPES) for m in module.modules())
    return {"param_layers": int(param_layers), "layers": int(layers)}


def compare_table(specs: list[Spec] | tuple[Spec, ...]) -> str:
    """Specs side by side, one column each, as the NAR paper's Table 1 (plus input size and GFLOPs)."""
    if not specs:
        raise ValueError("compare_table: give at least one spec")
    header = ["", *[s.label for s in specs]]
    rows = [
        ["# Params (Keras total)", *[f"{count_params(s, include_bn_stats=True):,}" for s in specs]],
        ["Input", *[f"{s.input_size} x {s.input_size}" for s in specs]],
        ["GFLOPs", *[f"{gflops(s):.2f}" for s in specs]],
        ["Stem", *[(s.stem.describe() if s.stem else "-") for s in specs]],
    ]
    names = list(dict.fromkeys(st.name for s in specs for st in s.stages))
    for name in names:
        rows.append([name, *[next((st.describe() for st in s.stages if st.name == name), "-") for s in specs]])
    table = [header, *rows]
    col_w = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(col_w[i]) for i, cell in enumerate(r)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in col_w))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Keras models (cross-checks against keras.applications)
# ---------------------------------------------------------------------------------------------

def keras_flop_count(keras_model) -> int:
    """The paper's formula on a built Keras model (Conv2D, DepthwiseConv2D, Dense), per image."""
    import keras

    total = 0
    for layer in keras_model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            out_shape = layer.output.shape
            if isinstance(layer, keras.layers.Dense):
                c_in = int(layer.input.shape[-1])
                rows = 1
                for d in out_shape[1:-1]:
                    rows *= int(d)
                total += rows * dense_flops(c_in, int(out_shape[-1]))
                continue
            c_in = int(layer.input.shape[-1])
            h, w, c_out = int(out_shape[1]), int(out_shape[2]), int(out_shape[3])
            groups = c_in if isinstance(layer, keras.layers.DepthwiseConv2D) else int(getattr(layer, "groups", 1))
            total += conv_flops(c_in, c_out, tuple(layer.kernel_size), h, w, groups)
    return int(total)


def keras_param_counts(keras_model) -> dict[str, int]:
    """Keras's own trainable / non-trainable / total parameter counts."""
    trainable = int(sum(int(w.numpy().size) for w in keras_model.trainable_weights))
    non_trainable = int(sum(int(w.numpy().size) for w in keras_model.non_trainable_weights))
    return {"trainable": trainable, "non_trainable": non_trainable, "total": trainable + non_trainable}


def cost_summary(spec: Spec) -> dict:
    """Everything the paper's Tables 1, 3 and 4 report about a network's cost, for one spec."""
    layers = count_layers(spec)
    return {
        "input_size": spec.input_size,
        "blocks": list(spec.blocks),
        "gflops": gflops(spec),
        "params": count_params(spec),
        "params_keras_total": count_params(spec, include_bn_stats=True),
        "param_layers": layers["param_layers"],
        "layers": layers["layers"],
    }
