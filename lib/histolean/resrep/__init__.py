"""ResRep channel pruning (Ding et al. 2021) for any traceable convolution + BN network.

Remembering: :func:`prepare` traces the model (``torch.fx``), finds every prunable
convolution and the channels tied by residual additions, concatenations and depthwise
convolutions, and inserts an identity-initialised 1x1 *compactor* after the conv's BN (after
the conv itself when no BN follows it, e.g. the residual-stream convs of the pre-activation
ResNet50V2). Training with :class:`ResRepSchedule` as ``train.fit(after_backward=...)``
masks, every ``mask_interval`` steps, the compactor rows with the smallest norms until the
FLOPs target is met, and resets their task gradient so the Lasso penalty drives them to zero.

Forgetting: :func:`convert` fuses BN and the compactor into the convolution and removes the
masked channels (or, with ``epsilon``, the channels whose compactor row norm is below it)
from the conv and from every consumer, returning a plain smaller ``nn.Module``.

The NAR paper's epsilon (Meirelles et al. 2022, Tables 2-3, 0.82 ... 0.94). The paper says
(Section 2.3) that G(F) "is compared to a threshold value (epsilon). If it is below the
threshold, the filter is removed". What the removal step of ResRep can compare is the
compactor row F itself: we read epsilon as a threshold on the L2 norm of each compactor row
at conversion, ``convert(net, epsilon=0.9)`` removing every channel with ``||F_c|| < 0.9``.
Rows start at norm 1 (identity), so epsilon is the fraction of its initial norm a channel must
keep. A larger epsilon removes more channels, as in the paper (G falls from 8.34 to 6.09 as
epsilon goes from 0.82 to 0.94). This is our interpretation: the paper gives no formula.

    net = resrep.prepare(model, input_size=96)
    schedule = resrep.ResRepSchedule(net, flops_target=0.6, lasso_strength=1e-3, mask_interval=20)
    train.fit(net, loader, epochs=3, optimizer=resrep.make_optimizer(net, "nar"),
              after_backward=schedule, **resrep.fit_settings("nar"))
    # or, in one call: net = resrep.remember(model, loader, input_size=96, epochs=3, flops_target=0.6).net
    small = resrep.convert(net)          # small.module, small.predicted_flops, small.widths
    thresholded = resrep.convert(net, epsilon=0.9)
"""

from __future__ import annotations

from .channels import ChannelGraph, UnprunableModelError, analyse
from .compactor import Compactor, ResRepNet, prepare
from .convert import ConvertedNetwork, convert, removed_classes
from .training import (OPTIMIZER_SETTINGS, Remembered, ResRepSchedule, fit_settings, make_optimizer,
                       penalised_gradients, remember, update_masks)

__all__ = [
    "ChannelGraph", "Compactor", "ConvertedNetwork", "OPTIMIZER_SETTINGS", "ResRepNet", "ResRepSchedule",
    "UnprunableModelError", "analyse", "convert", "fit_settings", "make_optimizer", "penalised_gradients",
    "prepare", "Remembered", "remember", "removed_classes", "update_masks",
]
