"""Notebook 03's glue (``experiments.resrep_conversion``): the settings stated once, and the closing
claims decided on constructed rows."""

from __future__ import annotations

import inspect

import pytest

from histolean.core import arch
from histolean.experiments import resrep_conversion as rc
from histolean.methods import resrep
from histolean.study.claims import FAILS, HOLDS, NOT_TESTABLE


def conversion_row(model, conversion, *, reduction, epsilon=None, counted_off=0, exact=True, input_size=32,
                   target=0.5, auc=0.80, auc_before=0.82):
    original = 1_000_000
    counted = round(original / reduction)
    return {"kind": "variant", "model": model, "method": "resrep", "seed": 0, "dataset": "pcam", "data_kind": "real",
            "setting": {"conversion": conversion, "epsilon": epsilon, "scope": "any", "flops_target": target},
            "metrics": {"auc": auc, "auc_before": auc_before}, "flop_reduction": original / counted,
            "flops_counted": counted, "flops_predicted": counted + counted_off, "flops_original": original,
            "conversion_report": {"mode": conversion, "exact": exact, "removed_classes": 3, "max_removed_norm": 0.5,
                                  "max_output_diff": 1e-6 if exact else 2.0},
            "scale": {"input_size": input_size, "epochs": 4, "n_train": 256, "runs": 1}}


def make_rows(model="tiny", *, mask_reduction=2.1, eps_reduction=2.6, counted_off=0, exact=True, input_size=32):
    none = conversion_row(model, "none", reduction=1.0, input_size=input_size)
    return [none,
            conversion_row(model, "collapsed", reduction=1.0, exact=exact, input_size=input_size),
            conversion_row(model, "mask", reduction=mask_reduction, counted_off=counted_off, input_size=input_size),
            conversion_row(model, "epsilon", reduction=eps_reduction, epsilon=0.9, input_size=input_size)]


def verdicts(rows) -> list[str]:
    return [c.verdict for c in rc.paper_claims(rows)]


def test_a_clean_short_run_holds_and_its_epsilon_is_not_comparable():
    claims = rc.paper_claims(make_rows())
    # cost known from the mask; masks reach the target; official conversion lossless; epsilon 0.90
    assert [c.verdict for c in claims] == [HOLDS, HOLDS, HOLDS, NOT_TESTABLE]
    assert "1.33x" in claims[-1].claim and "2.60x fewer FLOPs" in claims[-1].ours


def test_a_counted_cost_that_differs_from_the_prediction_fails():
    assert verdicts(make_rows(counted_off=1))[0] == FAILS


def test_masks_short_of_the_target_fail():
    assert verdicts(make_rows(mask_reduction=1.8))[1] == FAILS       # target 0.5 of the FLOPs: 2x needed


def test_an_inexact_official_conversion_fails():
    assert verdicts(make_rows(exact=False))[2] == FAILS


@pytest.mark.parametrize("reduction, verdict", [(1.35, HOLDS), (2.6, FAILS)])
def test_epsilon_090_is_compared_on_resnet50v2_at_240_px(reduction, verdict):
    rows = make_rows("resnet50v2", eps_reduction=reduction, input_size=240)
    assert verdicts(rows)[-1] == verdict


def test_the_papers_table_in_our_vocabulary():
    at_090 = next(p for p in rc.paper_table() if p["epsilon"] == pytest.approx(0.9))
    assert at_090["flop_reduction"] == pytest.approx(9.65 / 7.27)   # Table 3: original / ResRep GFLOPs
    assert at_090["auc_change"] == pytest.approx(0.0)


def test_settings_are_stated_once_and_resolved_per_network():
    settings = rc.Settings(flops_target=0.5, epochs=4, optimizer_setting="nar", lr=2e-3, granularity=4)
    resnet = rc.network_spec("resnet50v2", 64)
    own = settings.for_network(resnet, {"lr": 0.01, "granularity": 8})
    assert own.scope == resrep.paper_scope(resnet) == "bottleneck"
    assert settings.for_network(rc.network_spec("tiny", 32)).scope == "any"
    assert (own.lr, own.granularity, own.lasso_strength) == (0.01, 8, resrep.OFFICIAL["lasso_strength"])
    assert own.row_setting()["granularity"] == 8 and own.row_setting()["lambda"] == own.lasso_strength
    accepted = set(inspect.signature(resrep.remember).parameters)
    assert set(own.remember_kwargs()) - {"lr", "compactor_lr"} <= accepted   # lr, compactor_lr: optimiser overrides
    with pytest.raises(ValueError, match="unknown setting"):
        settings.for_network(resnet, {"lamda": 1e-3})


def test_networks_by_name():
    assert rc.network_spec("tiny", 32) == arch.tiny(input_size=32, width=16)
    assert rc.network_spec("resnet50v2_nar2", 48).input_size == 48
    with pytest.raises(ValueError, match="unknown network"):
        rc.network_spec("resnet18", 32)
