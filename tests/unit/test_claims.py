"""The claim record, its decision rules and its table (study.claims), and claim rows (Recorder.add_claims)."""

from __future__ import annotations

import pytest

from histolean.study import claims
from histolean.study.records import Recorder, read_rows


def _claim(**kw):
    base = dict(paper="NAR, Table 3", claim="NAR phi=2 | cheaper", paper_value="3.26x", ours="3.46x",
                rule="holds if >= 1", verdict=claims.HOLDS, scale="exact")
    return claims.Claim(**{**base, **kw})


@pytest.mark.parametrize("lo, hi, verdict", [(-0.01, 0.015, claims.HOLDS), (0.03, 0.05, claims.FAILS),
                                             (-0.04, -0.025, claims.FAILS), (-0.03, 0.01, claims.NOT_RESOLVED)])
def test_equivalence_rule(lo, hi, verdict):
    assert claims.equivalent(lo, hi, 0.02) == verdict


@pytest.mark.parametrize("lo, hi, direction, verdict", [
    (0.01, 0.05, "higher", claims.HOLDS), (-0.05, -0.01, "higher", claims.FAILS), (-0.01, 0.05, "higher", claims.NOT_RESOLVED),
    (-0.05, -0.01, "lower", claims.HOLDS), (0.01, 0.05, "lower", claims.FAILS), (-0.01, 0.05, "lower", claims.NOT_RESOLVED)])
def test_directional_rule(lo, hi, direction, verdict):
    assert claims.directional(lo, hi, direction) == verdict


def test_rules_refuse_what_is_not_an_interval():
    with pytest.raises(ValueError, match="not an interval"):
        claims.equivalent(0.1, -0.1, 0.02)
    with pytest.raises(ValueError, match="not an interval"):
        claims.directional(float("nan"), 0.1, "higher")
    with pytest.raises(ValueError, match="direction"):
        claims.directional(0.0, 0.1, "sideways")
    assert claims.within(1.5, 1.0, 2.0) == claims.HOLDS and claims.within(2.5, 1.0, 2.0) == claims.FAILS


def test_a_claim_needs_a_known_verdict_and_every_column():
    with pytest.raises(ValueError, match="verdict 'maybe'"):
        _claim(verdict="maybe")
    with pytest.raises(ValueError, match="rule must be"):
        _claim(rule="")


def test_claims_table_is_markdown_with_numbered_notes():
    text = claims.markdown([_claim(), _claim(claim="AUC same", verdict=claims.NOT_RESOLVED, note="needs ~200 images")])
    lines = text.splitlines()
    assert lines[0] == "| paper | claim | paper's number | ours | rule | verdict | scale |"
    assert lines[2] == "| NAR, Table 3 | NAR phi=2 \\| cheaper | 3.26x | 3.46x | holds if >= 1 | **holds** | exact |"
    assert "**not resolved** [1]" in lines[3] and lines[-1] == "[1] needs ~200 images"
    with pytest.raises(ValueError, match=r"'AUC'.*lacks"):
        claims.markdown([{"claim": "AUC", "paper": "x", "ours": "y"}])


def test_claims_are_saved_as_claim_rows_and_replaced_on_rerun(tmp_path):
    rec = Recorder("nar_cost", tmp_path, profile="smoke")
    rec.add(dataset="-", data_kind="none", model="m", method="original", metrics={"gflops": 1.0})
    rec.add_claims([_claim(), _claim(claim="second", interval=(0.1, 0.2))])
    saved = rec.add_claims([_claim(claim="only this one")])
    rows = read_rows(tmp_path, "nar_cost")
    assert [r["kind"] for r in rows] == ["variant", "claim"]
    assert rows[1]["claim"] == "only this one" == saved[0]["claim"] and rows[1]["profile"] == "smoke"
