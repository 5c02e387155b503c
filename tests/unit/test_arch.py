"""Architecture specs and their torch builds: layouts, parameter counts against references."""

from __future__ import annotations

import pytest
import torch

from histolean import arch, flops, models


@pytest.fixture(scope="module")
def keras_resnet50v2():
    """keras.applications.ResNet50V2 at the paper's 240 px (imports TensorFlow once per module)."""
    keras = pytest.importorskip("keras")
    return keras.applications.ResNet50V2(weights=None, classes=2, input_shape=(240, 240, 3))


@pytest.mark.slow  # seconds on an idle 2-core CPU, more under load
def test_resnet50v2_params_equal_keras(keras_resnet50v2):
    ours = arch.resnet50v2(num_classes=2)
    keras_counts = flops.keras_param_counts(keras_resnet50v2)
    assert keras_counts == {"trainable": 23_523_458, "non_trainable": 45_440, "total": 23_568_898}
    assert flops.count_params(ours) == keras_counts["trainable"]
    assert flops.count_params(ours, include_bn_stats=True) == keras_counts["total"]
    net = models.build(ours)   # the live torch module counts the same as its spec
    assert flops.count_params(net) == keras_counts["trainable"]
    assert flops.count_params(net, include_bn_stats=True) == keras_counts["total"]


@pytest.mark.slow  # seconds on an idle 2-core CPU, more under load
def test_resnet50v2_flops_equal_keras_layout(keras_resnet50v2):
    # Same formula on the Keras model's own layer shapes: equal only if strides/paddings match Keras.
    assert flops.flop_count(arch.resnet50v2(input_size=240)) == flops.keras_flop_count(keras_resnet50v2)


def test_inception_v4_matches_reference_parameter_count():
    # timm / Cadene inception_v4 (1000 classes): 42,679,816 parameters ("42.68 M"), 12.3 GMACs at 299.
    assert flops.count_params(arch.inception_v4(num_classes=1000)) == 42_679_816
    assert flops.gflops(arch.inception_v4(num_classes=1000)) / 2 == pytest.approx(12.3, abs=0.05)
    assert flops.count_params(arch.inception_v4(num_classes=2)) == 42_679_816 - 1537 * 998


def test_inception_v4_layout_and_shapes():
    spec = arch.inception_v4()
    assert spec.blocks == (4, 1, 7, 1, 3)
    net = models.build(spec)
    names = dict(net.named_modules())
    assert "stages.0.3.branch2.2.conv" in names            # 4th Inception-A, third conv of branch 2
    assert "stages.4.2.branch2_3b.conv" in names
    assert net.out_channels == 1536
    with torch.device("meta"):
        feats = flops.meta_network(spec).features(torch.zeros(1, 3, 299, 299))
    assert tuple(feats.shape) == (1, 1536, 8, 8)


def test_small_cnns_match_the_papers_parameter_counts():
    # Bonnet 2024 Table 1 (Keras, one sigmoid output): B2 9.4 M, B6 2.4 M at 96 px.
    b2 = flops.count_params(arch.b2(num_classes=1), include_bn_stats=True)
    b6 = flops.count_params(arch.b6(num_classes=1), include_bn_stats=True)
    assert b2 == 2432 + 51264 + (24 * 24 * 64 * 256 + 256) + 257
    assert round(b2 / 1e6, 1) == 9.5 and abs(b2 / 1e6 - 9.4) < 0.1
    assert round(b6 / 1e6, 1) == 2.4
    assert flops.count_layers(arch.b2())["param_layers"] == 4
    assert flops.count_layers(arch.b6())["param_layers"] == 8


def test_resnet34_trunk():
    spec = arch.resnet34(num_classes=3, input_size=64)
    net = models.build(spec, seed=0)
    assert flops.count_params(arch.resnet34(num_classes=1000)) == 21_797_672   # torchvision resnet34
    x = torch.randn(2, 3, 64, 64)
    assert tuple(net.features(x).shape) == (2, 512, 2, 2)
    assert tuple(net(x).shape) == (2, 3)
    assert set(dict(net.features.named_children())) == {"stem", "stages", "post"}


def _slim(spec):
    """Same layout, a quarter of the channels: the block wiring is exercised at a fraction of the cost."""
    return arch.scale(spec, width=0.25, scale_stem=True)


@pytest.mark.parametrize("spec", [_slim(arch.resnet50v2(input_size=64)),
                                  _slim(arch.resnet50v2(input_size=64, stride_at="first")),
                                  _slim(arch.resnet34(input_size=64)), _slim(arch.inception_v4(input_size=107)),
                                  arch.b2(), arch.b6(),
                                  arch.tiny(input_size=32)], ids=lambda s: s.name)
@pytest.mark.slow  # seconds on an idle 2-core CPU, more under load
def test_every_network_runs_and_fx_traces(spec):
    net = models.build(spec, seed=0).eval()
    x = torch.randn(2, spec.in_channels, spec.input_size, spec.input_size)
    out = net(x)
    assert tuple(out.shape) == (2, spec.num_classes)
    traced = torch.fx.symbolic_trace(net)
    torch.testing.assert_close(traced(x), out)


def test_stable_module_names_for_resnet50v2():
    names = dict(models.build(arch.resnet50v2()).named_modules())
    for expected in ("stem.conv", "stages.0.0.conv1", "stages.0.0.shortcut", "stages.3.2.conv3", "post.bn", "head.fc"):
        assert expected in names
    assert isinstance(names["stages.0.0.shortcut"], torch.nn.Conv2d)
    assert isinstance(names["stages.0.2.shortcut"], torch.nn.MaxPool2d)   # Keras: stride on the last block


def test_build_is_seeded():
    a = models.build(arch.tiny(), seed=3).state_dict()
    b = models.build(arch.tiny(), seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_table_prints_like_table1():
    text = flops.compare_table([arch.resnet50v2()])
    assert "[1x1, 64 | 3x3, 64 | 1x1, 256] x 3" in text
    assert "23,568,898" in text and "240 x 240" in text


def test_str_of_a_spec_is_cheap_and_builds_no_network(monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("str(spec) built a network")

    monkeypatch.setattr(models, "build", no_build)
    text = str(arch.resnet50v2())
    assert text.startswith("resnet50v2: 240 x 240 x 3 input, 2 classes")
    assert "stage1: [1x1, 64 | 3x3, 64 | 1x1, 256] x 3" in text


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="s", block="nope", blocks=1, widths=(8,)), "unknown block type"),
    (dict(name="s", block="conv", blocks=0, widths=(8,)), "blocks must be"),
    (dict(name="s", block="conv", blocks=1, widths=(8, 8)), "takes 1 widths"),
    (dict(name="s", block="inception_a", blocks=1, widths=(0, 1, 1, 1, 1, 1, 1)), "widths must be integers >= 1"),
])
def test_bad_stage_is_rejected_with_its_name(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        arch.Stage(**kwargs)
    assert "'s'" in str(err.value)


def test_unknown_small_cnn_and_stride_option():
    with pytest.raises(ValueError, match="b2"):
        arch.spec("b7")
    with pytest.raises(ValueError, match="stride_at"):
        arch.resnet50v2(stride_at="middle")


def test_freeze_batchnorm_keeps_eval_outputs_and_ignores_train_mode():
    net = models.build(arch.resnet34(input_size=32), seed=0)
    for m in net.modules():                      # non-trivial statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 32, 32)
    expected = net.eval()(x)
    models.freeze_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(net.train()(x), expected, rtol=1e-4, atol=1e-5)   # train mode: same output
    assert "stem.bn.running_mean" in dict(net.named_buffers())
    assert "stem.bn.weight" in dict(net.named_parameters())   # the affine terms still train
