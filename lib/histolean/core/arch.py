"""Framework-neutral architecture specs: stages, blocks, widths, input size.

A :class:`Spec` says *what* a network is (the rows of the NAR paper's Table 1);
``histolean.core.models.build`` turns it into a torch module, ``histolean.core.flops``
costs it and ``histolean.methods.nar`` shrinks it. Specs are frozen and hashable, so
they can be compared, cached and used as dictionary keys.

Block types (``Stage.block``) and the meaning of their ``widths``:

=====================  ===============================================================
``resnet_v2_stem``     (64,): 7x7/2 conv with bias, zero-pad + 3x3/2 max pool (Keras)
``preact_bottleneck``  (w,): pre-activation 1x1 w, 3x3 w, 1x1 4w; conv shortcut on a
                       stage's first block, stride on its last (Keras) or first block
``resnet_stem``        (64,): 7x7/2 conv, BN, ReLU, 3x3/2 max pool (torchvision layout)
``basic``              (w,): 3x3 w, 3x3 w, stride on a stage's first block (ResNet-34)
``inception_v4_stem``  the 11 channel counts of Szegedy et al. 2017, Figure 3
``inception_a`` ...    ``inception_a/b/c``, ``reduction_a/b``: branch channel counts
``conv``               (w,): conv k x k, [BN], ReLU; the stage may end with pool/dropout
=====================  ===============================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

BLOCK_TYPES = (
    "resnet_v2_stem", "preact_bottleneck", "resnet_stem", "basic", "inception_v4_stem",
    "inception_a", "reduction_a", "inception_b", "reduction_b", "inception_c", "conv",
)
# How many channel counts each block type takes.
_WIDTH_COUNT = {
    "resnet_v2_stem": 1, "preact_bottleneck": 1, "resnet_stem": 1, "basic": 1, "conv": 1,
    "inception_v4_stem": 11, "inception_a": 7, "reduction_a": 4, "inception_b": 10,
    "reduction_b": 6, "inception_c": 8,
}
BOTTLENECK_EXPANSION = 4


@dataclass(frozen=True)
class Stage:
    """A run of ``blocks`` identical blocks (NAR's depth unit) with its channel counts."""

    name: str
    block: str
    blocks: int
    widths: tuple[int, ...]
    stride: int = 1          # bottleneck/basic: the stage's downsampling stride
    stride_at: str = "first" # bottleneck/basic: which block strides, "first" (He et al.) or "last" (Keras V2)
    kernel: int = 3          # conv blocks only
    padding: str = "same"    # conv blocks only: "same" | "valid"
    batchnorm: bool = True   # conv blocks only (a conv without BN has a bias)
    pool: int = 0            # conv stages only: max pool size after the blocks (0: none)
    dropout: float = 0.0     # conv stages only: dropout after the pool

    def __post_init__(self):
        if self.block not in BLOCK_TYPES:
            raise ValueError(f"stage {self.name!r}: unknown block type {self.block!r}; known: {BLOCK_TYPES}")
        if not isinstance(self.blocks, int) or self.blocks < 1:
            raise ValueError(f"stage {self.name!r}: blocks must be an integer >= 1, got {self.blocks!r}")
        widths = tuple(self.widths)
        if any((not isinstance(w, int)) or w < 1 for w in widths):
            raise ValueError(f"stage {self.name!r}: widths must be integers >= 1, got {widths}")
        expected = _WIDTH_COUNT[self.block]
        if len(widths) != expected:
            raise ValueError(f"stage {self.name!r}: block {self.block!r} takes {expected} widths, got {len(widths)}")
        if self.stride_at not in ("first", "last"):
            raise ValueError(f"stage {self.name!r}: stride_at must be 'first' or 'last', got {self.stride_at!r}")
        if self.padding not in ("same", "valid"):
            raise ValueError(f"stage {self.name!r}: padding must be 'same' or 'valid', got {self.padding!r}")
        object.__setattr__(self, "widths", widths)

    @property
    def out_channels(self) -> int:
        return _out_channels(self)

    def describe(self) -> str:
        """One line in the style of the paper's Table 1."""
        w = self.widths
        if self.block == "preact_bottleneck":
            body = f"[1x1, {w[0]} | 3x3, {w[0]} | 1x1, {w[0] * BOTTLENECK_EXPANSION}]"
        elif self.block == "basic":
            body = f"[3x3, {w[0]} | 3x3, {w[0]}]"
        elif self.block in ("resnet_v2_stem", "resnet_stem"):
            return f"7x7, {w[0]}, stride 2; 3x3 max pool, stride 2"
        elif self.block == "conv":
            extra = (", BN" if self.batchnorm else "") + (f", {self.pool}x{self.pool} max pool" if self.pool else "")
            extra += f", dropout {self.dropout:g}" if self.dropout else ""
            body = f"[{self.kernel}x{self.kernel}, {w[0]}, {self.padding}{extra}]"
        else:
            body = f"{self.block}({', '.join(map(str, w))})"
        return f"{body} x {self.blocks}"


@dataclass(frozen=True)
class Head:
    """Classifier head: global average pool (or flatten), optional hidden dense layers, dense."""

    pool: str = "avg"                 # "avg" | "flatten"
    hidden: tuple[int, ...] = ()      # hidden dense layer widths
    hidden_batchnorm: bool = False    # BN after each hidden dense layer (then no bias)
    dropout: float = 0.0              # before the last dense layer

    def __post_init__(self):
        if self.pool not in ("avg", "flatten"):
            raise ValueError(f"head pool must be 'avg' or 'flatten', got {self.pool!r}")
        object.__setattr__(self, "hidden", tuple(self.hidden))


@dataclass(frozen=True)
class Spec:
    """A whole network: stem, stages, head, input size and classes."""

    name: str
    family: str                      # "resnet_v2" | "resnet" | "inception_v4" | "plain"
    input_size: int
    num_classes: int
    stem: Stage | None
    stages: tuple[Stage, ...]
    head: Head = field(default_factory=Head)
    in_channels: int = 3
    post_norm: bool = False          # final BN + ReLU after the last stage (pre-activation nets)
    variant: str = ""                # e.g. "NAR phi=2", "IR 3"; empty for the original
    nar_scale_stem: bool = False     # whether NAR also scales the stem's widths (see nar.reduce)

    def __post_init__(self):
        if self.input_size < 1 or self.num_classes < 1 or self.in_channels < 1:
            raise ValueError(f"spec {self.name!r}: input_size, num_classes and in_channels must be >= 1, "
                             f"got {self.input_size}, {self.num_classes}, {self.in_channels}")
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError(f"spec {self.name!r}: needs at least one stage")

    @property
    def label(self) -> str:
        return f"{self.name} ({self.variant})" if self.variant else self.name

    @property
    def blocks(self) -> tuple[int, ...]:
        return tuple(s.blocks for s in self.stages)

    @property
    def widths(self) -> tuple[tuple[int, ...], ...]:
        return tuple(s.widths for s in self.stages)

    def describe(self) -> str:
        """The spec as text, stage by stage (cheap: no network is built; costs are in ``flops.compare_table``)."""
        lines = [f"{self.label}: {self.input_size} x {self.input_size} x {self.in_channels} input, "
                 f"{self.num_classes} classes"]
        if self.stem is not None:
            lines.append(f"  stem: {self.stem.describe()}")
        lines.extend(f"  {st.name}: {st.describe()}" for st in self.stages)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


def _out_channels(stage: Stage) -> int:
    w = stage.widths
    if stage.block == "preact_bottleneck":
        return w[0] * BOTTLENECK_EXPANSION
    if stage.block in ("basic", "conv", "resnet_v2_stem", "resnet_stem"):
        return w[0]
    if stage.block == "inception_v4_stem":
        return w[10] + w[5] + w[9]      # Mixed5a: 3x3/2 conv + max pool of Mixed4a's two 96-channel branches
    if stage.block == "inception_a":
        return w[0] + w[2] + w[5] + w[6]
    if stage.block == "inception_b":
        return w[0] + w[3] + w[8] + w[9]
    if stage.block == "inception_c":
        return w[0] + 2 * w[2] + 2 * w[6] + w[7]
    raise ValueError(f"stage {stage.name!r}: block {stage.block!r} has input-dependent outputs; "
                     "use stage_out_channels(stage, in_channels)")


def stage_out_channels(stage: Stage, in_channels: int) -> int:
    """Output channels of a stage given its input channels (reduction blocks pass their input through a pool)."""
    w = stage.widths
    if stage.block == "reduction_a":
        return w[0] + w[3] + in_channels
    if stage.block == "reduction_b":
        return w[1] + w[5] + in_channels
    return _out_channels(stage)


# ---------------------------------------------------------------------------------------------
# The architectures of the study
# ---------------------------------------------------------------------------------------------

def resnet50v2(num_classes: int = 2, input_size: int = 240, stride_at: str = "last") -> Spec:
    """ResNet50V2 in the Keras applications layout (the NAR paper's baseline, 240 px per 50 um patch).

    ``stride_at="last"`` is Keras: stages 1-3 downsample in their last block. ``"first"`` puts the
    stride in each stage's first block instead (stages 2-4, as He et al. 2016 and torchvision do);
    parameters are identical, FLOPs are higher (more blocks run at the finer resolution). The NAR
    paper's Table 3 GFLOPs match ``"first"`` within about 1 percent (see notebooks/02_nar_cost.ipynb).
    """
    strides = {"last": [2, 2, 2, 1], "first": [1, 2, 2, 2]}
    if stride_at not in strides:
        raise ValueError(f"resnet50v2: stride_at must be 'last' (Keras) or 'first', got {stride_at!r}")
    stages = tuple(
        Stage(f"stage{i + 1}", "preact_bottleneck", n, (w,), stride=s, stride_at=stride_at)
        for i, (n, w, s) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512], strides[stride_at]))
    )
    name = "resnet50v2" if stride_at == "last" else "resnet50v2-stride-first"
    return Spec(name, "resnet_v2", input_size, num_classes,
                Stage("stem", "resnet_v2_stem", 1, (64,)), stages, Head("avg"), post_norm=True)


def resnet34(num_classes: int = 2, input_size: int = 224) -> Spec:
    """ResNet-34 (He et al. 2016, torchvision layout): a trunk for U-Nets and streaming."""
    stages = tuple(
        Stage(f"stage{i + 1}", "basic", n, (w,), stride=s)
        for i, (n, w, s) in enumerate([(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)])
    )
    return Spec("resnet34", "resnet", input_size, num_classes, Stage("stem", "resnet_stem", 1, (64,)), stages)


INCEPTION_V4_STEM = (32, 32, 64, 96, 64, 96, 64, 64, 64, 96, 192)
INCEPTION_A = (96, 64, 96, 64, 96, 96, 96)          # b0 1x1 | b1 1x1, 3x3 | b2 1x1, 3x3, 3x3 | pool-1x1
REDUCTION_A = (384, 192, 224, 256)                  # k, l, m, n of the paper's Table 1 (Inception-v4 row)
INCEPTION_B = (384, 192, 224, 256, 192, 192, 224, 224, 256, 128)
REDUCTION_B = (192, 192, 256, 256, 320, 320)
INCEPTION_C = (256, 384, 256, 384, 448, 512, 256, 256)  # b1/b2 end in a 1x3 and a 3x1 of the last width


def inception_v4(num_classes: int = 2, input_size: int = 299) -> Spec:
    """Inception V4 (Szegedy et al. 2017): stem, 4 x A, Reduction-A, 7 x B, Reduction-B, 3 x C.

    The NAR paper feeds it 240 px patches; ``input_size`` defaults to the original 299.
    NAR scales this stem's widths too (``nar_scale_stem``): the paper does not say, but its
    Table 4 FLOP reductions match that choice far better (see notebooks/02_nar_cost.ipynb).
    """
    stages = (
        Stage("inception_a", "inception_a", 4, INCEPTION_A),
        Stage("reduction_a", "reduction_a", 1, REDUCTION_A),
        Stage("inception_b", "inception_b", 7, INCEPTION_B),
        Stage("reduction_b", "reduction_b", 1, REDUCTION_B),
        Stage("inception_c", "inception_c", 3, INCEPTION_C),
    )
    return Spec("inception_v4", "inception_v4", input_size, num_classes,
                Stage("stem", "inception_v4_stem", 1, INCEPTION_V4_STEM), stages, Head("avg", dropout=0.2),
                nar_scale_stem=True)


def b2(num_classes: int = 2, input_size: int = 96) -> Spec:
    """B2 of the PCam/IDC comparison (Bonnet 2024): two 5x5 'same' convs (32, 64) each followed by ReLU
    and 2x2 max pool, then flatten, dense 256 + ReLU, dense (9.4 M parameters at 96 px in the paper).

    The paper's Keras models end in one sigmoid unit; with ``num_classes`` = 2 the last layer has two
    outputs (cross-entropy), i.e. 257 more parameters."""
    stages = (
        Stage("conv1", "conv", 1, (32,), kernel=5, padding="same", batchnorm=False, pool=2),
        Stage("conv2", "conv", 1, (64,), kernel=5, padding="same", batchnorm=False, pool=2),
    )
    return Spec("b2", "plain", input_size, num_classes, None, stages, Head("flatten", hidden=(256,)))


def b6(num_classes: int = 2, input_size: int = 96) -> Spec:
    """B6 of the PCam/IDC comparison: six 3x3 'valid' convs (32, 32, 64, 64, 128, 128) with BN (except the
    first), 2x2 max pool + dropout 0.3 after each pair, flatten, dense 256 + BN + ReLU, dropout 0.5, dense
    (2.4 M parameters at 96 px)."""
    stages = (
        Stage("conv1", "conv", 1, (32,), padding="valid", batchnorm=False),
        Stage("conv2", "conv", 1, (32,), padding="valid", pool=2, dropout=0.3),
        Stage("conv3", "conv", 2, (64,), padding="valid", pool=2, dropout=0.3),
        Stage("conv4", "conv", 2, (128,), padding="valid", pool=2, dropout=0.3),
    )
    return Spec("b6", "plain", input_size, num_classes, None, stages,
                Head("flatten", hidden=(256,), hidden_batchnorm=True, dropout=0.5))


def tiny(num_classes: int = 2, input_size: int = 32, width: int = 8) -> Spec:
    """Two 3x3 'same' conv + BN stages of ``width`` and ``2 * width`` channels, global average pool: cheap
    enough for property tests and quick looks; not in any paper."""
    stages = (
        Stage("stage1", "conv", 2, (width,), pool=2),
        Stage("stage2", "conv", 2, (2 * width,), pool=2),
    )
    return Spec("tiny", "plain", input_size, num_classes, None, stages, Head("avg"))


# ---------------------------------------------------------------------------------------------
# The model registry: every network any notebook names, in either framework
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelEntry:
    """One network by name. ``builders`` maps a framework ("torch", "keras") to the ``module:function``
    that builds it: named by path so that this registry imports no framework and no experiment."""

    name: str
    paper_name: str            # what the papers call it (tables, figures)
    min_input: int             # smallest input side (px) the network accepts
    builders: dict             # framework -> "module:function"

    @property
    def frameworks(self) -> tuple[str, ...]:
        return tuple(self.builders)

    def builder(self, framework: str = "torch"):
        """The build function for ``framework`` (imported on first use)."""
        import importlib

        if framework not in self.builders:
            raise ValueError(f"model {self.name!r} has no {framework} builder; it has {', '.join(self.builders)}")
        module, _, function = self.builders[framework].partition(":")
        return getattr(importlib.import_module(module), function)


_KERAS_ZOO = "histolean.experiments.pcam_idc_zoo.keras_models:build"
MODELS: dict[str, ModelEntry] = {m.name: m for m in (
    ModelEntry("resnet50v2", "ResNet50V2", 1, {"torch": "histolean.core.arch:resnet50v2"}),
    # Inception V4's valid-padded stem and reductions need 75 px
    ModelEntry("inception_v4", "Inception V4", 75, {"torch": "histolean.core.arch:inception_v4"}),
    ModelEntry("resnet34", "ResNet-34", 1, {"torch": "histolean.core.arch:resnet34"}),
    ModelEntry("tiny", "tiny CNN (ours)", 4, {"torch": "histolean.core.arch:tiny"}),
    ModelEntry("b2", "B2", 4, {"torch": "histolean.core.arch:b2", "keras": _KERAS_ZOO}),
    # six 'valid' 3x3 convs and three 2x2 pools need >= 36 px
    ModelEntry("b6", "B6", 36, {"torch": "histolean.core.arch:b6", "keras": _KERAS_ZOO}),
    ModelEntry("inception_v3", "IV3", 75, {"keras": _KERAS_ZOO}),
    ModelEntry("vgg19", "VGG19", 32, {"keras": _KERAS_ZOO}),
    ModelEntry("resnet50", "RN50", 32, {"keras": _KERAS_ZOO}),
    ModelEntry("mobilenet", "MN", 32, {"keras": _KERAS_ZOO}),
    ModelEntry("densenet121", "DN121", 32, {"keras": _KERAS_ZOO}),
    ModelEntry("densenet169", "DN169", 32, {"keras": _KERAS_ZOO}),
    ModelEntry("densenet201", "DN201", 32, {"keras": _KERAS_ZOO}),
    ModelEntry("efficientnetv2_b0", "ENB0", 32, {"keras": _KERAS_ZOO}),
    ModelEntry("efficientnetv2_b1", "ENB1", 32, {"keras": _KERAS_ZOO}),
    ModelEntry("efficientnetv2_b2", "ENB2", 32, {"keras": _KERAS_ZOO}),
)}


class InputTooSmall(ValueError):
    """An input side below the network's minimum."""


def model_entry(name: str, framework: str | None = None) -> ModelEntry:
    """The registry entry of ``name`` (case-insensitive); a clear error lists the known names."""
    entry = MODELS.get(str(name).lower())
    known = [n for n, e in MODELS.items() if framework is None or framework in e.builders]
    if entry is None or (framework is not None and framework not in entry.builders):
        raise ValueError(f"unknown {framework + ' ' if framework else ''}model {name!r}; choose one of "
                         f"{', '.join(known)}")
    return entry


def check_input_size(name: str, input_size: int) -> None:
    """Raise :class:`InputTooSmall` when ``input_size`` is below ``name``'s minimum."""
    entry = model_entry(name)
    if int(input_size) < entry.min_input:
        raise InputTooSmall(f"{name}: input {input_size}x{input_size} px is below its minimum of "
                            f"{entry.min_input}x{entry.min_input} px (upscale the patches or choose another model)")


def spec(name: str, num_classes: int = 2, input_size: int | None = None, **kwargs) -> Spec:
    """The torch spec of a registered network (``input_size`` None: the builder's default)."""
    build = model_entry(name, "torch").builder("torch")
    if input_size is not None:
        check_input_size(name, input_size)
        kwargs["input_size"] = input_size
    return build(num_classes=num_classes, **kwargs)


# ---------------------------------------------------------------------------------------------
# Scaling (the rounding rule lives here, so NAR and any user scaling agree)
# ---------------------------------------------------------------------------------------------

def round_half_down(x: float) -> int:
    """Nearest integer, exact halves rounded *down* (toward the smaller network).

    A 1e-9 tolerance absorbs floating-point noise: 3 / 1.2 is 2.5000000000000004 in binary,
    and must count as the tie 2.5 -> 2 that gives the paper's ResNet50V2 blocks [2, 3, 5, 2].
    """
    return math.ceil(x - 0.5 - 1e-9)


def scale_count(n: int, factor: float) -> int:
    """``n * factor`` with the rounding rule, never below 1 (one block, one channel, one pixel)."""
    return max(1, round_half_down(n * factor))


def scale(spec: Spec, depth: float = 1.0, width: float = 1.0, resolution: float = 1.0,
          *, scale_stem: bool = False, variant: str | None = None) -> Spec:
    """Scale blocks per stage by ``depth``, every channel count by ``width``, input by ``resolution``.

    Rounding rule (one rule for blocks, channels and pixels): nearest integer with exact halves
    rounded down, never below 1 (:func:`round_half_down`). A bottleneck's output (4 x width) is
    4 x the rounded width, as in the paper's Table 1 (58 -> 232). The stem keeps its widths unless
    ``scale_stem`` (the paper's Table 1 keeps conv1 at 64 channels for every phi).
    """
    for label, value in (("depth", depth), ("width", width), ("resolution", resolution)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"scale({spec.name}): {label} factor must be a positive finite number, got {value!r}")

    def scaled_stage(stage: Stage, with_depth: bool) -> Stage:
        return replace(
            stage,
            blocks=scale_count(stage.blocks, depth) if with_depth else stage.blocks,
            widths=tuple(scale_count(w, width) for w in stage.widths),
        )

    stem = spec.stem
    if stem is not None and scale_stem:
        stem = scaled_stage(stem, with_depth=False)
    return replace(
        spec,
        stem=stem,
        stages=tuple(scaled_stage(s, with_depth=True) for s in spec.stages),
        input_size=scale_count(spec.input_size, resolution),
        variant=spec.variant if variant is None else variant,
    )


def with_input_size(spec: Spec, input_size: int, variant: str | None = None) -> Spec:
    """The same network at another input size."""
    return replace(spec, input_size=int(input_size), variant=spec.variant if variant is None else variant)
