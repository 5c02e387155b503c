"""Spec -> torch.nn.Module (pure torch; the study's training core is PyTorch).

Every network built here has the same top level, so other modules can rely on it::

    net.stem      # nn.Module (Identity for stem-less specs)
    net.stages    # nn.Sequential of stages, each an nn.Sequential of blocks: stages.0.0.conv1
    net.post      # final BN + ReLU of pre-activation nets, else Identity
    net.head      # pooling / flatten, hidden dense layers, last dense layer (head.fc)
    net.features  # nn.Sequential(stem, stages, post): the convolutional trunk (shares modules)
    net.spec      # the Spec it was built from

Forward passes have no data-dependent Python control flow, so ``torch.fx.symbolic_trace``
works on every network (ResRep traces them).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from histolean.core import arch
from histolean.core.arch import Spec, Stage

KERAS_RESNET_BN_EPS = 1.001e-5    # keras.applications ResNet*V2
INCEPTION_BN_EPS = 1e-3           # TF-slim / Cadene / timm Inception V4


class ConvBNReLU(nn.Module):
    """conv (no bias) -> BN -> ReLU, the unit of Inception V4 and the plain CNNs."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0, eps: float = 1e-5,
                 batchnorm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=not batchnorm)
        self.bn = nn.BatchNorm2d(cout, eps=eps) if batchnorm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def _inc(cin, cout, kernel, stride=1, padding=0):
    return ConvBNReLU(cin, cout, kernel, stride, padding, eps=INCEPTION_BN_EPS)


# ---------------------------------------------------------------------------------------------
# ResNet blocks
# ---------------------------------------------------------------------------------------------

class ResNetV2Stem(nn.Module):
    """Keras ResNet*V2 stem: 7x7/2 conv with bias (no BN: the first block pre-activates), zero-pad, 3x3/2 max pool."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, width, 7, stride=2, padding=3, bias=True)
        self.pad = nn.ZeroPad2d(1)        # Keras pads with zeros before the pool, not -inf
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return self.pool(self.pad(self.conv(x)))


class PreActBottleneck(nn.Module):
    """Keras ``block2``: BN-ReLU pre-activation, 1x1 -> 3x3 (stride) -> 1x1 (x4), residual add."""

    def __init__(self, cin: int, width: int, stride: int, conv_shortcut: bool):
        super().__init__()
        cout = width * arch.BOTTLENECK_EXPANSION
        self.conv_shortcut = conv_shortcut
        self.preact_bn = nn.BatchNorm2d(cin, eps=KERAS_RESNET_BN_EPS)
        self.preact_relu = nn.ReLU(inplace=False)
        if conv_shortcut:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=True)
        elif stride > 1:
            self.shortcut = nn.MaxPool2d(1, stride=stride)   # Keras subsamples the identity
        else:
            self.shortcut = nn.Identity()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=KERAS_RESNET_BN_EPS)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=KERAS_RESNET_BN_EPS)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=True)

    def forward(self, x):
        pre = self.preact_relu(self.preact_bn(x))
        # The conv shortcut sees the pre-activated input; the identity shortcut the raw input (Keras).
        shortcut = self.shortcut(pre) if self.conv_shortcut else self.shortcut(x)
        out = self.relu1(self.bn1(self.conv1(pre)))
        out = self.relu2(self.bn2(self.conv2(out)))
        return self.conv3(out) + shortcut


class ResNetStem(nn.Module):
    """torchvision ResNet stem: 7x7/2 conv, BN, ReLU, 3x3/2 max pool."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, width, 7, stride=2, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x):
        return self.pool(self.relu(self.bn(self.conv(x))))


class BasicBlock(nn.Module):
    """ResNet-18/34 block: 3x3 (stride) -> 3x3, projection shortcut when the shape changes."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(cin, width, 1, stride=stride, bias=False), bn=nn.BatchNorm2d(width)))
        else:
            self.downsample = nn.Identity()
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.downsample(x))


# ---------------------------------------------------------------------------------------------
# Inception V4 blocks (Szegedy et al. 2017, Figures 3-8; valid padding where the paper marks "V")
# ---------------------------------------------------------------------------------------------

class InceptionV4Stem(nn.Module):
    def __init__(self, cin: int, w: tuple[int, ...]):
        super().__init__()
        self.conv1 = _inc(cin, w[0], 3, stride=2)
        self.conv2 = _inc(w[0], w[1], 3)
        self.conv3 = _inc(w[1], w[2], 3, padding=1)
        self.mixed3a_pool = nn.MaxPool2d(3, stride=2)
        self.mixed3a_conv = _inc(w[2], w[3], 3, stride=2)
        c = w[2] + w[3]
        self.mixed4a_branch0 = nn.Sequential(_inc(c, w[4], 1), _inc(w[4], w[5], 3))
        self.mixed4a_branch1 = nn.Sequential(
            _inc(c, w[6], 1), _inc(w[6], w[7], (1, 7), padding=(0, 3)),
            _inc(w[7], w[8], (7, 1), padding=(3, 0)), _inc(w[8], w[9], 3))
        self.mixed5a_conv = _inc(w[5] + w[9], w[10], 3, stride=2)
        self.mixed5a_pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        x = self.conv3(self.conv2(self.conv1(x)))
        x = torch.cat([self.mixed3a_pool(x), self.mixed3a_conv(x)], 1)
        x = torch.cat([self.mixed4a_branch0(x), self.mixed4a_branch1(x)], 1)
        return torch.cat([self.mixed5a_conv(x), self.mixed5a_pool(x)], 1)


def _avg_pool_3x3():
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, w: tuple[int, ...]):
        super().__init__()
        self.branch0 = _inc(cin, w[0], 1)
        self.branch1 = nn.Sequential(_inc(cin, w[1], 1), _inc(w[1], w[2], 3, padding=1))
        self.branch2 = nn.Sequential(_inc(cin, w[3], 1), _inc(w[3], w[4], 3, padding=1),
                                     _inc(w[4], w[5], 3, padding=1))
        self.branch3 = nn.Sequential(_avg_pool_3x3(), _inc(cin, w[6], 1))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class ReductionA(nn.Module):
    def __init__(self, cin: int, w: tuple[int, ...]):
        super().__init__()
        self.branch0 = _inc(cin, w[0], 3, stride=2)
        self.branch1 = nn.Sequential(_inc(cin, w[1], 1), _inc(w[1], w[2], 3, padding=1),
                                     _inc(w[2], w[3], 3, stride=2))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int, w: tuple[int, ...]):
        super().__init__()
        self.branch0 = _inc(cin, w[0], 1)
        self.branch1 = nn.Sequential(_inc(cin, w[1], 1), _inc(w[1], w[2], (1, 7), padding=(0, 3)),
                                     _inc(w[2], w[3], (7, 1), padding=(3, 0)))
        self.branch2 = nn.Sequential(_inc(cin, w[4], 1), _inc(w[4], w[5], (7, 1), padding=(3, 0)),
                                     _inc(w[5], w[6], (1, 7), padding=(0, 3)),
                                     _inc(w[6], w[7], (7, 1), padding=(3, 0)),
                                     _inc(w[7], w[8], (1, 7), padding=(0, 3)))
        self.branch3 = nn.Sequential(_avg_pool_3x3(), _inc(cin, w[9], 1))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class ReductionB(nn.Module):
    def __init__(self, cin: int, w: tuple[int, ...]):
        super().__init__()
        self.branch0 = nn.Sequential(_inc(cin, w[0], 1), _inc(w[0], w[1], 3, stride=2))
        self.branch1 = nn.Sequential(_inc(cin, w[2], 1), _inc(w[2], w[3], (1, 7), padding=(0, 3)),
                                     _inc(w[3], w[4], (7, 1), padding=(3, 0)), _inc(w[4], w[5], 3, stride=2))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, w: tuple[int, ...]):
        super().__init__()
        self.branch0 = _inc(cin, w[0], 1)
        self.branch1_0 = _inc(cin, w[1], 1)
        self.branch1_1a = _inc(w[1], w[2], (1, 3), padding=(0, 1))
        self.branch1_1b = _inc(w[1], w[2], (3, 1), padding=(1, 0))
        self.branch2_0 = _inc(cin, w[3], 1)
        self.branch2_1 = _inc(w[3], w[4], (3, 1), padding=(1, 0))
        self.branch2_2 = _inc(w[4], w[5], (1, 3), padding=(0, 1))
        self.branch2_3a = _inc(w[5], w[6], (1, 3), padding=(0, 1))
        self.branch2_3b = _inc(w[5], w[6], (3, 1), padding=(1, 0))
        self.branch3 = nn.Sequential(_avg_pool_3x3(), _inc(cin, w[7], 1))

    def forward(self, x):
        b1 = self.branch1_0(x)
        b2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([self.branch0(x), self.branch1_1a(b1), self.branch1_1b(b1),
                          self.branch2_3a(b2), self.branch2_3b(b2), self.branch3(x)], 1)


_INCEPTION_BLOCKS = {"inception_a": InceptionA, "reduction_a": ReductionA, "inception_b": InceptionB,
                     "reduction_b": ReductionB, "inception_c": InceptionC}


# ---------------------------------------------------------------------------------------------
# Stages, head, network
# ---------------------------------------------------------------------------------------------

def _stage(stage: Stage, cin: int) -> tuple[nn.Sequential, int]:
    """Build one stage; return it and its output channels."""
    blocks: list[nn.Module] = []
    c = cin
    for i in range(stage.blocks):
        first, last = i == 0, i == stage.blocks - 1
        stride = stage.stride if (first if stage.stride_at == "first" else last) else 1
        if stage.block == "preact_bottleneck":
            # Keras stack2: conv shortcut on the first block (stride on the last one unless stride_at="first").
            blocks.append(PreActBottleneck(c, stage.widths[0], stride, conv_shortcut=first))
        elif stage.block == "basic":
            blocks.append(BasicBlock(c, stage.widths[0], stride))
        elif stage.block in _INCEPTION_BLOCKS:
            blocks.append(_INCEPTION_BLOCKS[stage.block](c, stage.widths))
        elif stage.block == "conv":
            pad = stage.kernel // 2 if stage.padding == "same" else 0
            blocks.append(ConvBNReLU(c, stage.widths[0], stage.kernel, padding=pad, batchnorm=stage.batchnorm))
        else:
            raise ValueError(f"stage {stage.name!r}: block type {stage.block!r} cannot be used in a stage")
        c = arch.stage_out_channels(stage, c)
    if stage.pool:
        blocks.append(nn.MaxPool2d(stage.pool, stride=stage.pool))
    if stage.dropout:
        blocks.append(nn.Dropout(stage.dropout))
    return nn.Sequential(*blocks), c


def _stem(stem: Stage | None, cin: int) -> tuple[nn.Module, int]:
    if stem is None:
        return nn.Identity(), cin
    builders = {"resnet_v2_stem": ResNetV2Stem, "resnet_stem": ResNetStem}
    if stem.block in builders:
        return builders[stem.block](cin, stem.widths[0]), stem.widths[0]
    if stem.block == "inception_v4_stem":
        return InceptionV4Stem(cin, stem.widths), arch.stage_out_channels(stem, cin)
    if stem.block == "conv":
        module, c = _stage(stem, cin)
        return module, c
    raise ValueError(f"stem: block type {stem.block!r} cannot be a stem")


class ClassifierHead(nn.Module):
    """Global average pool (or flatten) -> [dense (BN) ReLU]* -> dropout -> dense."""

    def __init__(self, head: arch.Head, in_features: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if head.pool == "avg" else nn.Identity()
        self.flatten = nn.Flatten(1)
        hidden: list[nn.Module] = []
        f = in_features
        for width in head.hidden:
            hidden += [nn.Linear(f, width, bias=not head.hidden_batchnorm)]
            if head.hidden_batchnorm:
                hidden.append(nn.BatchNorm1d(width))
            hidden.append(nn.ReLU(inplace=True))
            f = width
        self.hidden = nn.Sequential(*hidden)
        self.dropout = nn.Dropout(head.dropout) if head.dropout else nn.Identity()
        self.fc = nn.Linear(f, num_classes)

    def forward(self, x):
        return self.fc(self.dropout(self.hidden(self.flatten(self.pool(x)))))


class Network(nn.Module):
    """stem -> stages -> post -> head; see the module docstring for the attribute contract."""

    def __init__(self, spec: Spec):
        super().__init__()
        self.spec = spec
        self.stem, c = _stem(spec.stem, spec.in_channels)
        stages = []
        for stage in spec.stages:
            module, c = _stage(stage, c)
            stages.append(module)
        self.stages = nn.Sequential(*stages)
        if spec.post_norm:
            eps = KERAS_RESNET_BN_EPS if spec.family == "resnet_v2" else 1e-5
            self.post = nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(c, eps=eps), relu=nn.ReLU(inplace=True)))
        else:
            self.post = nn.Identity()
        self.out_channels = c
        in_features = c if spec.head.pool == "avg" else self._flat_features(spec)
        self.head = ClassifierHead(spec.head, in_features, spec.num_classes)

    def _flat_features(self, spec: Spec) -> int:
        """Flatten heads depend on the trunk's output size: find it with one batch-1 pass on the meta device."""
        trunk = nn.Sequential(self.stem, self.stages, self.post)
        device = next(trunk.parameters()).device
        with torch.no_grad():
            probe = torch.zeros(1, spec.in_channels, spec.input_size, spec.input_size, device="meta")
            out = trunk.to("meta")(probe) if device.type == "meta" else _meta_copy(trunk)(probe)
        return int(out[0].numel())

    @property
    def features(self) -> nn.Sequential:
        """The convolutional trunk (stem, stages, post) as one Sequential sharing this network's modules."""
        return nn.Sequential(OrderedDict(stem=self.stem, stages=self.stages, post=self.post))

    def forward(self, x):
        return self.head(self.post(self.stages(self.stem(x))))


def _meta_copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).to("meta")


def _init_weights(net: nn.Module) -> None:
    """He-normal convs (fan-out), unit BN, small dense: the usual from-scratch start for ReLU nets."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build(spec: Spec, *, seed: int | None = None) -> Network:
    """Build the torch network a spec describes (weights initialised from ``seed`` when given).

    Building inside ``with torch.device("meta"):`` gives a weightless network whose shapes,
    parameter counts and FLOPs are exact; ``histolean.core.flops`` does this for specs.
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"models.build expects a histolean.core.arch.Spec, got {type(spec).__name__}")
    if seed is not None:
        torch.manual_seed(seed)
    net = Network(spec)
    _init_weights(net)
    return net


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d that always normalises with its running statistics: a per-channel affine map.

    Streaming and tiled training need it (a BN normalising with each tile's statistics would
    make the tiled network differ from the whole-image one). Its weight and bias still train;
    ``.train()`` does not unfreeze it; the state-dict names are BatchNorm2d's.
    """

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        if bn.running_mean is None:
            raise ValueError(f"a BatchNorm2d without running statistics cannot be frozen: {bn}")
        self.eps = bn.eps
        self.weight = nn.Parameter(bn.weight.detach().clone()) if bn.affine else None
        self.bias = nn.Parameter(bn.bias.detach().clone()) if bn.affine else None
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` (in place) by a :class:`FrozenBatchNorm2d`; returns it."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child).to(child.running_mean.device))
        else:
            freeze_batchnorm(child)
    return module
