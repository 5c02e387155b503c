"""ResRep channel pruning (Ding et al. 2021) for any traceable convolution + BN network.

Remembering: :func:`prepare` traces the model (``torch.fx``), finds every prunable
convolution and the channels tied by residual additions, concatenations and depthwise
convolutions, and inserts an identity-initialised 1x1 *compactor* after the conv's BN (after
the conv itself when no BN follows it, e.g. the residual-stream convs of the pre-activation
ResNet50V2). Training with :class:`ResRepSchedule` as ``train.fit(after_backward=...)``
masks, every ``mask_interval`` steps after the warm-up, the compactor rows with the smallest
norms - at most ``granularity`` more per update, until the FLOPs target is met - and resets
their task gradient so the Lasso penalty drives them to zero.

Forgetting: :func:`convert` fuses BN and the compactor into the convolution and removes
channels from the conv and from every consumer, returning a plain smaller ``nn.Module`` and a
:class:`ConversionReport`.

The choices, and the argument that selects each (record them with every result):

* **pruning scope** - ``prepare(..., scope=)`` / ``remember(..., scope=)``: ``"any"`` (default:
  every channel the graph allows, residual stream included, tied channels pruned together) or
  ``"bottleneck"`` (only the internal convs of residual blocks: ResNet50V2's ``conv1``/``conv2``,
  never the residual stream, the shortcut or the stem - what official ResRep prunes in
  ResNet-50 and the NAR paper's Table 2 shows). :func:`paper_scope` gives the paper's choice
  per architecture spec.
* **granularity** - ``ResRepSchedule(granularity=)`` / ``remember(granularity=)``: channels
  added to the mask per update (official: 4); ``None`` masks all at the first update.
  ``schedule.log`` has (step, masked, flops_ratio) per update.
* **conversion mode** - ``convert(net, mode=)``: ``"collapsed"`` (default, official: remove rows
  with norm < 1e-5), ``"epsilon"`` (``convert(net, epsilon=0.9)``: the NAR paper's epsilon as a
  row-norm threshold, our reading) or ``"mask"`` (the masked channels whatever their norm).
* **defaults** - :data:`OFFICIAL`: lambda 1e-4, 5 warm-up epochs, mask interval 200,
  granularity 4; optimiser setting "resrep" (SGD, compactor momentum 0.99) or "nar" (Adam +
  StepLR, Meirelles et al.).

The conversion report (``small.report``, ``small.report.as_dict()`` for result rows)::

    ConversionReport(mode="collapsed", threshold=1e-05, removed_classes=12, removed_channels=12,
                     max_removed_norm=3.1e-06, max_output_diff=2.4e-07, output_scale=1.9,
                     tolerance=0.001, exact=True, batch="4 random normal inputs of 96x96 px")

``exact`` is ``max_output_diff <= tolerance * max(1, output_scale)``; when it is False an
:class:`InexactConversionWarning` is issued.

The NAR paper's epsilon (Meirelles et al. 2022, Tables 2-3, 0.82 ... 0.94). The paper says
(Section 2.3) that G(F) "is compared to a threshold value (epsilon). If it is below the
threshold, the filter is removed". What the removal step of ResRep can compare is the
compactor row F itself: we read epsilon as a threshold on the L2 norm of each compactor row
at conversion, ``convert(net, epsilon=0.9)`` removing every channel with ``||F_c|| < 0.9``.
Rows start at norm 1 (identity), so epsilon is the fraction of its initial norm a channel must
keep. A larger epsilon removes more channels, as in the paper (G falls from 8.34 to 6.09 as
epsilon goes from 0.82 to 0.94). This is our interpretation: the paper gives no formula; it
fits because under Adam + StepLR masked rows level off near 0.7 rather than collapsing.

    net = resrep.prepare(model, input_size=96, scope="bottleneck")
    schedule = resrep.ResRepSchedule(net, flops_target=0.6, lasso_strength=1e-3, mask_interval=20, granularity=4)
    train.fit(net, loader, epochs=3, optimizer=resrep.make_optimizer(net, "nar"),
              after_backward=schedule, **resrep.fit_settings("nar"))
    # or, in one call: net = resrep.remember(model, loader, input_size=96, epochs=3, flops_target=0.6).net
    small = resrep.convert(net)                    # small.module, small.predicted_flops, small.report
    thresholded = resrep.convert(net, epsilon=0.9)
    by_mask = resrep.convert(net, mode="mask")
"""

from __future__ import annotations

from .channels import SCOPES, ChannelGraph, UnprunableModelError, analyse
from .compactor import Compactor, ResRepNet, prepare
from .convert import (COLLAPSED_NORM, MODES, ConversionReport, ConvertedNetwork, InexactConversionWarning, convert,
                      removed_classes)
from .training import (OFFICIAL, OPTIMIZER_SETTINGS, Remembered, ResRepSchedule, fit_settings, make_optimizer,
                       penalised_gradients, remember, update_masks)


def paper_scope(spec) -> str:
    """The pruning scope the papers use for an architecture spec (or its name).

    ResNets (bottleneck or basic blocks): "bottleneck" - official ResRep prunes only the
    internal convs of each block, as the NAR paper's Table 2 shows for ResNet50V2. Anything
    else (Inception V4, plain CNNs): "any".
    """
    name = spec if isinstance(spec, str) else getattr(spec, "name", "")
    blocks = set() if isinstance(spec, str) else {stage.block for stage in getattr(spec, "stages", ())}
    if blocks & {"preact_bottleneck", "bottleneck", "basic"} or str(name).startswith("resnet"):
        return "bottleneck"
    return "any"


__all__ = [
    "COLLAPSED_NORM", "ChannelGraph", "Compactor", "ConversionReport", "ConvertedNetwork", "InexactConversionWarning",
    "MODES", "OFFICIAL", "OPTIMIZER_SETTINGS", "ResRepNet", "ResRepSchedule", "SCOPES", "UnprunableModelError",
    "analyse", "convert", "fit_settings", "make_optimizer", "paper_scope", "penalised_gradients", "prepare",
    "Remembered", "remember", "removed_classes", "update_masks",
]
