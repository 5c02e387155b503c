"""The shared table of value-by-value ops: each entry checked numerically, and used alike by
streaming (spatial locality) and ResRep (channel locality, zero or constant)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from histolean import resrep
from histolean.core import fxops
from histolean import streaming as st

ARGS = {nn.Threshold: (0.1, 2.0), F.threshold: (0.1, 2.0), torch.clamp: (-0.5, 0.5), torch.clip: (-0.5, 0.5),
        "clamp": (-0.5, 0.5), "clamp_": (-0.5, 0.5), "clip": (-0.5, 0.5), "clip_": (-0.5, 0.5)}


def ops():
    for m in fxops.POINTWISE_MODULES:
        yield m.__name__, m(*ARGS.get(m, ())).double()
    for f in fxops.POINTWISE_FUNCTIONS:
        yield getattr(f, "__name__", str(f)), lambda x, f=f: f(x, *ARGS.get(f, ()))
    for name in fxops.POINTWISE_METHODS | fxops.VALUE_PRESERVING_METHODS:
        yield f".{name}()", lambda x, n=name: getattr(x.clone(), n)(*ARGS.get(n, ()))


@pytest.mark.parametrize("name, op", list(ops()), ids=[n for n, _ in ops()])
def test_every_table_entry_acts_value_by_value(name, op):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = op(x.clone()).double()
        for where in ((1, 2, 3, 4), (0, 0, 0, 0)):
            x2 = x.clone()
            x2[where] += 0.7
            changed = (op(x2).double() != y)
            changed[where] = False
            assert not changed.any(), f"{name}: changing one value changed others"


def test_zero_to_zero_follows_the_arguments():
    assert fxops.maps_zero_to_zero(F.elu) and fxops.maps_zero_to_zero(F.hardswish) and fxops.maps_zero_to_zero(F.mish)
    assert not fxops.maps_zero_to_zero(F.softplus) and not fxops.maps_zero_to_zero(torch.sigmoid)
    assert fxops.maps_zero_to_zero(torch.clamp, -1.0, 1.0) and not fxops.maps_zero_to_zero(torch.clamp, 1.0)


class Activations(nn.Module):
    """The ops streaming used to refuse and ResRep accepted, between 1x1 convs (ResRep can fold constants)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 6, 3, padding=1)] + [nn.Conv2d(6, 6, 1) for _ in range(5)])
        self.fc = nn.Linear(6, 2)

    def trunk(self, x):
        acts = [F.elu, F.mish, F.softplus, F.hardswish, lambda t: torch.clamp(t, -0.5, 2.0)]
        x = self.convs[0](x)
        for act, conv in zip(acts, self.convs[1:]):
            x = conv(act(x))
        return x

    def forward(self, x):
        return self.fc(self.trunk(x).mean((2, 3)))


class Trunk(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.trunk(x)


def test_streaming_and_resrep_both_accept_them_and_stay_exact():
    torch.manual_seed(0)
    model = Activations().double()
    x = torch.randn(1, 3, 40, 40, dtype=torch.float64)
    trunk = Trunk(model)
    with torch.no_grad():
        torch.testing.assert_close(st.StreamingTrunk(trunk, 16)(x), trunk(x), rtol=0, atol=1e-12)
    net = resrep.prepare(Activations().eval(), 16)
    assert len(net.pruned_layers) == 6
    with torch.no_grad():  # remove half of every conv's channels: their rows collapse to zero
        for _, comp in net.compactors():
            comp.weight[: comp.weight.shape[0] // 2] = 0.0
    net.eval()
    small = resrep.convert(net)
    assert small.report.exact and small.report.removed_classes == 18
    xs = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(small.module(xs), net(xs), rtol=0, atol=1e-5)
