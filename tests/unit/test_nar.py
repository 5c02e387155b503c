"""NAR and IR: the rounding rule, the paper's reduced ResNet50V2, properties, the grid search."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from histolean import arch, flops, models, nar
from histolean.study import published

RESNET = arch.resnet50v2()
INCEPTION = arch.inception_v4(input_size=240)   # the paper's 50 um patch size for both networks


@pytest.mark.parametrize("phi, blocks, widths, size", [
    (1, (2, 3, 5, 2), (58, 116, 233, 465), 209),
    (2, (2, 3, 4, 2), (53, 106, 212, 423), 181),
    (3, (2, 2, 3, 2), (48, 96, 192, 385), 158),
])
def test_resnet50v2_reductions_match_the_issue(phi, blocks, widths, size):
    small = nar.reduce(RESNET, phi)
    assert small.blocks == blocks
    assert tuple(w[0] for w in small.widths) == widths
    assert tuple(s.out_channels for s in small.stages) == tuple(4 * w for w in widths)   # 58 -> 232
    assert small.input_size == size
    assert small.stem == RESNET.stem              # conv1 stays 7x7, 64 (paper's Table 1)
    assert small.variant == f"NAR phi={phi}"


def test_resnet50v2_reduced_params_are_close_to_table1():
    # Our rule gives the issue's widths; the paper's parameter counts differ by < 0.5 % (its
    # exact per-layer rounding is not published).
    for row in published.table("nar", "table1_resnet50v2_nar"):
        ours = flops.count_params(nar.reduce(RESNET, row["phi"]), include_bn_stats=True)
        assert ours == pytest.approx(row["params"], rel=0.005)
    assert flops.count_params(RESNET, include_bn_stats=True) == 23_568_898


def test_input_reduction_sizes_and_unchanged_network():
    sizes = [nar.input_reduction(RESNET, k).input_size for k in range(1, 7)]
    assert sizes == [209, 181, 158, 137, 119, 104]
    ir3 = nar.input_reduction(RESNET, 3)
    assert ir3.stages == RESNET.stages and ir3.variant == "IR 3"
    assert flops.count_params(ir3) == flops.count_params(RESNET)


def test_rounding_rule():
    assert arch.round_half_down(2.5) == 2 and arch.round_half_down(3 / 1.2) == 2   # 2.5000000000000004
    assert arch.round_half_down(2.51) == 3 and arch.round_half_down(157.8) == 158
    assert arch.scale_count(1, 0.01) == 1                                           # never below one


def test_reduce_zero_is_identity():
    assert nar.reduce(RESNET, 0) is RESNET
    assert nar.input_reduction(INCEPTION, 0) is INCEPTION


def test_bad_phi_and_coefficients():
    with pytest.raises(ValueError, match="phi must be"):
        nar.reduce(RESNET, -1)
    with pytest.raises(ValueError, match="alpha"):
        nar.reduce(RESNET, 1, alpha=0.9)
    with pytest.raises(TypeError, match="Spec"):
        nar.reduce("resnet50v2", 1)


TINY = arch.tiny(input_size=96, width=16)


@settings(max_examples=25, deadline=None)
@given(phi=st.integers(min_value=0, max_value=7))
def test_flops_fall_strictly_with_phi_on_a_tiny_spec(phi):
    assert flops.flop_count(nar.reduce(TINY, phi + 1)) < flops.flop_count(nar.reduce(TINY, phi))


@settings(max_examples=40, deadline=None)
@given(d=st.floats(0.01, 1.0), w=st.floats(0.01, 1.0), r=st.floats(0.01, 1.0))
def test_scale_never_goes_below_one_and_never_grows(d, w, r):
    small = arch.scale(RESNET, d, w, r)
    for before, after in zip(RESNET.stages, small.stages):
        assert 1 <= after.blocks <= before.blocks
        assert all(1 <= a <= b for a, b in zip(after.widths, before.widths))
    assert 1 <= small.input_size <= RESNET.input_size


def test_flops_fall_strictly_for_the_papers_networks():
    for spec, top in ((RESNET, 3), (INCEPTION, 6)):
        costs = [flops.flop_count(nar.reduce(spec, phi)) for phi in range(top + 1)]
        assert all(a > b for a, b in zip(costs, costs[1:])), costs
        ir = [flops.flop_count(nar.input_reduction(spec, k)) for k in range(7)]
        assert all(a > b for a, b in zip(ir, ir[1:])), ir


def test_each_phi_roughly_halves_resnet_flops():
    base = flops.flop_count(RESNET)
    for phi in (1, 2, 3):
        ratio = base / flops.flop_count(nar.reduce(RESNET, phi))
        assert 0.8 * nar.theoretical_flop_ratio(phi) < ratio < 1.25 * nar.theoretical_flop_ratio(phi)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [nar.reduce(RESNET, p) for p in (1, 2, 3)] +
                         [nar.reduce(INCEPTION, p) for p in range(1, 7)], ids=lambda s: s.label)
def test_every_reduced_spec_trains_one_step_at_its_own_input_size(spec):
    # Batch 1 in eval mode (BN on running statistics: Inception's last maps are 1x1 at 104 px,
    # and train-mode BN needs more than one value per channel); gradients still reach every weight.
    net = models.build(spec, seed=0).eval()
    x = torch.randn(1, 3, spec.input_size, spec.input_size)
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([1]))
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None for p in net.parameters())


def _toy_score(a, b, g):
    """Peaks at the paper's coefficients; deterministic and cheap."""
    return -((a - 1.2) ** 2 + (b - 1.1) ** 2 + (g - 1.15) ** 2)


def test_grid_search_ranks_by_score_under_the_constraint():
    grid = [1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3]
    ranking = nar.grid_search(_toy_score, alphas=grid, betas=grid, gammas=grid, target=2.0, tol=0.1)
    best = ranking[0]
    assert (best.alpha, best.beta, best.gamma) == (1.2, 1.1, 1.15)
    assert best.constraint == pytest.approx(1.2 * 1.1 ** 2 * 1.15 ** 2)
    assert all(abs(c.constraint - 2.0) <= 0.1 for c in ranking)
    assert [c.score for c in ranking] == sorted((c.score for c in ranking), reverse=True)
    a, b, g, constraint, score = best                     # plain tuples too
    assert score == 0.0
    # Every feasible grid point is scored exactly once.
    feasible = sum(abs(x * y * y * z * z - 2.0) <= 0.1 for x in grid for y in grid for z in grid)
    assert len(ranking) == feasible
    from histolean.util import dryrun

    with dryrun.enabled():   # a dry run scores only the first feasible point
        assert len(nar.grid_search(_toy_score, alphas=grid, betas=grid, gammas=grid, target=2.0, tol=0.1)) == 1


def test_grid_search_failures_rank_last_and_empty_grid_errors():
    def flaky(a, b, g):
        if a == 1.3:
            raise RuntimeError("diverged")
        return _toy_score(a, b, g)

    grid = [1.0, 1.1, 1.15, 1.2, 1.3]
    ranking = nar.grid_search(flaky, alphas=grid, betas=grid, gammas=grid)
    assert math.isnan(ranking[-1].score) and ranking[-1].alpha == 1.3
    with pytest.raises(ValueError, match="no \\(alpha, beta, gamma\\)"):
        nar.grid_search(_toy_score, alphas=[1.0], betas=[1.0], gammas=[1.0])
    with pytest.raises(ValueError, match="alphas"):
        nar.grid_search(_toy_score, alphas=[0.5])
