"""pcam_idc_zoo.paper_claims on constructed rows: every claim's verdict can come out more than one way (holds,
fails, not resolved, not testable), a model that did not learn is kept out, and the claims import no Keras."""

from __future__ import annotations

import copy
import zlib

import numpy as np
import pytest

from histolean.core import metrics
from histolean.experiments.pcam_idc_zoo import claims as zc
from histolean.experiments.pcam_idc_zoo import statistics as zs
from histolean.study import claims

SCALE = {"base_input": 96, "epochs": 2, "paper_epochs": 15, "runs": 1, "n_train": 64, "n_valid": 32, "n_test": 200}
LAYERS = {"b2": 10, "b6": 28, "mobilenet": 88, "vgg19": 26, "inception_v3": 313, "resnet50": 177}
N = 200
LABELS = np.arange(N) % 2
PATIENTS = [f"patient{i // 10}" for i in range(N)]   # 20 patients of 10 patches, both classes each


def probs(strength: float, seed: int) -> list[float]:
    """Test probabilities whose AUC rises with ``strength`` (0: chance; 3: about 0.98), noise from ``seed``."""
    rng = np.random.default_rng(seed)
    return list(1 / (1 + np.exp(-(strength * (2 * LABELS - 1) + rng.normal(size=N)))))


def ok(ds, method, model, strength, *, seed=None, status="ok", tpe=1.0, **extra):
    p = probs(strength, zlib.crc32(f"{ds}/{method}/{model}".encode()) if seed is None else seed)
    return {"kind": "variant", "dataset": ds, "method": method, "model": model, "status": status, "data_kind": "real",
            "metrics": {"auc": metrics.auc(LABELS, p), "accuracy": 0.7, "loss": 0.5}, "scale": SCALE,
            "time_per_epoch_s": tpe, "layers": LAYERS[model], "params": 1000 * LAYERS[model],
            "paper_name": model.upper(), "setting": {}, "test_probs": p, "test_labels": [int(v) for v in LABELS],
            "test_groups": PATIENTS if ds == "idc" else None, **extra}


def not_learned(ds, method, model, strength=0.0, **kw):
    return ok(ds, method, model, strength, status="did_not_learn", **kw)


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
    rows = [ok("pcam", "full", "b2", 1.0), skipped("pcam", "transfer", "mobilenet", OFFLINE),
            {"kind": "claim", "claim": "an older claim row, left out"},
            {"kind": "variant", "dataset": "none", "method": "architecture", "model": "b2", "data_kind": "none"}]
    result = zc.paper_claims(rows)
    assert all(isinstance(c, claims.Claim) for c in result) and len(result) >= 14
    for c in result:
        assert c.rule and c.scale and c.paper.startswith("Bonnet 2024")
    claims.markdown(result)   # displayable


def test_paired_auc_resamples_patients_for_idc_and_patches_for_pcam():
    a, b = ok("idc", "full", "b2", 2.0), ok("idc", "full", "b6", 1.0)
    d = zs.paired_auc(a, b)
    assert d["ci_unit"] == "group" and d["n_groups"] == 20 and d["auc_diff"] == pytest.approx(
        d["auc_first"] - d["auc_second"])
    assert zs.paired_auc(ok("pcam", "full", "b2", 2.0), ok("pcam", "full", "b6", 1.0))["ci_unit"] == "item"
    other = dict(b, test_labels=list(reversed(b["test_labels"])))
    with pytest.raises(ValueError, match="not scored on the same test patches"):
        zs.paired_auc(a, other)


def test_full_beats_imagenet_transfer_paired_per_model():
    rows = [ok("pcam", "full", "mobilenet", 3.0), ok("pcam", "transfer", "mobilenet", 0.5)]
    c = by_claim(zc.paper_claims(rows), "PCAM: full training beats ImageNet")
    assert c.verdict == claims.HOLDS and c.interval[0] > 0 and "mobilenet: full" in c.ours
    assert "9 of 10" in c.paper_value and "densenet201 transfer 0.91 > full 0.88" in c.note
    rows = [ok("pcam", "full", "mobilenet", 0.5), ok("pcam", "transfer", "mobilenet", 5.0)]
    assert verdict(rows, "PCAM: full training beats ImageNet") == claims.FAILS
    # the same model, the same strength, other noise: the interval straddles 0
    rows = [ok("pcam", "full", "mobilenet", 1.0, seed=1), ok("pcam", "transfer", "mobilenet", 1.0, seed=2)]
    assert verdict(rows, "PCAM: full training beats ImageNet") == claims.NOT_RESOLVED
    # one model fails, another holds: "always" fails
    rows = [ok("idc", "full", "mobilenet", 3.0), ok("idc", "transfer", "mobilenet", 0.5),
            ok("idc", "full", "resnet50", 0.5), ok("idc", "transfer", "resnet50", 3.0)]
    c = by_claim(zc.paper_claims(rows), "IDC: full training beats ImageNet")
    assert c.verdict == claims.FAILS and c.interval is None and "densenet169 transfer 0.90 = full 0.90" in c.note


def test_imagenet_transfer_offline_is_not_testable_and_in_domain_is_not_pooled():
    rows = [ok("idc", "full", "b2", 2.0), skipped("idc", "transfer", "mobilenet", OFFLINE),
            ok("idc", "transfer_pcam", "b2", 0.2)]
    result = zc.paper_claims(rows)
    c = by_claim(result, "IDC: full training beats ImageNet")
    assert c.verdict == claims.NOT_TESTABLE and "not in the local Keras cache" in c.ours and "cannot be downloaded" in c.note
    assert by_claim(result, "IDC: full training beats transfer also").verdict == claims.HOLDS
    assert by_claim(result, "IDC: ImageNet transfer's test AUC is significantly below").verdict == claims.NOT_TESTABLE
    rows = [ok("idc", "full", "b2", 0.8), ok("idc", "transfer", "mobilenet", 0.7)]   # nothing to pair
    c = by_claim(zc.paper_claims(rows), "IDC: full training beats ImageNet")
    assert c.verdict == claims.NOT_TESTABLE and "both" in c.ours


def test_in_domain_transfer_claim():
    rows = [ok("idc", "full", "b2", 3.0), ok("idc", "transfer_pcam", "b2", 0.3)]
    assert verdict(rows, "IDC: full training beats transfer also") == claims.HOLDS
    rows = [ok("idc", "full", "b2", 0.5), ok("idc", "transfer_pcam", "b2", 5.0)]
    assert verdict(rows, "IDC: full training beats transfer also") == claims.FAILS
    assert verdict(rows[:1], "IDC: full training beats transfer also") == claims.NOT_TESTABLE


def test_a_model_that_did_not_learn_is_kept_out_of_every_comparison():
    # the transfer row that did not learn would make "full beats transfer" hold; it is left out instead
    rows = [ok("idc", "full", "b2", 3.0), not_learned("idc", "transfer_pcam", "b2")]
    c = by_claim(zc.paper_claims(rows), "IDC: full training beats transfer also")
    assert c.verdict == claims.NOT_TESTABLE and "did not learn" in c.ours and "b2" in c.ours
    # a model that did not learn, whatever its test AUC, is not ranked against VGG19
    rows = [ok("idc", "full", "vgg19", 3.0), ok("idc", "full", "b2", 0.5), not_learned("idc", "full", "mobilenet", 6.0)]
    c = by_claim(zc.paper_claims(rows), "IDC: VGG19 is the best")
    assert c.verdict == claims.HOLDS and "mobilenet" not in c.ours
    rows[0] = not_learned("idc", "full", "vgg19")
    c = by_claim(zc.paper_claims(rows), "IDC: VGG19 is the best")
    assert c.verdict == claims.NOT_TESTABLE and "VGG19 did not learn" in c.ours
    # nor in the Welch test on our rows; its timing still counts
    rows = [ok("pcam", "full", "b2", 2.0, tpe=10.0), not_learned("pcam", "full", "b6", tpe=18.0)]
    assert verdict(rows, "PCam: one epoch of B6") == claims.HOLDS


def test_our_welch_test_uses_imagenet_transfer_only():
    full = [ok("pcam", "full", m, 3.0) for m in ("b2", "b6", "mobilenet")]
    full[0]["metrics"]["auc"], full[1]["metrics"]["auc"], full[2]["metrics"]["auc"] = 0.90, 0.91, 0.92
    low = [ok("pcam", "transfer", m, 1.0) for m in ("b2", "b6", "mobilenet")]
    for r, a in zip(low, (0.60, 0.61, 0.62)):
        r["metrics"]["auc"] = a
    c = by_claim(zc.paper_claims(full + low), "PCAM: ImageNet transfer's test AUC is significantly below")
    assert c.verdict == claims.HOLDS and "unpaired" in c.note
    for r, a in zip(low, (0.97, 0.98, 0.99)):
        r["metrics"]["auc"] = a
    assert verdict(full + low, "PCAM: ImageNet transfer's test AUC is significantly below") == claims.FAILS
    for r, a in zip(low, (0.70, 0.99, 0.91)):
        r["metrics"]["auc"] = a
    assert verdict(full + low, "PCAM: ImageNet transfer's test AUC is significantly below") == claims.NOT_RESOLVED
    # in-domain transfer rows are not pooled into the paper's ImageNet test
    indomain = [dict(r, method="transfer_pcam") for r in low]
    c = by_claim(zc.paper_claims(full + indomain), "PCAM: ImageNet transfer's test AUC is significantly below")
    assert c.verdict == claims.NOT_TESTABLE


def test_the_papers_welch_test_is_recomputed_from_its_tables_with_its_flaws_named():
    c = by_claim(zc.paper_claims([]), "PCAM: the paper's Welch t-test follows")
    assert c.verdict == claims.HOLDS and "t = -2.5527" in c.ours and "unpaired" in c.note and "B2 and B6" in c.note
    assert verdict([], "IDC: the paper's Welch t-test follows") == claims.HOLDS
    paper = zc.published_tables()
    misprinted = copy.deepcopy(paper)
    misprinted["text_welch"][0]["t"] = -2.60
    assert verdict([], "PCAM: the paper's Welch t-test follows", paper=misprinted) == claims.FAILS


def test_the_papers_tables_contradict_always_worse():
    c = by_claim(zc.paper_claims([]), "PCAM: the paper's own table shows transfer learning worse")
    assert c.verdict == claims.FAILS and "densenet201" in c.ours and "9 of 10" in c.ours
    c = by_claim(zc.paper_claims([]), "IDC: the paper's own table shows transfer learning worse")
    assert c.verdict == claims.FAILS and "densenet169 transfer 0.90 = full 0.90" in c.ours
    paper = copy.deepcopy(zc.published_tables())
    for r in paper["table3_pcam"]:
        if r["method"] == "transfer":
            r["auc"] = 0.5
    assert verdict([], "PCAM: the paper's own table shows transfer learning worse", paper=paper) == claims.HOLDS


def test_vgg19_best_by_paired_intervals():
    rows = [ok("idc", "full", "b2", 0.5), ok("idc", "full", "vgg19", 3.0)]
    c = by_claim(zc.paper_claims(rows), "IDC: VGG19 is the best")
    assert c.verdict == claims.HOLDS and "tied with mobilenet" in c.paper_value and c.interval[0] > 0
    rows[1] = ok("idc", "full", "vgg19", 0.1)
    rows[0] = ok("idc", "full", "b2", 3.0)
    assert verdict(rows, "IDC: VGG19 is the best") == claims.FAILS
    rows = [ok("idc", "full", "b2", 1.0, seed=1), ok("idc", "full", "vgg19", 1.0, seed=2)]   # must stay open
    assert verdict(rows, "IDC: VGG19 is the best") == claims.NOT_RESOLVED
    assert verdict(rows[:1], "IDC: VGG19 is the best") == claims.NOT_TESTABLE                 # VGG19 not trained
    assert verdict(rows[1:], "IDC: VGG19 is the best") == claims.NOT_TESTABLE                 # nothing to rank against


def test_deeper_models_beat_b2_with_the_linear_half_dropped():
    rows = [ok("pcam", "full", "b2", 0.5), ok("pcam", "full", "mobilenet", 3.0), ok("pcam", "full", "resnet50", 3.0)]
    c = by_claim(zc.paper_claims(rows), "PCAM: deeper models beat the two-layer B2")
    assert c.verdict == claims.HOLDS and "not linear" in c.note and "efficientnetv2_b0 0.84" in c.paper_value
    rows[2] = ok("pcam", "full", "resnet50", 1.0, seed=5)
    rows[0] = ok("pcam", "full", "b2", 1.0, seed=6)
    assert verdict(rows, "PCAM: deeper models beat the two-layer B2") == claims.NOT_RESOLVED
    rows[1] = ok("pcam", "full", "mobilenet", 0.0)
    rows[0] = ok("pcam", "full", "b2", 3.0)
    assert verdict(rows, "PCAM: deeper models beat the two-layer B2") == claims.FAILS
    assert verdict(rows[1:], "PCAM: deeper models beat the two-layer B2") == claims.NOT_TESTABLE
    assert verdict([not_learned("idc", "full", "b2"), ok("idc", "full", "b6", 2.0)],
                   "IDC: deeper models beat") == claims.NOT_TESTABLE


def test_tuning_helps_by_a_paired_interval():
    setting = {"tune_max_epochs": 2, "tune_n_train": 64}
    rows = [ok("pcam", "full", "b2", 0.5), ok("pcam", "tuned", "b2", 3.0, setting=setting)]
    c = by_claim(zc.paper_claims(rows), "PCam: Hyperband tuning improves B2")
    assert c.verdict == claims.HOLDS and "2 max epochs, 64 patches" in c.scale and c.interval[0] > 0
    assert "IV3 0.91 -> 0.95" in c.paper_value
    rows[1] = ok("pcam", "tuned", "b2", 0.0, setting=setting)
    assert verdict(rows, "PCam: Hyperband tuning improves B2") == claims.FAILS
    rows = [ok("pcam", "full", "b2", 1.0, seed=1), ok("pcam", "tuned", "b2", 1.0, seed=2, setting=setting)]
    assert verdict(rows, "PCam: Hyperband tuning improves B2") == claims.NOT_RESOLVED
    rows[1] = not_learned("pcam", "tuned", "b2", setting=setting)
    assert verdict(rows, "PCam: Hyperband tuning improves B2") == claims.NOT_TESTABLE
    rows[1] = skipped("pcam", "tuned", "inception_v3", "too small")
    rows[1]["paper_name"] = "IV3"
    assert verdict(rows, "PCam: Hyperband tuning improves IV3") == claims.NOT_TESTABLE
    assert verdict(rows[:1], "PCam: Hyperband tuning improves test AUC") == claims.NOT_TESTABLE


def test_epoch_time_ratios_against_the_papers_gpu_range():
    rows = [ok("pcam", "full", "b2", 1.0, tpe=10.0), ok("pcam", "full", "b6", 1.0, tpe=18.0)]
    c = by_claim(zc.paper_claims(rows), "PCam: one epoch of B6")
    assert c.verdict == claims.HOLDS and "1.66-2.19x" in c.paper_value   # Table 2: V100 to A100
    rows[1] = ok("pcam", "full", "b6", 1.0, tpe=30.0)
    assert verdict(rows, "PCam: one epoch of B6") == claims.FAILS
    assert verdict(rows, "PCam: one epoch of Inception V3") == claims.NOT_TESTABLE
    rows.append(ok("pcam", "full", "inception_v3", 1.0, tpe=60.0))
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


def test_a_user_folder_in_a_slot_is_decided_like_the_slot_and_named_in_the_scale():
    rows = [ok("pcam", "full", m, 2.0 if m == "vgg19" else 1.0) for m in ("b2", "vgg19", "mobilenet")]
    user = [r | {"dataset": "folder:/data/mine", "slot": "pcam", "data_kind": "user"} for r in copy.deepcopy(rows)]
    ours, theirs = zc.paper_claims(rows), zc.paper_claims(user)
    assert [c.verdict for c in ours] == [c.verdict for c in theirs]
    best = by_claim(theirs, "PCAM: VGG19 is the best")
    assert best.verdict == by_claim(ours, "PCAM: VGG19 is the best").verdict
    assert "PCAM slot: folder:/data/mine (user)" in best.scale and "the folder's groups" in best.scale
