"""The paper's probing method (Pinckaers et al. 2020, Section 3.3): geometry and border effect measured
on an averaging copy of the trunk, independently of the analytic geometry (the tests compare both)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from histolean.core.models import FrozenBatchNorm2d
from .geometry import Axis, Geometry, NonLocalLayerError, _pair


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
