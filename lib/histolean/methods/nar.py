"""Network Auto-Reduction (NAR) and input reduction (IR), Meirelles et al. 2022, Section 2.2.

NAR runs EfficientNet's compound scaling backwards: for a reduction level ``phi``

    depth d = alpha ** -phi,   width w = beta ** -phi,   resolution r = gamma ** -phi

with alpha * beta**2 * gamma**2 ~ 2, so each step of phi roughly halves the FLOPs. Blocks per
stage, every channel count and the input size are multiplied by d, w and r and rounded by one
rule (nearest integer, exact halves down, never below 1: :func:`histolean.core.arch.round_half_down`).

IR keeps the network and only divides the input size by ``gamma ** k``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, NamedTuple

import numpy as np

from histolean.core import arch
from histolean.core.arch import Spec
from histolean.util import dryrun

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15   # the paper's grid-search result


def factors(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> tuple[float, float, float]:
    """(d, w, r) = (alpha^-phi, beta^-phi, gamma^-phi)."""
    _check_coefficients(alpha, beta, gamma)
    return alpha ** -phi, beta ** -phi, gamma ** -phi


def theoretical_flop_ratio(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> float:
    """FLOPs(original) / FLOPs(reduced) if rounding were exact: (alpha * beta^2 * gamma^2) ** phi."""
    return (alpha * beta ** 2 * gamma ** 2) ** phi


def _check_coefficients(alpha, beta, gamma) -> None:
    for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 1.0):
            raise ValueError(f"NAR coefficient {name} must be a finite number >= 1, got {v!r}")


def reduce(spec: Spec, phi: int | float, *, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA,
           scale_stem: bool | None = None) -> Spec:
    """The NAR-reduced spec at level ``phi`` (``phi = 0`` returns ``spec`` itself).

    Works on any block-based spec: each stage's ``blocks`` shrink by d, every width by w, the
    input by r. The stem keeps its widths unless ``scale_stem`` (default: the spec's
    ``nar_scale_stem``: False for ResNets, whose conv1 stays at 64 for every phi in the paper's
    Table 1; True for Inception V4). Single-block stages (Inception reductions) stay single.
    """
    _check_level("reduce", spec, "phi", phi)
    if phi == 0:
        return spec
    d, w, r = factors(phi, alpha, beta, gamma)
    stem = spec.nar_scale_stem if scale_stem is None else bool(scale_stem)
    return arch.scale(spec, d, w, r, scale_stem=stem, variant=f"NAR phi={phi:g}")


def _check_level(fn: str, spec, name: str, value) -> None:
    if not isinstance(spec, Spec):
        raise TypeError(f"nar.{fn} expects a histolean.core.arch.Spec, got {type(spec).__name__}")
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"nar.{fn}({spec.name}): {name} must be a finite number >= 0, got {value!r}")


def input_reduction(spec: Spec, k: int | float, *, gamma: float = GAMMA) -> Spec:
    """IR level ``k``: the same network with the input divided by ``gamma ** k`` (``k = 0``: ``spec``)."""
    _check_level("input_reduction", spec, "k", k)
    if k == 0:
        return spec
    _check_coefficients(1.0, 1.0, gamma)
    return arch.scale(spec, resolution=gamma ** -k, variant=f"IR {k:g}")


class GridCandidate(NamedTuple):
    alpha: float
    beta: float
    gamma: float
    constraint: float     # alpha * beta^2 * gamma^2
    score: float


def _default_grid() -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in np.arange(1.0, 1.501, 0.05))


def grid_search(score_fn: Callable[[float, float, float], float], *,
                alphas: Iterable[float] | None = None, betas: Iterable[float] | None = None,
                gammas: Iterable[float] | None = None, target: float = 2.0, tol: float = 0.1,
                progress: bool = False) -> list[GridCandidate]:
    """EfficientNet's coefficient search, as the paper used it to pick (alpha, beta, gamma).

    Every (alpha, beta, gamma) on the grids (default 1.00, 1.05, ..., 1.50 each) with
    ``|alpha * beta^2 * gamma^2 - target| <= tol`` is scored with ``score_fn(alpha, beta, gamma)``
    (higher is better: e.g. the validation AUC of a short training run of ``reduce(spec, 1, ...)``).
    Returns all candidates, best first; a score that is NaN or raises is ranked last (NaN);
    when every candidate fails, a RuntimeError says so. A dry run (``histolean.util.dryrun``)
    scores the first feasible candidate only.
    """
    grids = [tuple(float(v) for v in (g if g is not None else _default_grid())) for g in (alphas, betas, gammas)]
    for name, g in zip(("alphas", "betas", "gammas"), grids):
        if not g:
            raise ValueError(f"grid_search: {name} is empty")
        if any(not math.isfinite(v) or v < 1.0 for v in g):
            raise ValueError(f"grid_search: {name} must hold finite numbers >= 1 (a reduction factor), got {g}")
    if not (tol >= 0 and target > 0):
        raise ValueError(f"grid_search: need target > 0 and tol >= 0, got target={target}, tol={tol}")
    feasible = [(a, b, g, a * b * b * g * g) for a in grids[0] for b in grids[1] for g in grids[2]
                if abs(a * b * b * g * g - target) <= tol]
    if not feasible:
        raise ValueError(f"grid_search: no (alpha, beta, gamma) on the grids satisfies |alpha*beta^2*gamma^2 - "
                         f"{target}| <= {tol}; widen the grids or the tolerance")
    feasible = feasible[:dryrun.first(len(feasible))]   # a dry run scores the first candidate only
    iterator = feasible
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(feasible, desc="NAR grid search")
    ranking = []
    for a, b, g, c in iterator:
        try:
            score = float(score_fn(a, b, g))
        except Exception as err:  # one failed candidate must not lose the whole search
            print(f"grid_search: score_fn({a}, {b}, {g}) raised {type(err).__name__}: {err}; ranked last")
            score = float("nan")
        ranking.append(GridCandidate(a, b, g, c, score))
    if ranking and all(math.isnan(c.score) for c in ranking):
        raise RuntimeError(f"grid_search: score_fn failed or gave NaN for all {len(ranking)} candidates; "
                           "see the messages above")
    return sorted(ranking, key=lambda c: (math.isnan(c.score), -c.score if not math.isnan(c.score) else 0.0))


# the NAR levels the paper's cost tables report per network (Table 3: ResNet50V2, Table 4: Inception V4)
PAPER_NAR_LEVELS = {"resnet50v2": (1, 2, 3), "inception_v4": (1, 2, 3, 4, 5, 6)}


def paper_variants(spec: Spec, nar_levels: Iterable[int] = (1, 2, 3),
                   ir_levels: Iterable[int] = (1, 2, 3, 4, 5, 6)) -> list[tuple[str, dict, Spec]]:
    """(method, setting, spec) for the original, its NAR levels and its IR levels, as the paper's Tables 3-4."""
    out: list[tuple[str, dict, Spec]] = [("original", {}, spec)]
    out += [("ir", {"k": int(k)}, input_reduction(spec, k)) for k in ir_levels]
    out += [("nar", {"phi": int(p)}, reduce(spec, p)) for p in nar_levels]
    return out
