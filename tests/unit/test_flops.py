"""The paper's FLOP formula: by hand, on specs and modules, against torch.utils.flop_counter."""

from __future__ import annotations

import pytest
from torch import nn

from histolean import arch, flops, models, nar


def test_formula_by_hand():
    # 3x3 conv, 16 -> 32 channels, 10x10 output: 2 * 16 * 9 * 100 * 32
    assert flops.conv_flops(16, 32, 3, 10, 10) == 921_600
    assert flops.conv_flops(16, 32, (1, 7), 10, 10, groups=4) == 2 * 4 * 7 * 100 * 32
    assert flops.dense_flops(2048, 2) == 8192
    with pytest.raises(ValueError, match="groups"):
        flops.conv_flops(10, 32, 3, 4, 4, groups=4)


def test_layer_costs_of_a_hand_built_module():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=4),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    costs = flops.layer_costs(net, input_size=32)
    assert [c.kind for c in costs] == ["conv", "conv", "dense"]
    assert costs[0].out_hw == (16, 16) and costs[0].flops == 2 * 3 * 9 * 256 * 8
    assert costs[1].flops == 2 * 2 * 9 * 256 * 8
    assert costs[2].flops == 2 * 8 * 5
    assert flops.flop_count(net, 32) == sum(c.flops for c in costs) == flops.torch_flop_count(net, 32)


SPECS = [arch.resnet50v2(), arch.resnet50v2(stride_at="first"), arch.inception_v4(), arch.inception_v4(input_size=240),
         arch.resnet34(), arch.b2(), arch.b6(), arch.tiny()]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}@{s.input_size}")
def test_formula_agrees_with_torch_flop_counter(spec):
    ours, theirs = flops.flop_count(spec), flops.torch_flop_count(spec)
    assert ours == pytest.approx(theirs, rel=0.01)


@pytest.mark.parametrize("phi", [1, 3])
def test_formula_agrees_on_reduced_specs(phi):
    for spec in (nar.reduce(arch.resnet50v2(), phi), nar.reduce(arch.inception_v4(input_size=240), phi)):
        assert flops.flop_count(spec) == pytest.approx(flops.torch_flop_count(spec), rel=0.01)


def test_live_module_counts_equal_the_spec_counts():
    spec = arch.b6()
    net = models.build(spec, seed=0)
    assert flops.flop_count(net) == flops.flop_count(spec)                 # real forward vs meta device
    assert flops.torch_flop_count(net) == pytest.approx(flops.flop_count(net), rel=0.01)
    assert flops.count_params(net) == flops.count_params(spec)
    with pytest.raises(ValueError, match="forward pass failed at input 64x64"):
        flops.gflops(net, input_size=64)    # a flatten head is built for one input size


def test_paper_scale_gflops_per_patch():
    # The paper's 50 um patch at 240 px: our Keras-layout count, and the stride-first layout that
    # reproduces the paper's 9.65 GFLOPs (Table 3) within 1 %.
    assert flops.gflops(arch.resnet50v2()) == pytest.approx(8.235, abs=0.001)
    assert flops.gflops(arch.resnet50v2(stride_at="first")) == pytest.approx(9.65, rel=0.01)


def test_module_without_spec_needs_input_size():
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="input_size"):
        flops.gflops(net)
    with pytest.raises(TypeError, match="Spec"):
        flops.gflops("resnet50v2")


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="inception_v4.*input 40x40"):
        flops.gflops(arch.inception_v4(input_size=40))


def test_layer_counts():
    assert flops.count_layers(arch.resnet50v2()) == {"param_layers": 54, "layers": 159}   # 49 + 4 shortcuts + dense
    assert flops.count_layers(arch.inception_v4())["param_layers"] == 150                # 149 convs + dense
