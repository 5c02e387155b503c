"""The glue of notebook 02 (``nar_cost``): the speed of its variants on the deployment backend, and its
closing claims, computed from its rows.

The methods it tours live in :mod:`histolean.methods.nar` (NAR, IR) and :mod:`histolean.core.flops`
(the paper's FLOP formula). Row vocabulary: ``flop_reduction`` = FLOPs(original) / FLOPs(variant)
(>= 1 when the variant is cheaper; ``paper_flop_reduction`` the same from the paper's GFLOPs),
``metrics.speedup`` = the original's time / the variant's time on the deployment backend (``backend``,
``precision``: chosen by :func:`histolean.core.backends.choose_backend`), ``metrics.speedup_eager_fp32``
the same in eager float32 torch, timed in the same interleaved run, and ``metrics.speed_efficiency``
(``_eager_fp32``) = speed-up / flop_reduction: 1 when a variant runs as much faster as it has fewer FLOPs.
"""

from __future__ import annotations



from histolean.study import published
from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE, Claim, within

PAPER = "Meirelles et al. 2022"
EXACT = "exact count, 240 px input"
# Margins of the decisions (relative): the layouts differ in ways the paper does not print, so "the same
# number" is decided within a stated margin, not to the last digit.
GFLOPS_MARGIN = 0.02        # stride-first ResNet50V2 against Table 3 (the notebook shows ~1 %)
THEORY_MARGIN = 0.07        # a NAR step's FLOP reduction against (alpha beta^2 gamma^2)^phi
INCEPTION_MARGIN = 0.10     # Inception V4: the paper's layout and depth rounding are not published
PARAMS_MARGIN = 0.005       # ResNet50V2 parameters against Table 1 (Keras total, with BN statistics)
EFFICIENCY_GOAL = 0.8       # issue 19: every variant's speed-up at least 0.8 x its FLOP reduction


def speed_efficiency(speedup: float | None, flop_reduction: float | None) -> float | None:
    """Measured speed-up / FLOP reduction (None where either is missing)."""
    if speedup is None or not flop_reduction:
        return None
    return float(speedup) / float(flop_reduction)


def _level(row: dict) -> int:
    return row["setting"].get("phi", row["setting"].get("k", 0))


def _find(rows: list[dict], model: str, method: str, level: int = 0) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["method"] == method and _level(r) == level), None)


def _relative(ours: float, paper: float) -> float:
    return ours / paper - 1.0


def _all_within(values, margin: float) -> str:
    values = list(values)
    return within(max(abs(v) for v in values), 0.0, margin) if values else NOT_TESTABLE


def resnet_gflops(rows: list[dict]) -> Claim:
    r = _find(rows, "resnet50v2", "original")
    rule = (f"holds if our count of the stride-first ResNet50V2 (the layout the paper's numbers fit) lies within "
            f"±{GFLOPS_MARGIN:.0%} of the paper's")
    if r is None or r.get("gflops_stride_first") is None or not r.get("paper_gflops"):
        return Claim(paper=f"{PAPER}, Table 3", claim="ResNet50V2 GFLOPs per 50 um patch", paper_value="9.65",
                     ours="not counted in this run", rule=rule, verdict=NOT_TESTABLE, scale=EXACT)
    return Claim(
        paper=f"{PAPER}, Table 3", claim="ResNet50V2 GFLOPs per 50 um patch", paper_value=f"{r['paper_gflops']:.2f}",
        ours=f"{r['gflops']:.2f} Keras layout (torch counter {r['torch_gflops']:.2f}); "
             f"{r['gflops_stride_first']:.2f} with the stride in each stage's first block",
        rule=rule, verdict=_all_within([_relative(r["gflops_stride_first"], r["paper_gflops"])], GFLOPS_MARGIN),
        scale=EXACT, note="Keras ResNet50V2 strides in each stage's last block and costs about 15 % fewer FLOPs")


def nar_halves_flops(rows: list[dict]) -> Claim:
    steps = sorted((r for r in rows if r["model"] == "resnet50v2" and r["method"] == "nar"), key=_level)
    return Claim(
        paper=f"{PAPER}, Section 2.2 and Table 3", claim="each NAR step roughly halves FLOPs, (αβ²γ²)^φ ≈ 2^φ "
        "(ResNet50V2)",
        paper_value=", ".join(f"{r['paper_flop_reduction']:.2f}x" for r in steps if r.get("paper_flop_reduction"))
        or "-",
        ours=", ".join(f"φ={_level(r)}: {r['flop_reduction']:.2f}x" for r in steps) + " (theory "
             + ", ".join(f"{r['theory']:.2f}x" for r in steps) + ")",
        rule=f"holds if every φ's FLOP reduction (original / variant) lies within ±{THEORY_MARGIN:.0%} of "
             "(αβ²γ²)^φ",
        verdict=_all_within([_relative(r["flop_reduction"], r["theory"]) for r in steps], THEORY_MARGIN),
        scale=EXACT)


def inception_gflops(rows: list[dict]) -> Claim:
    original, last = _find(rows, "inception_v4", "original"), _find(rows, "inception_v4", "nar", 6)
    pair = [r for r in (original, last) if r is not None and r.get("paper_gflops")]
    return Claim(
        paper=f"{PAPER}, Table 4", claim="Inception V4 original and NAR φ=6 GFLOPs",
        paper_value=" -> ".join(f"{r['paper_gflops']:.2f}" for r in pair) or "-",
        ours=" -> ".join(f"{r['gflops']:.2f}" for r in pair) or "not counted in this run",
        rule=f"holds if both lie within ±{INCEPTION_MARGIN:.0%} of the paper's",
        verdict=_all_within([_relative(r["gflops"], r["paper_gflops"]) for r in pair], INCEPTION_MARGIN)
        if len(pair) == 2 else NOT_TESTABLE,
        scale=EXACT, note="the paper does not publish its Inception V4 layout or depth rounding")


def resnet_params(rows: list[dict]) -> Claim:
    table1 = {t["phi"]: t["params"] for t in published.table("nar", "table1_resnet50v2_nar")}
    ours = {phi: (_find(rows, "resnet50v2", "nar", phi) if phi else _find(rows, "resnet50v2", "original"))
            for phi in sorted(table1)}
    counted = {phi: r["params_keras_total"] for phi, r in ours.items() if r is not None}
    return Claim(
        paper=f"{PAPER}, Table 1", claim="ResNet50V2 parameters, NAR φ=0..3",
        paper_value=", ".join(f"{table1[p]:,}" for p in sorted(table1)),
        ours=", ".join(f"{counted[p]:,}" for p in sorted(counted)) or "not counted in this run",
        rule=f"holds if every φ's parameter count lies within ±{PARAMS_MARGIN:.1%} of Table 1",
        verdict=_all_within([_relative(n, table1[p]) for p, n in counted.items()], PARAMS_MARGIN)
        if len(counted) == len(table1) else NOT_TESTABLE,
        scale="exact count (Keras total: with BN statistics)",
        note="the paper prints the stage-2 widths of φ=1 and φ=2 swapped (106 / 116)")


def fewer_flops_run_faster(rows: list[dict], model: str) -> Claim:
    timed = sorted((r for r in rows if r["model"] == model and r["method"] == "nar" and r["metrics"].get("speedup")),
                   key=_level)
    original = _find(rows, model, "original")
    if not timed or original is None:
        return Claim(paper=PAPER, claim=f"fewer FLOPs run faster ({model} NAR)", paper_value="reports FLOPs, "
                     "not measured speed", ours="not timed in this run", rule=_SPEED_RULE, verdict=NOT_TESTABLE,
                     scale="-")
    last = timed[-1]
    m, scale = last["metrics"], last.get("scale", {})
    lo, hi = m["speedup_min"], m["speedup_max"]
    verdict = HOLDS if lo > 1 else FAILS if hi < 1 else NOT_RESOLVED
    return Claim(
        paper=PAPER, claim=f"fewer FLOPs run faster ({model} NAR φ={_level(last)})",
        paper_value="reports FLOPs, not measured speed",
        ours=f"{last['flop_reduction']:.2f}x fewer FLOPs, {m['speedup']:.2f}x faster (min {lo:.2f}, max {hi:.2f}); "
             f"original {original['metrics'].get('patches_per_s', float('nan')):.1f} patches/s",
        rule=_SPEED_RULE, verdict=verdict, interval=(lo, hi),
        scale=f"{last.get('device', '?')}, batch {scale.get('throughput_batch')}, "
              f"{scale.get('throughput_repeats')} interleaved rounds")


def efficiency_on_deployment_backend(rows: list[dict]) -> Claim:
    """Issue 19's goal: every NAR/IR variant at >= 0.8 speed efficiency on the deployment backend."""
    timed = [r for r in rows if r["method"] != "original" and r["metrics"].get("speed_efficiency") is not None]
    rule = (f"holds if every timed NAR/IR variant's speed efficiency on the deployment backend (speed-up / FLOP "
            f"reduction) is >= {EFFICIENCY_GOAL} in every interleaved round (speed-up min / FLOP reduction); fails if "
            f"any variant is below {EFFICIENCY_GOAL} in every round (speed-up max / FLOP reduction); else not resolved")
    base = dict(paper="issue 19 (deployment goal)",
                claim=f"every variant reaches >= {EFFICIENCY_GOAL} speed efficiency on the deployment backend",
                paper_value=f">= {EFFICIENCY_GOAL} for every variant (a goal, not a paper result)", rule=rule)
    if not timed:
        return Claim(**base, ours="no variant timed in this run", verdict=NOT_TESTABLE, scale="-")
    lows = {_name(r): r["metrics"]["speedup_min"] / r["flop_reduction"] for r in timed}
    highs = {_name(r): r["metrics"]["speedup_max"] / r["flop_reduction"] for r in timed}
    short = [r for r in timed if r["metrics"]["speed_efficiency"] < EFFICIENCY_GOAL]
    verdict = (FAILS if any(h < EFFICIENCY_GOAL for h in highs.values())
               else HOLDS if all(v >= EFFICIENCY_GOAL for v in lows.values()) else NOT_RESOLVED)
    backends_used = sorted({f"{r.get('backend')} ({r.get('precision')})" for r in timed})
    worst = min(timed, key=lambda r: r["metrics"]["speed_efficiency"])
    ours = (f"on {', '.join(backends_used)}: {len(timed) - len(short)} of {len(timed)} variants at >= "
            f"{EFFICIENCY_GOAL} (median); lowest {_name(worst)} {worst['metrics']['speed_efficiency']:.2f}"
            + ("; short: " + ", ".join(f"{_name(r)} {r['metrics']['speed_efficiency']:.2f} (eager fp32 "
                                         f"{_fmt(r['metrics'].get('speed_efficiency_eager_fp32'))})" for r in short)
               if short else ""))
    lo, hi = min(lows.values()), max(highs.values())
    scale = timed[0].get("scale", {})
    return Claim(**base, ours=ours, verdict=verdict, interval=(lo, hi),
                 scale=f"{timed[0].get('device', '?')}, batch {scale.get('throughput_batch')}, "
                       f"{scale.get('throughput_repeats')} interleaved rounds",
                 note="random weights; the interval spans the lowest round of any variant to the highest of any")


def _name(row: dict) -> str:
    return " ".join([row["model"], row["method"], *(f"{k}={v}" for k, v in row["setting"].items())])


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


_SPEED_RULE = ("holds if the speed-up (original time / variant time) is above 1 in every interleaved round "
               "(min > 1); fails if below 1 in every round (max < 1); else not resolved")


def paper_claims(rows: list[dict]) -> list[Claim]:
    """The paper's cost claims (exact counts against its tables), per timed network speed, and issue 19's
    speed-efficiency goal on the deployment backend."""
    rows = [r for r in rows if r.get("kind", "variant") == "variant"]   # not claims, not operator profiles
    timed = dict.fromkeys(r["model"] for r in rows if r["metrics"].get("speedup"))  # in the rows' order
    return [resnet_gflops(rows), nar_halves_flops(rows), inception_gflops(rows), resnet_params(rows),
            *(fewer_flops_run_faster(rows, model) for model in timed), efficiency_on_deployment_backend(rows)]
