"""Remembering: the penalised gradient of the compactors, the mask schedule and the optimisers.

Pass a :class:`ResRepSchedule` to ``histolean.core.train.fit`` as ``after_backward``: after every
backward pass it (1) recomputes the masks every ``mask_interval`` steps once ``warmup_steps``
are done, and (2) replaces each compactor row's gradient by
``G(F) = m * dL_perf/dF + lambda * F / sqrt(||F||^2 + norm_eps)``.

Masking is progressive, as in Ding et al.'s code: each update re-ranks all channels by
compactor row norm and masks the smallest, but at most ``granularity`` more than the update
before (their ``begin_granularity``, 4), so channels are chosen once the penalty has separated
the norms rather than all at once while every row is still near 1. ``granularity=None`` masks
everything the FLOPs target needs at the first update.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from histolean.util import dryrun

from .compactor import ResRepNet, prepare

# The two optimiser settings the study compares.
OPTIMIZER_SETTINGS = {
    # Ding et al. 2021 (ResRep code): SGD, momentum 0.9 for the network, 0.99 for the compactors,
    # weight decay 1e-4 on the network, none on the compactors.
    "resrep": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
               "compactor_momentum": 0.99, "schedule": "cosine"},
    # Meirelles et al. 2022, Section 3: Adam, lr 5e-4, weight decay 5e-4, StepLR(step 5 epochs, gamma 0.5).
    "nar": {"optimizer": "adam", "lr": 5e-4, "weight_decay": 5e-4, "schedule": "step", "step_size": 5,
            "gamma": 0.5},
}


def penalised_gradients(net: ResRepNet, lasso_strength: float, norm_eps: float = 1e-8) -> None:
    """ResRep's gradient resetting, in place on every compactor's ``weight.grad``.

    Masked rows lose the task gradient and keep only the group-Lasso pull towards zero;
    ``norm_eps`` keeps ``F / ||F||`` finite when a row has collapsed.
    """
    for _, comp in net.compactors():
        w = comp.weight.detach().flatten(1)
        if comp.weight.grad is None:
            comp.weight.grad = torch.zeros_like(comp.weight)
        grad = comp.weight.grad.view(w.shape)
        grad.mul_(comp.mask[:, None])
        grad.add_(lasso_strength * w / torch.sqrt((w * w).sum(1, keepdim=True) + norm_eps))


log = logging.getLogger(__name__)

# Ding et al.'s ResRep defaults (their ResNet-50 configuration), used unless a caller says otherwise.
OFFICIAL = {"lasso_strength": 1e-4, "warmup_epochs": 5, "mask_interval": 200, "granularity": 4}


def update_masks(net: ResRepNet, flops_target: float, min_channels: int = 1,
                 granularity: int | None = None) -> np.ndarray:
    """Rank all classes by compactor row norm and mask the smallest until FLOPs <= target; returns them.

    ``granularity``: mask at most this many classes more than are masked now (progressive
    masking); None: as many as the target needs.
    """
    if granularity is not None and granularity < 1:
        raise ValueError(f"granularity must be >= 1 (or None), got {granularity!r}")
    limit = None if granularity is None else int(net.dropped_classes().sum()) + granularity
    dropped = net.flops_model.select(net.class_scores(), flops_target=flops_target, min_channels=min_channels,
                                     limit=limit)
    net.set_masks(dropped)
    return dropped


@dataclass
class ResRepSchedule:
    """The ``after_backward`` hook of ``train.fit`` for ResRep's remembering phase.

    ``flops_target``: fraction of the original FLOPs the masks aim for (e.g. 0.75).
    ``lasso_strength``: lambda. The masks are recomputed every ``mask_interval`` steps after
    ``warmup_steps`` (before that all rows keep their task gradient), each update masking at
    most ``granularity`` classes more (None: all the target needs at once). ``log`` collects
    (step, masked classes, predicted FLOPs ratio) at each mask update; the same goes to the
    ``histolean.methods.resrep.training`` logger at INFO level.
    """

    net: ResRepNet
    flops_target: float
    lasso_strength: float = OFFICIAL["lasso_strength"]
    warmup_steps: int = 0
    mask_interval: int = OFFICIAL["mask_interval"]
    min_channels: int = 1
    granularity: int | None = OFFICIAL["granularity"]
    norm_eps: float = 1e-8
    log: list[dict] = field(default_factory=list)

    def __post_init__(self):
        if self.mask_interval < 1:
            raise ValueError(f"mask_interval must be >= 1, got {self.mask_interval}")
        if self.lasso_strength < 0:
            raise ValueError(f"lasso_strength must be >= 0, got {self.lasso_strength}")
        if not 0.0 < self.flops_target <= 1.0:
            raise ValueError(f"flops_target must be a fraction in (0, 1], got {self.flops_target}")
        if self.granularity is not None and self.granularity < 1:
            raise ValueError(f"granularity must be >= 1 (or None), got {self.granularity}")

    def __call__(self, model, step: int) -> None:
        if step >= self.warmup_steps and (step - self.warmup_steps) % self.mask_interval == 0:
            dropped = update_masks(self.net, self.flops_target, self.min_channels, self.granularity)
            entry = {"step": step, "masked": int(dropped.sum()),
                     "flops_ratio": self.net.predicted_flops(dropped) / self.net.original_flops}
            self.log.append(entry)
            log.info("resrep mask update at step %(step)d: %(masked)d classes masked, FLOPs ratio %(flops_ratio).3f",
                     entry)
        penalised_gradients(self.net, self.lasso_strength, self.norm_eps)


def make_optimizer(net: ResRepNet, setting: str = "resrep", **overrides) -> torch.optim.Optimizer:
    """The optimiser of ``setting`` ("resrep" or "nar", see OPTIMIZER_SETTINGS), compactors in their own group.

    Compactors never get weight decay (it would shrink kept rows and blur the ranking);
    ``compactor_lr`` (default: ``lr``) lets short runs move them faster than the network. Pass the
    result as ``optimizer=`` and the rest of :func:`fit_settings` to ``train.fit``.
    """
    cfg = settings(setting, **overrides)
    network = {"params": net.other_parameters(), "weight_decay": cfg["weight_decay"]}
    compactors = {"params": net.compactor_parameters(), "weight_decay": 0.0,
                  "lr": cfg.get("compactor_lr") or cfg["lr"]}
    if cfg["optimizer"] == "sgd":
        compactors["momentum"] = cfg.get("compactor_momentum", cfg["momentum"])
        return torch.optim.SGD([network, compactors], lr=cfg["lr"], momentum=cfg["momentum"])
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam([network, compactors], lr=cfg["lr"])
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg['optimizer']!r}")


def settings(setting: str, **overrides) -> dict:
    if setting not in OPTIMIZER_SETTINGS:
        raise ValueError(f"unknown ResRep optimiser setting {setting!r}; choose one of {sorted(OPTIMIZER_SETTINGS)}")
    unknown = set(overrides) - {"optimizer", "lr", "compactor_lr", "momentum", "weight_decay", "compactor_momentum",
                                "schedule", "step_size", "gamma"}
    if unknown:
        raise ValueError(f"unknown optimiser override(s) {sorted(unknown)}")
    return {**OPTIMIZER_SETTINGS[setting], **overrides}


def fit_settings(setting: str, **overrides) -> dict:
    """The scheduler keyword arguments of ``train.fit`` for ``setting`` (schedule, step_size, gamma)."""
    cfg = settings(setting, **overrides)
    return {k: cfg[k] for k in ("schedule", "step_size", "gamma") if k in cfg}


@dataclass
class Remembered:
    """What :func:`remember` returns: the trained compactor network, its schedule and the fit history."""

    net: ResRepNet
    schedule: ResRepSchedule
    fit: object  # histolean.core.train.FitResult


def remember(model, train_loader, *, input_size, epochs: int, flops_target: float, setting: str = "resrep",
             lasso_strength: float = OFFICIAL["lasso_strength"], warmup_epochs: float = OFFICIAL["warmup_epochs"],
             mask_interval: int = OFFICIAL["mask_interval"], granularity: int | None = OFFICIAL["granularity"],
             scope: str = "any", min_channels: int = 1, exclude=(), seed: int = 0, device=None,
             progress: bool = True, **optimizer_overrides) -> Remembered:
    """ResRep's remembering phase in one call: compactors, ``setting``'s optimiser, masks, penalty.

    The defaults are Ding et al.'s (:data:`OFFICIAL`: lambda 1e-4, 5 warm-up epochs, a mask
    update every 200 steps adding at most 4 channels, SGD with compactor momentum 0.99);
    short CPU runs pass larger values. ``scope``: which channels may be pruned ("any" or
    "bottleneck", see :func:`prepare`). The weights of the *last* epoch are kept (no
    best-checkpoint restore: an early epoch would bring back masks that have not converged).
    ``optimizer_overrides``: lr, compactor_lr, ...
    """
    from histolean.core import train  # the training loop is only needed here

    train.seed_everything(seed)
    net = prepare(model, input_size, exclude=exclude, scope=scope)
    schedule = ResRepSchedule(net, flops_target=flops_target, lasso_strength=lasso_strength,
                              # a dry run masks at its one step (histolean.util.dryrun)
                              warmup_steps=dryrun.first(int(round(warmup_epochs * len(train_loader))), keep=0),
                              mask_interval=mask_interval, min_channels=min_channels, granularity=granularity)
    optimizer = make_optimizer(net, setting, **optimizer_overrides)
    result = train.fit(net, train_loader, None, epochs=epochs, optimizer=optimizer, after_backward=schedule,
                       seed=seed, device=device, progress=progress, desc="resrep",
                       **fit_settings(setting, **optimizer_overrides))
    return Remembered(net, schedule, result)
