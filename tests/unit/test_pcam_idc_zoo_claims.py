"""pcam_idc_zoo.paper_claims on constructed rows: every claim's verdict can come out more than one way, and
the claims import no Keras."""

from __future__ import annotations

import copy

from histolean.experiments.pcam_idc_zoo import claims as zc
from histolean.study import claims

SCALE = {"base_input": 96, "epochs": 2, "paper_epochs": 15, "runs": 1, "n_train": 64, "n_valid": 32, "n_test": 64}
LAYERS = {"b2": 10, "b6": 28, "mobilenet": 88, "vgg19": 26, "inception_v3": 313, "resnet50": 177}


def ok(ds, method, model, auc, *, tpe=1.0, layers=None, **extra):
    return {"kind": "variant", "dataset": ds, "method": method, "model": model, "status": "ok", "data_kind": "real",
            "metrics": {"auc": auc, "accuracy": 0.7, "loss": 0.5}, "scale": SCALE, "time_per_epoch_s": tpe,
            "layers": layers or LAYERS[model], "params": 1000 * (layers or LAYERS[model]),
            "paper_name": model.upper(), "setting": {}, **extra}


def skipped(ds, method, model, reason):
    return {"kind": "variant", "dataset": ds, "method": method, "model": model, "status": "skipped",
            "data_kind": "real", "metrics": {}, "scale": SCALE, "skip_reason": reason, "setting": {}}


def by_claim(result, start):
    found = [c for c in result if c.claim.startswith(start)]
    assert len(found) == 1, f"expected one claim starting {start!r}, got {[c.claim for c in result]}"
    return found[0]


def verdict(rows, start, **kw):
    return by_claim(zc.paper_claims(rows, **kw), start).verdict


OFFLINE = "mobilenet: ImageNet weights not in the local Keras cache (/x) and this machine cannot download them"


def test_every_claim_is_a_valid_record_with_its_rule_and_scale():
    rows = [ok("pcam", "full", "b2", 0.8), skipped("pcam", "transfer", "mobilenet", OFFLINE),
            {"kind": "claim", "claim": "an older claim row, left out"},
            {"kind": "variant", "dataset": "none", "method": "architecture", "model": "b2", "data_kind": "none"}]
    result = zc.paper_claims(rows)
    assert all(isinstance(c, claims.Claim) for c in result) and len(result) >= 12
    for c in result:
        assert c.rule and c.scale and c.paper.startswith("Bonnet 2024")
        if c.verdict in (claims.HOLDS, claims.FAILS) and "deterministic" not in c.rule:
            assert "no interval" in c.rule   # a sign or a single number decided it, and the rule says so
    claims.markdown(result)   # displayable


def test_full_beats_imagenet_transfer_by_the_sign_of_the_mean_paired_difference():
    rows = [ok("pcam", "full", "b2", 0.8), ok("pcam", "full", "mobilenet", 0.85),
            ok("pcam", "transfer", "mobilenet", 0.75)]
    c = by_claim(zc.paper_claims(rows), "PCAM: full training beats ImageNet")
    assert c.verdict == claims.HOLDS and "1 of 1" in c.ours
    assert "9 of 10" in c.paper_value   # DenseNet201's transfer beats its full training in Table 3
    rows[-1] = ok("pcam", "transfer", "mobilenet", 0.9)
    assert verdict(rows, "PCAM: full training beats ImageNet") == claims.FAILS
    rows[-1] = ok("pcam", "transfer", "mobilenet", 0.85)   # a tie is no win
    assert verdict(rows, "PCAM: full training beats ImageNet") == claims.FAILS


def test_imagenet_transfer_offline_is_not_testable_with_the_reason():
    rows = [ok("idc", "full", "b2", 0.8), skipped("idc", "transfer", "mobilenet", OFFLINE)]
    c = by_claim(zc.paper_claims(rows), "IDC: full training beats ImageNet")
    assert c.verdict == claims.NOT_TESTABLE and "not in the local Keras cache" in c.ours and "offline" in c.note
    # transfer ran, but no model was also fully trained: still nothing to pair
    rows = [ok("idc", "full", "b2", 0.8), ok("idc", "transfer", "mobilenet", 0.7)]
    c = by_claim(zc.paper_claims(rows), "IDC: full training beats ImageNet")
    assert c.verdict == claims.NOT_TESTABLE and "both" in c.ours


def test_in_domain_transfer_claim():
    rows = [ok("idc", "full", "b2", 0.8), ok("idc", "transfer_pcam", "b2", 0.7)]
    assert verdict(rows, "IDC: full training beats transfer also") == claims.HOLDS
    rows[1] = ok("idc", "transfer_pcam", "b2", 0.82)
    assert verdict(rows, "IDC: full training beats transfer also") == claims.FAILS
    assert verdict(rows[:1], "IDC: full training beats transfer also") == claims.NOT_TESTABLE


def test_our_welch_test_at_the_papers_level():
    full = [ok("pcam", "full", m, a) for m, a in (("b2", 0.90), ("b6", 0.91), ("mobilenet", 0.92))]
    low = [ok("pcam", "transfer", m, a) for m, a in (("b2", 0.60), ("b6", 0.61), ("mobilenet", 0.62))]
    assert verdict(full + low, "PCAM: transfer learning's test AUC is significantly below") == claims.HOLDS
    high = [ok("pcam", "transfer", m, a) for m, a in (("b2", 0.97), ("b6", 0.98), ("mobilenet", 0.99))]
    assert verdict(full + high, "PCAM: transfer learning's test AUC is significantly below") == claims.FAILS
    noisy = [ok("pcam", "transfer", m, a) for m, a in (("b2", 0.70), ("b6", 0.99), ("mobilenet", 0.91))]
    assert verdict(full + noisy, "PCAM: transfer learning's test AUC is significantly below") == claims.NOT_RESOLVED
    # one row a side (the smoke profile's in-domain pair): too few for a t-test
    c = by_claim(zc.paper_claims([full[0], ok("pcam", "transfer_pcam", "b2", 0.6)]),
                 "PCAM: transfer learning's test AUC is significantly below")
    assert c.verdict == claims.NOT_TESTABLE and "too few" in c.ours


def test_the_papers_welch_test_is_recomputed_from_its_tables():
    c = by_claim(zc.paper_claims([]), "PCAM: the paper's Welch t-test follows")
    assert c.verdict == claims.HOLDS and "t = -2.5527" in c.ours
    assert verdict([], "IDC: the paper's Welch t-test follows") == claims.HOLDS
    paper = zc.published_tables()
    misprinted = copy.deepcopy(paper)
    misprinted["text_welch"][0]["t"] = -2.60
    assert verdict([], "PCAM: the paper's Welch t-test follows", paper=misprinted) == claims.FAILS


def test_vgg19_best_by_rank():
    rows = [ok("idc", "full", "b2", 0.8), ok("idc", "full", "vgg19", 0.9)]
    c = by_claim(zc.paper_claims(rows), "IDC: VGG19 is the best")
    assert c.verdict == claims.HOLDS and "rank 1 of 11" in c.paper_value   # tied with MobileNet at 0.95
    rows[1] = ok("idc", "full", "vgg19", 0.7)
    assert verdict(rows, "IDC: VGG19 is the best") == claims.FAILS
    rows[1] = ok("idc", "full", "vgg19", 0.8)   # a tie at the top ranks first
    assert verdict(rows, "IDC: VGG19 is the best") == claims.HOLDS
    assert verdict(rows[:1], "IDC: VGG19 is the best") == claims.NOT_TESTABLE                 # VGG19 not trained
    assert verdict(rows[1:], "IDC: VGG19 is the best") == claims.NOT_TESTABLE                 # nothing to rank against


def test_depth_does_not_buy_auc_by_the_sign_of_spearman():
    shallow_best = [ok("pcam", "full", m, a) for m, a in (("b2", 0.9), ("mobilenet", 0.8), ("resnet50", 0.7))]
    c = by_claim(zc.paper_claims(shallow_best), "PCam: depth does not buy AUC")
    assert c.verdict == claims.HOLDS and "rho(AUC, layers) = -1.00" in c.ours
    assert "-0.20" in c.paper_value   # the same statistic over the paper's Tables 1 and 3
    deep_best = [ok("pcam", "full", m, a) for m, a in (("b2", 0.7), ("mobilenet", 0.8), ("resnet50", 0.9))]
    assert verdict(deep_best, "PCam: depth does not buy AUC") == claims.FAILS
    flat = [ok("pcam", "full", m, 0.8) for m in ("b2", "mobilenet", "resnet50")]
    assert verdict(flat, "PCam: depth does not buy AUC") == claims.NOT_RESOLVED
    assert verdict(deep_best[:2], "PCam: depth does not buy AUC") == claims.NOT_TESTABLE


def test_tuning_helps_by_the_sign_of_the_difference():
    setting = {"tune_max_epochs": 2, "tune_n_train": 64}
    rows = [ok("pcam", "full", "b2", 0.8), ok("pcam", "tuned", "b2", 0.85, setting=setting)]
    c = by_claim(zc.paper_claims(rows), "PCam: Hyperband tuning improves B2")
    assert c.verdict == claims.HOLDS and "2 max epochs, 64 patches" in c.scale
    assert "IV3 0.91 -> 0.95" in c.paper_value
    rows[1] = ok("pcam", "tuned", "b2", 0.78, setting=setting)
    assert verdict(rows, "PCam: Hyperband tuning improves B2") == claims.FAILS
    rows[1] = skipped("pcam", "tuned", "inception_v3", "too small")
    rows[1]["paper_name"] = "IV3"
    assert verdict(rows, "PCam: Hyperband tuning improves IV3") == claims.NOT_TESTABLE
    assert verdict(rows[:1], "PCam: Hyperband tuning improves test AUC") == claims.NOT_TESTABLE


def test_epoch_time_ratios_against_the_papers_gpu_range():
    rows = [ok("pcam", "full", "b2", 0.8, tpe=10.0), ok("pcam", "full", "b6", 0.8, tpe=18.0)]
    c = by_claim(zc.paper_claims(rows), "PCam: one epoch of B6")
    assert c.verdict == claims.HOLDS and "1.66-2.19x" in c.paper_value   # Table 2: V100 to A100
    rows[1] = ok("pcam", "full", "b6", 0.8, tpe=30.0)
    assert verdict(rows, "PCam: one epoch of B6") == claims.FAILS
    assert verdict(rows, "PCam: one epoch of Inception V3") == claims.NOT_TESTABLE
    rows.append(ok("pcam", "full", "inception_v3", 0.8, tpe=60.0))
    assert verdict(rows, "PCam: one epoch of Inception V3") == claims.HOLDS


def test_claims_module_needs_no_keras():
    import subprocess
    import sys

    code = ("import sys; from histolean.experiments.pcam_idc_zoo import paper_claims; paper_claims([]); "
            "print('keras' in sys.modules or 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_undefined_t_is_not_a_verdict():
    # a claim that cannot be decided is stated as such, never guessed: too few rows in the paper's table
    paper = zc.published_tables()
    tiny = copy.deepcopy(paper)
    tiny["table3_pcam"] = [r for r in paper["table3_pcam"] if r["model"] in ("b2", "vgg19")]  # 1 full + 1 transfer
    assert verdict([], "PCAM: the paper's Welch t-test follows", paper=tiny) == claims.NOT_TESTABLE
