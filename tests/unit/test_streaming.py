"""Streaming SGD: tile geometry, exact equivalence with conventional training, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from histolean.study import plots
from histolean import streaming as st
from histolean.data import mosaics

F64_ABS = 1e-10  # the tolerance for float64
F32_REL = 1e-4   # and for float32


# ----------------------------------------------------------------- networks


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 convolutions + identity / 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else None)

    def forward(self, x):
        shortcut = x if self.down is None else self.down(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + shortcut)


def resnet34_trunk(width: int = 2, seed: int = 0) -> nn.Sequential:
    """The full ResNet-34 convolutional trunk (stem + [3, 4, 6, 3] basic blocks, output stride 32)
    at a reduced width so float64 tests stay fast; BN statistics randomised, then frozen."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = width
    for stage, blocks in enumerate([3, 4, 6, 3]):
        cout = width * 2 ** stage
        for b in range(blocks):
            layers.append(BasicBlock(cin, cout, 2 if (b == 0 and stage > 0) else 1))
            cin = cout
    trunk = nn.Sequential(*layers)
    with torch.no_grad():
        for m in trunk.modules():
            if isinstance(m, nn.BatchNorm2d):  # like a trained network, not the identity
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.3, 0.8)
                m.bias.uniform_(-0.1, 0.1)
    return st.freeze_batchnorm(trunk)


def odd_trunk() -> nn.Sequential:
    """Strides, dilation, asymmetric kernels, padded/ceil-mode pools, average pooling."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 6, (5, 3), stride=(2, 1), padding=(2, 1)), nn.LeakyReLU(0.1),
        nn.Conv2d(6, 6, 3, padding=2, dilation=2), nn.GELU(),
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(6, 8, 3, stride=1, padding=0), nn.SiLU(),
        nn.AvgPool2d(2, ceil_mode=True),
    )


def _net_pair(name: str):
    if name == "imagenette":
        torch.manual_seed(0)
        return st.imagenette_network(num_classes=10)  # Table 1, first four blocks streamed
    trunk = resnet34_trunk()
    return trunk, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))


# ----------------------------------------------------------------- geometry


def test_imagenette_geometry_by_hand():
    trunk, _ = st.imagenette_network()
    g = st.trunk_geometry(trunk)
    # four (3x3 conv, 2x2 pool) blocks: field 1+2 ->4 ->8 ->10 ->18 ->22 ->38 ->46, stride 16
    assert g.h == g.w == st.Axis(stride=16, pad=15, field=46)
    assert g.h.overlap == (15, 15)


@pytest.mark.parametrize("make", [lambda: st.imagenette_network()[0], odd_trunk, resnet34_trunk],
                         ids=["imagenette", "odd", "resnet34"])
def test_analytic_geometry_matches_backward_probe(make):
    """The paper's method (averaging kernels, gradients of single outputs) measures what we derive."""
    trunk = make()
    size = 1024 if isinstance(trunk[-1], BasicBlock) else 192
    assert st.probe_geometry(trunk, size) == st.trunk_geometry(trunk)


@pytest.mark.parametrize("tile", [96, 128, 200])
def test_border_effect_matches_analytic(tile):
    """Forward probe with an all-ones tile: the border rows it finds are the ones the geometry predicts."""
    for trunk in (st.imagenette_network()[0], odd_trunk()):
        g = st.trunk_geometry(trunk)
        found = st.probe_border_effect(trunk, tile)
        for side_a, side_b, axis, n_out in (("top", "bottom", g.h, found["out_h"]),
                                            ("left", "right", g.w, found["out_w"])):
            first_clean = -(-axis.pad // axis.stride)  # first j with j*stride - pad >= 0
            last_clean = (tile - axis.field + axis.pad) // axis.stride  # last j inside the tile
            assert found[side_a] == first_clean
            assert found[side_b] == n_out - 1 - last_clean


def test_tiles_cover_output_once_and_crops_are_strictly_smaller():
    trunk, _ = st.imagenette_network()
    s = st.StreamingTrunk(trunk, 32)
    h, w = 160, 144
    covered = torch.zeros(s.output_size(h, w), dtype=torch.int64)
    for t in s.tiles(h, w):
        covered[t.out] += 1
        assert t.crop[0].stop - t.crop[0].start <= s.crop_size[0] < h
    assert torch.all(covered == 1)


# -------------------------------------------------------------- equivalence


@pytest.mark.parametrize("name,shape,tile", [("imagenette", (2, 3, 128, 128), 64),
                                             ("resnet34", (1, 3, 1024, 48), 256)])
def test_float64_equivalence(name, shape, tile):
    trunk, head = _net_pair(name)
    trunk.double(), head.double()
    s = st.StreamingTrunk(trunk, tile)
    assert len(s.tiles(*shape[2:])) >= 4  # really tiled, with interior tile borders
    torch.manual_seed(2)
    x = torch.randn(*shape, dtype=torch.float64)
    target = torch.randint(0, 3, (shape[0],))
    d = st.check_equivalence(trunk, head, x, target, tile)
    assert d["output_abs"] <= F64_ABS, d
    assert d["input_grad_abs"] <= F64_ABS, d
    assert d["weight_grad_abs"] <= F64_ABS, d


@pytest.mark.parametrize("name,shape,tile", [("imagenette", (1, 3, 96, 96), 32),
                                             ("resnet34", (1, 3, 1024, 64), 256)])
def test_float32_equivalence(name, shape, tile):
    trunk, head = _net_pair(name)
    torch.manual_seed(3)
    x = torch.rand(*shape)
    d = st.check_equivalence(trunk, head, x, torch.randint(0, 3, (shape[0],)), tile)
    assert d["output_rel"] <= F32_REL, d
    assert d["input_grad_rel"] <= F32_REL, d
    assert d["weight_grad_rel"] <= F32_REL, d


@pytest.mark.parametrize("hw,tile", [((97, 131), 32), ((64, 77), 16), ((33, 40), 64)])
def test_odd_sizes_and_borders(hw, tile):
    """Image sizes that are not multiples of the stride, ceil-mode pools, tiles larger than the image."""
    trunk = odd_trunk().double()
    x = torch.randn(1, 3, *hw, dtype=torch.float64)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).double()
    d = st.check_equivalence(trunk, head, x, torch.tensor([1]), tile)
    assert max(d["output_abs"], d["input_grad_abs"], d["weight_grad_abs"]) <= F64_ABS, d


def test_plain_backward_accumulates_weight_grads_exactly_once():
    trunk, head = st.imagenette_network(num_classes=2)
    trunk.double(), head.double()
    model = nn.Sequential(st.StreamingTrunk(trunk, 64), head)
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64)
    F.cross_entropy(model(x), torch.tensor([1])).backward()
    once = [p.grad.clone() for p in model.parameters()]
    F.cross_entropy(model(x), torch.tensor([1])).backward()
    for g1, p in zip(once, model.parameters()):
        torch.testing.assert_close(p.grad, 2 * g1, rtol=0, atol=1e-12)


def test_skipping_zero_gradient_tiles_is_exact_and_skips():
    """A global max-pool head sends gradient to few positions: fewer recomputed tiles, same grads."""
    torch.manual_seed(4)
    trunk, head = st.imagenette_network(num_classes=2, channels=(4, 4, 4, 4, 4))
    trunk.double(), head.double()
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64)
    grads, counts = [], []
    for skip in (False, True):
        s = st.StreamingTrunk(trunk, 32, skip_zero_gradient_tiles=skip)
        trunk.zero_grad(set_to_none=True)
        F.cross_entropy(head(s(x)), torch.tensor([0])).backward()
        grads.append([p.grad.clone() for p in trunk.parameters()])
        counts.append(s.tiles_processed)
    assert counts[1] < counts[0]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_inference_needs_no_graph():
    trunk, _ = st.imagenette_network()
    s = st.StreamingTrunk(trunk, 32)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        y = s(x)
        ref = trunk(x)
    assert y.grad_fn is None
    assert float((y - ref).abs().max() / ref.abs().max()) <= F32_REL


def test_frozen_batchnorm_stays_frozen_and_matches_eval_mode():
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.5]))
    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), bn)
    x = torch.randn(1, 3, 8, 8)
    ref = net.eval()(x)
    st.freeze_batchnorm(net).train()
    assert isinstance(net[1], st.FrozenBatchNorm2d)
    torch.testing.assert_close(net(x), ref)
    st.StreamingTrunk(net, 4)(x)  # no "training mode" error after .train()


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize("layer,words", [
    (nn.Upsample(scale_factor=2), "upsampling"),
    (nn.AdaptiveAvgPool2d(1), "global"),
    (nn.GroupNorm(2, 4), "statistics"),
    (nn.Flatten(), "flatten"),
])
def test_non_local_layers_are_named(layer, words):
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), layer)
    with pytest.raises(st.NonLocalLayerError, match=rf"'2'.*{type(layer).__name__}.*{words}"):
        st.StreamingTrunk(trunk, 16)


def test_batchnorm_in_training_mode_is_named():
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
    s = st.StreamingTrunk(trunk, 16)
    with pytest.raises(st.NonLocalLayerError, match=r"'1' \(BatchNorm2d\) is in training mode"):
        s(torch.rand(1, 3, 32, 32))
    trunk[1].eval()
    assert s(torch.rand(1, 3, 32, 32)).shape == (1, 4, 32, 32)


def test_active_dropout_and_unknown_ops_are_refused():
    s = st.StreamingTrunk(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5)), 16)
    with pytest.raises(st.NonLocalLayerError, match="Dropout"):
        s(torch.rand(1, 3, 32, 32))

    class Flip(nn.Module):
        def forward(self, x):
            return torch.flip(x, dims=[2])

    with pytest.raises(st.NonLocalLayerError, match="flip"):
        st.StreamingTrunk(nn.Sequential(nn.Conv2d(3, 4, 3), Flip()), 16)


def test_bad_tile_size_and_input_shape():
    trunk, _ = st.imagenette_network()
    with pytest.raises(ValueError, match="multiple of the trunk's output stride.*16"):
        st.StreamingTrunk(trunk, 40)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        st.StreamingTrunk(trunk, 32)(torch.rand(3, 64, 64))


# ------------------------------------------------------------- experiment helpers


def test_patch_mosaics_place_labelled_patches():
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(40) % 2
    x, y, layout = mosaics.patch_mosaics(patches, labels, 10, 3, seed=1, max_tumour=4)
    assert x.shape == (10, 24, 24, 3) and sorted(set(y.tolist())) == [0, 1]
    for img, label, lay in zip(x, y, layout):
        assert (lay.sum() > 0) == bool(label) and lay.sum() <= 4
        for r in range(3):
            for c in range(3):
                cell = img[8 * r:8 * r + 8, 8 * c:8 * c + 8]
                match = np.flatnonzero((patches == cell).all(axis=(1, 2, 3)))
                assert len(match) and labels[match[0]] == int(lay[r, c])


def test_saliency_is_the_conventional_input_gradient():
    torch.manual_seed(5)
    trunk, head = st.imagenette_network(num_classes=2, channels=(4, 4, 8, 8, 8), streamed_blocks=5)
    trunk.double(), head.double()
    x = torch.randn(1, 3, 96, 96, dtype=torch.float64)
    streamed = st.saliency(nn.Sequential(st.StreamingTrunk(trunk, 32), head), x)
    xr = x.clone().requires_grad_(True)
    nn.Sequential(trunk, head)(xr)[:, 1].sum().backward()
    np.testing.assert_allclose(streamed, xr.grad.abs().amax(1).numpy(), rtol=0, atol=1e-12)
    assert all(p.requires_grad for p in trunk.parameters())  # restored
    overlay = plots.saliency_overlay(streamed[0], sigma=2)
    assert np.nanmax(overlay) == pytest.approx(1.0) and np.isnan(overlay).mean() == pytest.approx(0.5, abs=0.05)


# ------------------------------------------------------------- inputs kept off the compute device


def _grads_from(trunk, head, x, target):
    trunk.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    feats = st.StreamingTrunk(trunk, 32)(x)
    F.cross_entropy(head(feats), target).backward()
    return feats.detach(), [p.grad.clone() for p in list(trunk.parameters()) + list(head.parameters())]


def test_input_read_tile_by_tile_gives_the_same_gradients(tmp_path):
    """A memmap, a region reader and a full tensor: same trunk output and weight gradients (float64)."""
    torch.manual_seed(6)
    trunk, head = st.imagenette_network(num_classes=2, channels=(4, 4, 8, 8, 8), streamed_blocks=4)
    trunk.double(), head.double()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 96, 112, 3), dtype=np.uint8)
    mapped = np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="w+", shape=pixels.shape)
    mapped[:] = pixels
    mapped.flush()
    memmap = st.ArraySource(np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="r", shape=pixels.shape),
                            dtype=torch.float64)
    full = memmap.to_tensor()
    expected = (torch.from_numpy(pixels).permute(0, 3, 1, 2).double() / 255 - 0.5) / 0.5
    assert memmap.shape == (2, 3, 96, 112) and torch.equal(full, expected)
    target = torch.tensor([0, 1])
    ref_out, ref_grads = _grads_from(trunk, head, full, target)
    for source in (memmap, st.ArraySource(pixels, dtype=torch.float64)):
        out, grads = _grads_from(trunk, head, source, target)
        assert float((out - ref_out).abs().max()) <= 1e-10
        assert max(float((a - b).abs().max()) for a, b in zip(grads, ref_grads)) <= 1e-10
    region = st.RegionSource(lambda x, y, w, h: pixels[1, y:y + h, x:x + w], 96, 112, dtype=torch.float64)
    one_out, one_grads = _grads_from(trunk, head, region, target[1:])
    ref_one, ref_one_grads = _grads_from(trunk, head, full[1:], target[1:])
    assert float((one_out - ref_one).abs().max()) <= 1e-10
    assert max(float((a - b).abs().max()) for a, b in zip(one_grads, ref_one_grads)) <= 1e-10


def test_a_slide_region_streams_through_openslide(real_data):
    from histolean import wsi

    path = real_data / "wsi" / "CMU-1-Small-Region.svs"
    slide = wsi.open_slide(path)
    source = st.slide_source(slide, location=(100, 200), size=(130, 90))
    assert source.shape == (1, 3, 90, 130)
    expected = slide.read_region((100, 200), 0, (130, 90))
    np.testing.assert_allclose(source.to_tensor()[0].permute(1, 2, 0).numpy(), (expected / 255 - 0.5) / 0.5,
                               atol=1e-6)
    trunk, _ = st.imagenette_network(channels=(4, 4, 4, 4, 4), streamed_blocks=2)
    with torch.no_grad():
        streamed = st.StreamingTrunk(trunk, 32)(source)
        torch.testing.assert_close(streamed, trunk(source.to_tensor()), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="level 3 does not exist"):
        st.slide_source(slide, level=3)
