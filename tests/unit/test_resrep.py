"""ResRep: channel graph, compactors, penalised gradients, mask schedule and exact conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from histolean import arch, flops, models, resrep, train
from histolean.methods.resrep import UnprunableModelError

ATOL = 1e-4


# ------------------------------------------------------------------------------------------------
# Small test networks: one per kind of channel dependency
# ------------------------------------------------------------------------------------------------

def cbr(cin, cout, k=3, **kw):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU())


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(cbr(3, 8), nn.MaxPool2d(2), cbr(8, 12))
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(x), 1), 1))


class Residual(nn.Module):
    """Post-activation residual: the stem conv and conv2 of both blocks are tied by the additions."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.a1, self.a2 = cbr(8, 6), nn.Sequential(nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.b1, self.b2 = cbr(8, 6), nn.Sequential(nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a2(self.a1(x)))
        x = torch.relu(self.b2(self.b1(x)) + x)
        return self.fc(x.mean((2, 3)))


class PreAct(nn.Module):
    """Pre-activation block (ResNet v2): removed stream channels reach consumers as BN constants."""

    def __init__(self, consumer_kernel: int = 1):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 6, consumer_kernel, padding=consumer_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 1)
        self.post = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        out = self.conv2(torch.relu(self.bn1(self.conv1(torch.relu(self.bn(x))))))
        x = x + out
        return self.fc(torch.relu(self.post(x)).mean((2, 3)))


class Concat(nn.Module):
    """Inception-like: two branches concatenated, one through an average pool, then a consumer."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.b0 = cbr(8, 4, 1)
        self.b1 = nn.Sequential(cbr(8, 5, 1), cbr(5, 6))
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.b2 = cbr(8, 3, 1)
        self.mix = cbr(13, 10)
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.b0(x), self.b1(x), self.b2(self.pool(x))], 1)
        return self.fc(nn.functional.adaptive_avg_pool2d(self.mix(x), 1).flatten(1))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.pw = cbr(8, 10, 1)
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        return self.fc(self.pw(self.dw(self.stem(x))).mean((2, 3)))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.grouped = cbr(8, 8, groups=2)
        self.last = cbr(8, 6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.last(self.grouped(self.stem(x))).mean((2, 3)))


class FlattenHead(nn.Module):
    """Conv -> ReLU -> BN (BN after the activation), valid convs, flatten of a 4x4 map into a dense layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 5, 3)
        self.fc = nn.Linear(5 * 4 * 4, 2)

    def forward(self, x):
        x = self.bn1(torch.relu(self.conv1(x)))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class ChannelShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        n, c, h, w = x.shape
        x = self.stem(x).view(n, 2, c * 8 // 6, h, w).transpose(1, 2).reshape(n, 8, h, w)
        return self.fc(x.mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.gate = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        x = x * torch.sigmoid(self.gate(x.mean((2, 3), keepdim=True)))
        return self.fc(x.mean((2, 3)))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else -self.conv(x)


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def randomise(net: resrep.ResRepNet, seed: int = 0) -> None:
    """Non-trivial BN statistics and compactors, so that fusing and folding are really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(1.0 + torch.rand(c, generator=g))
            m.weight.copy_(0.6 + 0.4 * torch.rand(c, generator=g))
            m.bias.copy_(0.5 * (torch.rand(c, generator=g) - 0.5))
    for _, comp in net.compactors():
        comp.weight.add_(0.05 * torch.randn(comp.weight.shape, generator=g))


@torch.no_grad()
def mask_random_and_zero(net: resrep.ResRepNet, fraction: float, seed: int = 0) -> np.ndarray:
    """Mask random classes until FLOPs <= fraction, then zero their compactor rows (what training converges to)."""
    rng = np.random.default_rng(seed)
    scores = rng.random(net.channels.n_classes)
    dropped = net.flops_model.select(scores, flops_target=fraction)
    net.set_masks(dropped)
    for _, comp in net.compactors():
        comp.weight[comp.mask == 0] = 0.0
    return dropped


def check_conversion(model: nn.Module, size: int, fraction: float = 0.5, batch: int = 2, seed: int = 0):
    net = resrep.prepare(model.eval(), size, copy_model=False)  # shares (and randomises) model's BN: fine here
    randomise(net, seed)
    dropped = mask_random_and_zero(net, fraction, seed)
    assert dropped.any(), "the test must actually remove channels"
    net.eval()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    converted = resrep.convert(net)
    with torch.no_grad():
        expected, got = net(x), converted.module.eval()(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=ATOL, rtol=0), f"max diff {(got - expected).abs().max():.3g}"
    assert converted.predicted_flops == flops.flop_count(converted.module, size)
    assert converted.predicted_flops == net.predicted_flops()
    assert converted.predicted_flops < net.original_flops == flops.flop_count(model, size)
    assert flops.count_params(converted.module) < flops.count_params(model)
    assert not any(isinstance(m, resrep.Compactor) for m in converted.module.modules())
    return net, converted


# ------------------------------------------------------------------------------------------------
# Channel graph
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [Plain, Residual, Concat, Depthwise, Grouped, FlattenHead])
def test_conversion_is_exact_on_small_networks(cls):
    check_conversion(cls(), 12 if cls is FlattenHead else 16)


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"FlattenHead: the forward pass on an input of shape \(1, 3, 16, 16\)"):
        resrep.prepare(FlattenHead(), 16)


def test_residual_additions_tie_channels():
    net = resrep.prepare(Residual(), 16)
    g = net.channels
    layer = {lay.name: lay for lay in g.layers}
    stem, a2, b2 = (g.slot_class[layer[n].out_slots] for n in ("stem.0", "a2.0", "b2.0"))
    assert (stem == a2).all() and (stem == b2).all()
    assert len(set(g.slot_class[layer["a1.0"].out_slots]) & set(stem)) == 0
    net.set_masks(np.isin(np.arange(g.n_classes), stem[:3]))
    for lay, comp in net.compactors():
        if lay.name in ("stem.0", "a2.0", "b2.0"):
            assert comp.mask.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]


def test_preact_constants_fold_into_1x1_consumers_but_pin_before_padded_ones():
    net, converted = check_conversion(PreAct(consumer_kernel=1), 12, fraction=0.6)
    assert converted.widths["stem"][1] < 8, "stream channels are prunable when consumers are 1x1"
    net3 = resrep.prepare(PreAct(consumer_kernel=3), 12)
    stem = net3.channels.slot_class[net3.channels.layers[0].out_slots]
    assert net3.channels.class_pinned[stem].all()
    assert "zero-padded conv 'conv1'" in net3.channels.reasons[int(stem[0])]
    check_conversion(PreAct(consumer_kernel=3), 12, fraction=0.9)


def test_depthwise_follows_its_input_and_grouped_convs_are_kept():
    _, converted = check_conversion(Depthwise(), 16)
    cin, cout = converted.widths["dw.0"]
    assert cin == cout == converted.widths["stem.0"][1] < 8
    assert converted.module.get_submodule("dw.0").groups == cout
    net = resrep.prepare(Grouped(), 16)
    pinned = {lay.name for lay in net.channels.layers if lay.out_slots is not None
              and net.channels.class_pinned[net.channels.slot_class[lay.out_slots]].all()}
    assert pinned == {"stem.0"}  # it feeds the grouped conv; the grouped conv itself has no slots
    assert [lay.name for lay in net.pruned_layers] == ["last.0"]


def test_model_output_channels_are_kept():
    model = nn.Sequential(cbr(3, 4), nn.Conv2d(4, 3, 1))  # a segmentation-like head: logits per pixel
    net = resrep.prepare(model, 8)
    assert [lay.name for lay in net.pruned_layers] == ["0.0"]


@pytest.mark.parametrize("cls, op, convs", [(ChannelShuffle, "view", ["stem.0"]),
                                            (SqueezeExcite, "mul", ["stem.0", "gate"])])
def test_unknown_operations_raise_an_error_naming_them(cls, op, convs):
    with pytest.raises(UnprunableModelError, match=op) as err:
        resrep.prepare(cls(), 8)
    assert all(repr(c) in str(err.value) for c in convs) and "exclude" in str(err.value)
    net = resrep.prepare(cls(), 8, exclude=convs)  # the named escape hatch works
    assert net.pruned_layers == []


def test_exclude_must_name_convolutions():
    with pytest.raises(ValueError, match=r"exclude names \['fc'\] are not Conv2d modules"):
        resrep.prepare(Plain(), 16, exclude=["fc"])
    net = resrep.prepare(Plain(), 16, exclude=["body.0.0"])
    assert [lay.name for lay in net.pruned_layers] == ["body.2.0"]


def test_untraceable_model_raises():
    with pytest.raises(UnprunableModelError, match="DataDependent: torch.fx cannot trace"):
        resrep.prepare(DataDependent(), 8)


def test_prepare_does_not_touch_the_original_model():
    model = Plain()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = resrep.prepare(model, 16)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------------
# Remembering: gradient resetting, masks, optimisers
# ------------------------------------------------------------------------------------------------

def test_penalised_gradient_formula():
    net = resrep.prepare(Plain(), 16)
    randomise(net)
    dropped = mask_random_and_zero(net, 0.7)
    for _, comp in net.compactors():  # give masked rows a non-zero weight again
        comp.weight.data.add_(0.1)
    loss = net(torch.randn(2, 3, 16, 16)).square().sum()
    loss.backward()
    raw = {id(c): c.weight.grad.clone() for _, c in net.compactors()}
    lam, eps = 0.3, 1e-8
    resrep.penalised_gradients(net, lam, eps)
    for _, comp in net.compactors():
        w = comp.weight.detach().flatten(1)
        penalty = lam * w / torch.sqrt((w * w).sum(1, keepdim=True) + eps)
        expected = raw[id(comp)].flatten(1) * comp.mask[:, None] + penalty
        assert torch.allclose(comp.weight.grad.flatten(1), expected, atol=1e-7)
        masked = comp.mask == 0
        if masked.any():
            assert torch.allclose(comp.weight.grad.flatten(1)[masked], penalty[masked])
    assert dropped.any()


def test_masks_meet_the_flops_target_with_a_minimum_per_layer():
    net = resrep.prepare(Concat(), 16)
    for target in (0.8, 0.5, 0.2):
        dropped = resrep.update_masks(net, target, min_channels=2)
        ratio = net.predicted_flops() / net.original_flops
        _, n_out = net.flops_model.counts(dropped)
        kept = [n_out[i] for i, lay in enumerate(net.channels.layers) if lay.out_slots is not None]
        assert min(kept) >= 2
        assert ratio <= target or min(kept) == 2, (target, ratio)
    # masks are recomputed from the norms each time: shrink other rows and the ranking follows
    first = resrep.update_masks(net, 0.6)
    with torch.no_grad():
        for _, comp in net.compactors():
            comp.weight.mul_(torch.where(comp.mask.bool(), 0.01, 10.0).view(-1, 1, 1, 1))
    second = resrep.update_masks(net, 0.6)
    assert not np.array_equal(first, second)


def test_masked_rows_follow_the_smallest_norms():
    net = resrep.prepare(Plain(), 16)
    with torch.no_grad():
        for _, comp in net.compactors():
            comp.weight.mul_(torch.linspace(0.1, 1.0, comp.weight.shape[0]).view(-1, 1, 1, 1))
    resrep.update_masks(net, 0.7)
    norms, masked = net.row_norms()
    assert masked.any() and norms[masked].max() <= norms[~masked].min() + 1e-6


def test_epsilon_threshold_removes_rows_below_it():
    net = resrep.prepare(Plain(), 16)
    with torch.no_grad():
        for _, comp in net.compactors():
            comp.weight.mul_(torch.linspace(0.5, 1.0, comp.weight.shape[0]).view(-1, 1, 1, 1))
    scores = net.class_scores()
    with pytest.warns(resrep.InexactConversionWarning, match="mode 'epsilon'"):  # the rows were not zero
        converted = resrep.convert(net, epsilon=0.9)
    assert converted.report.threshold == 0.9 and 0.5 < converted.report.max_removed_norm < 0.9
    removed = resrep.removed_classes(net, epsilon=0.9)
    assert (scores[removed] < 0.9).all() and (scores[~removed] >= 0.9).all()
    assert converted.predicted_flops == flops.flop_count(converted.module, 16) == net.predicted_flops(removed)
    assert resrep.removed_classes(net, epsilon=0.95).sum() > removed.sum()


def test_optimizer_settings():
    net = resrep.prepare(Plain(), 16)
    sgd = resrep.make_optimizer(net, "resrep")
    assert isinstance(sgd, torch.optim.SGD)
    network, compactors = sgd.param_groups
    assert compactors["momentum"] == 0.99 and compactors["weight_decay"] == 0.0
    assert network["momentum"] == 0.9 and network["weight_decay"] == 1e-4
    assert {id(p) for p in compactors["params"]} == {id(c.weight) for _, c in net.compactors()}
    adam = resrep.make_optimizer(net, "nar")
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 5e-4
    assert adam.param_groups[0]["weight_decay"] == 5e-4 and adam.param_groups[1]["weight_decay"] == 0.0
    assert resrep.fit_settings("nar") == {"schedule": "step", "step_size": 5, "gamma": 0.5}
    with pytest.raises(ValueError, match="unknown ResRep optimiser setting"):
        resrep.make_optimizer(net, "rmsprop")


def test_training_step_shrinks_masked_rows_by_exactly_the_penalty():
    """Generated data (a brightness rule). Without momentum a masked row moves only along -F/||F||:
    its norm falls by lr * lambda per step and its direction is kept; kept rows also learn the task."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 3, 16, 16, generator=g)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    net = resrep.prepare(Plain(), 16)
    lam, lr, epochs = 0.05, 0.5, 4
    schedule = resrep.ResRepSchedule(net, flops_target=0.5, lasso_strength=lam, warmup_steps=0, mask_interval=10_000,
                                     granularity=None)
    opt = resrep.make_optimizer(net, "resrep", lr=lr, momentum=0.0, compactor_momentum=0.0)
    train.fit(net, loader, epochs=epochs, optimizer=opt, after_backward=schedule, progress=False, device="cpu")
    steps = epochs * len(loader)
    assert len(schedule.log) == 1 and schedule.log[0]["flops_ratio"] <= 0.5
    norms, masked = net.row_norms()
    assert masked.any() and (~masked).any()
    np.testing.assert_allclose(norms[masked], 1.0 - steps * lr * lam, atol=1e-5)
    for _, comp in net.compactors():  # masked rows still point along their identity row
        rows = comp.weight.detach().flatten(1)[comp.mask == 0]
        assert torch.allclose(rows / rows.norm(dim=1, keepdim=True), torch.eye(len(comp.mask))[comp.mask == 0],
                              atol=1e-6)
    assert np.abs(norms[~masked] - (1.0 - steps * lr * lam)).max() > 1e-3


def test_remember_runs_the_whole_phase_and_keeps_the_last_epoch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 3, 16, 16, generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x.mean((1, 2, 3)) > 0.5).long()),
                                         batch_size=8)
    run = resrep.remember(Plain(), loader, input_size=16, epochs=2, flops_target=0.6, warmup_epochs=0.5,
                          mask_interval=2, granularity=None, lasso_strength=1e-3, device="cpu", progress=False,
                          lr=1e-3, compactor_lr=0.05)
    assert [e["step"] for e in run.schedule.log] == [2, 4, 6]
    assert run.fit.best_epoch == 2 and len(run.fit.history) == 2
    assert run.net.predicted_flops() <= 0.6 * run.net.original_flops
    with pytest.raises(ValueError, match="unknown optimiser override"):
        resrep.remember(Plain(), loader, input_size=16, epochs=1, flops_target=0.6, momentun=0.9)


# ------------------------------------------------------------------------------------------------
# The study's architectures (a few seconds each: small inputs, batch 2)
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_resnet50v2_conversion_is_exact():
    model = models.build(arch.resnet50v2(input_size=48), seed=0)
    net, converted = check_conversion(model, 48, fraction=0.6)
    stream = [lay for lay in net.pruned_layers if lay.name.endswith("conv3") or lay.name.endswith("shortcut")]
    assert stream, "residual-stream convs get compactors (tied by the additions)"
    assert net.summary()["pinned_classes"] == 0


@pytest.mark.slow
def test_inception_v4_conversion_is_exact():
    model = models.build(arch.inception_v4(input_size=75), seed=0)  # 75 px: the smallest it accepts
    net, converted = check_conversion(model, 75, fraction=0.6, batch=1)
    assert net.summary()["pinned_classes"] == 0  # concatenations need no pinning
    assert sum(lay.name.startswith("stages.0") for lay in net.pruned_layers) > 0


# ------------------------------------------------------------------------------------------------
# Arithmetic with numbers: operand order and zero factors
# ------------------------------------------------------------------------------------------------

class Arithmetic(nn.Module):
    """conv + BN (compactor after the BN), an arithmetic op with a number, then a 1x1 consumer."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.head = cbr(8, 6, 1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.head(self.op(self.stem(x))).mean((2, 3)))


ARITHMETIC = {
    "1 - x": lambda x: 1 - x,
    "x - 1": lambda x: x - 1,
    "(x + 2) * 0": lambda x: (x + 2) * 0,
    "0.0 * (x + 2)": lambda x: 0.0 * (x + 2),
    "2 * (x + 1)": lambda x: 2 * (x + 1),
    "(x + 1) / 4": lambda x: (x + 1) / 4,
    "3 - 2 * x": lambda x: 3 - 2 * x,
    "torch.rsub(x, 1)": lambda x: torch.rsub(x, 1),
    "torch.sub(x, 1.5, alpha=2)": lambda x: torch.sub(x, 1.5, alpha=2),
    "x.sub(1, alpha=3)": lambda x: x.sub(1, alpha=3),
    "(x + 1).div(2)": lambda x: (x + 1).div(2),
}


@pytest.mark.parametrize("name", list(ARITHMETIC))
def test_arithmetic_with_numbers_converts_exactly(name):
    model = Arithmetic(ARITHMETIC[name]).eval()
    net = resrep.prepare(model, 8, copy_model=False)
    randomise(net)
    dropped = mask_random_and_zero(net, 0.5)
    assert dropped.any()
    net.eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    converted = resrep.convert(net)
    assert converted.widths["stem.0"][1] < 8, "the stem's channels must really be removed"
    with torch.no_grad():
        expected, got = net(x), converted.module.eval()(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), f"{name}: max diff {(got - expected).abs().max():.3g}"


@pytest.mark.parametrize("op", [lambda x: 2 / x, lambda x: torch.div(2.0, x + 1), lambda x: 1 / (x + 1)])
def test_number_divided_by_channels_is_a_clear_error(op):
    with pytest.raises(UnprunableModelError, match=r"divided by.*'stem\.0'.*exclude"):
        resrep.prepare(Arithmetic(op), 8)
    net = resrep.prepare(Arithmetic(op), 8, exclude=["stem.0"])  # the named escape hatch works
    assert [lay.name for lay in net.pruned_layers] == ["head.0"]


def test_number_from_the_graph_keeps_the_channels():
    """A factor only known at run time (here a tensor constant) cannot be folded: the channels are kept."""

    class RuntimeFactor(Arithmetic):
        def __init__(self):
            super().__init__(None)
            self.register_buffer("factor", torch.tensor(3.0))

        def forward(self, x):
            return self.fc(self.head((self.stem(x) + 1) * self.factor).mean((2, 3)))

    net = resrep.prepare(RuntimeFactor(), 8)
    assert [lay.name for lay in net.pruned_layers] == ["head.0"]
    check_conversion(RuntimeFactor(), 8)


def test_convert_does_not_touch_the_global_random_state():
    net = resrep.prepare(Plain(), 16)
    mask_random_and_zero(net, 0.5)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    converted = resrep.convert(net)
    assert converted.module.get_submodule("fc").in_features < 12
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------------------------
# As Ding et al.'s code runs it: progressive masks, pruning scope, conversion report, defaults
# ------------------------------------------------------------------------------------------------

def test_masked_count_grows_by_at_most_the_granularity_per_update():
    net = resrep.prepare(Concat(), 16)
    schedule = resrep.ResRepSchedule(net, flops_target=0.4, warmup_steps=2, mask_interval=3, granularity=3)
    rng = np.random.default_rng(0)
    for step in range(60):
        with torch.no_grad():  # the penalty separates the norms over time; here: random shrinking
            for _, comp in net.compactors():
                comp.weight.mul_(torch.as_tensor(rng.uniform(0.9, 1.0, comp.weight.shape[0]),
                                                 dtype=comp.weight.dtype).view(-1, 1, 1, 1))
        schedule(net, step)
    counts = [0] + [e["masked"] for e in schedule.log]
    assert [e["step"] for e in schedule.log] == list(range(2, 60, 3))
    assert max(np.diff(counts)) <= 3 and counts[1] == 3, counts
    assert schedule.log[-1]["flops_ratio"] <= 0.4, "the target is reached after enough updates"
    ratios = [e["flops_ratio"] for e in schedule.log]
    assert ratios[0] > ratios[3] > 0.4 >= ratios[-1]
    everything = resrep.update_masks(resrep.prepare(Concat(), 16), 0.4, granularity=None)
    assert net.predicted_flops(everything) <= 0.4 * net.original_flops  # None: all at the first update
    with pytest.raises(ValueError, match="granularity must be >= 1"):
        resrep.ResRepSchedule(net, flops_target=0.4, granularity=0)


@pytest.mark.slow
def test_bottleneck_scope_prunes_only_the_internal_convs_of_resnet50v2():
    spec = arch.resnet50v2(input_size=32)
    model = models.build(spec, seed=0)
    assert resrep.paper_scope(spec) == "bottleneck" and resrep.paper_scope(arch.inception_v4()) == "any"
    net = resrep.prepare(model, 32, scope="bottleneck")
    assert net.scope == "bottleneck" == net.summary()["scope"]
    names = [lay.name for lay in net.pruned_layers]
    assert len(names) == 2 * 16 and all(n.endswith((".conv1", ".conv2")) for n in names)
    dropped = resrep.update_masks(net, 0.5, granularity=None)  # mask as much as the target needs
    assert dropped.any()
    g = net.channels
    for layer in g.layers:
        if layer.out_slots is None:
            continue
        classes = g.slot_class[layer.out_slots]
        if layer.name.endswith((".conv1", ".conv2")):
            assert not g.class_pinned[classes].any()
        else:  # stem, conv3, shortcut: the residual stream and the stem are never masked
            assert g.class_pinned[classes].all() and not dropped[classes].any(), layer.name
    reasons = set(g.reasons.values())
    assert any("outside the residual blocks" in r for r in reasons)
    assert any("feeds the residual stream" in r for r in reasons)
    anywhere = resrep.prepare(model, 32)  # "any": the stream (tied by the additions) is prunable too
    assert any(lay.name.endswith(".conv3") for lay in anywhere.pruned_layers)
    with pytest.raises(ValueError, match="adds no two feature maps"):
        resrep.prepare(Plain(), 16, scope="bottleneck")
    with pytest.raises(ValueError, match="scope must be one of"):
        resrep.prepare(Plain(), 16, scope="stream")


def test_conversion_of_rows_that_have_not_collapsed_reports_the_difference():
    net = resrep.prepare(Plain(), 16)
    randomise(net)
    net.eval()
    masked = resrep.update_masks(net, 0.6, granularity=None)  # masked, but rows still near norm 1
    assert masked.any()
    with pytest.warns(resrep.InexactConversionWarning, match="not exact"):
        by_mask = resrep.convert(net, mode="mask")
    r = by_mask.report
    assert r.mode == "mask" and r.threshold is None and not r.exact
    assert r.max_removed_norm > 0.5 and r.max_output_diff > r.tolerance and r.removed_classes == masked.sum()
    assert by_mask.predicted_flops == net.predicted_flops() < net.original_flops
    official = resrep.convert(net)  # collapsed rows only: nothing has collapsed, nothing goes, exact
    assert official.mode == "collapsed" and official.report.removed_classes == 0 and official.report.exact
    assert official.predicted_flops == net.original_flops and official.report.max_output_diff < 1e-5
    with torch.no_grad():  # rows that collapsed to (almost) zero go, and the result is exact
        for _, comp in net.compactors():
            comp.weight[comp.mask == 0] *= 1e-7
    collapsed = resrep.convert(net)
    assert collapsed.report.removed_classes == masked.sum() and collapsed.report.exact
    assert 0 < collapsed.report.max_removed_norm < resrep.COLLAPSED_NORM
    assert collapsed.predicted_flops == by_mask.predicted_flops == flops.flop_count(collapsed.module, 16)
    assert set(collapsed.report.as_dict()) >= {"mode", "threshold", "max_removed_norm", "max_output_diff", "exact"}
    with pytest.raises(ValueError, match="epsilon=None goes with mode='epsilon' only"):
        resrep.convert(net, mode="epsilon")
    with pytest.raises(ValueError, match="conversion mode must be one of"):
        resrep.convert(net, mode="all")


class Padded(nn.Module):
    """conv + BN, a padding, then a valid 3x3 consumer."""

    def __init__(self, pad):
        super().__init__()
        self.pad = pad
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.head = nn.Sequential(nn.Conv2d(8, 6, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.head(self.pad(self.stem(x))).mean((2, 3)))


@pytest.mark.parametrize("pad", [nn.ConstantPad2d(1, 0.5), lambda x: nn.functional.pad(x, (1, 1, 1, 1), value=-2.0)])
def test_non_zero_constant_padding_pins_the_channels(pad):
    net = resrep.prepare(Padded(pad), 8)
    stem = net.channels.slot_class[net.channels.layers[0].out_slots]
    assert net.channels.class_pinned[stem].all()
    assert "padded with the non-zero constant" in net.channels.reasons[int(stem[0])]
    assert [lay.name for lay in net.pruned_layers] == ["head.0"]


def test_zero_constant_padding_keeps_the_channels_prunable():
    net, converted = check_conversion(Padded(nn.ConstantPad2d(1, 0.0)), 8)
    assert converted.widths["stem.0"][1] < 8


def test_remember_defaults_are_the_official_ones():
    import inspect
    params = inspect.signature(resrep.remember).parameters
    assert resrep.OFFICIAL == {"lasso_strength": 1e-4, "warmup_epochs": 5, "mask_interval": 200, "granularity": 4}
    assert {k: params[k].default for k in resrep.OFFICIAL} == resrep.OFFICIAL
    assert params["setting"].default == "resrep" and params["scope"].default == "any"
