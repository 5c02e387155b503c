"""The paper's claims (Mahbod et al. 2022) against the rows of a monuseg_pruning run.

:func:`paper_claims` is pure (rows in, ``study.claims.Claim`` out): it reads only the recorded rows and the
paper's published numbers (``study/published/pruning.yaml``). Until the rows carry intervals over
images, the decisions on segmentation quality compare mean per-image scores by sign or against the
paper's 0.02 margin, and each claim's ``rule`` says so.
"""

from __future__ import annotations

import math

from histolean.study import published
from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE, Claim, within

from .run import COST_METHOD, DATASETS, METHOD, TABLE1_METHOD, UNPRUNED

PAPER = "Mahbod et al. 2022"
SCHEMES = ("network-wide", "layer-wise")
LABELS = {"monuseg": "MoNuSeg test", "tnbc": "TNBC (distribution shift)"}
FIGURE = {"monuseg": "Fig. 2", "tnbc": "Fig. 3"}
ALIVE_AJI = 0.05             # below it a model finds (almost) no nuclei: its shift would read as 0
TABLE1_CRS = (2, 16, 128)    # the Table 1 cells compared
TABLE1_TOLERANCE = 0.10      # relative: FLOP counts are exact, the paper's network-wide ones come from trained weights


def _finite(*values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _published_claims() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in published.table("pruning", "claims"):
        out.setdefault(row["claim"], []).append(row)
    return out


class _Scores:
    """The scored rows of a run, looked up by (dataset, scheme, CR)."""

    def __init__(self, rows: list[dict]):
        self.rows = [r for r in rows if r.get("kind", "variant") == "variant" and r.get("method") == METHOD]
        self.by_key = {(r["dataset"], r["setting"]["scheme"], r["setting"]["cr"]): r for r in self.rows}

    def mean(self, dataset: str, scheme: str, cr: int, key: str) -> float:
        """The mean over images of ``key`` (NaN when not recorded)."""
        row = self.by_key.get((dataset, scheme, cr))
        value = row["metrics"].get(key) if row else None
        return float(value) if value is not None else math.nan

    def base(self, dataset: str, key: str) -> float:
        return self.mean(dataset, UNPRUNED, 1, key)

    def crs(self, scheme: str) -> list[int]:
        return sorted({cr for (_, s, cr) in self.by_key if s == scheme})

    def datasets(self) -> list[str]:
        return [d for d in DATASETS if any(k[0] == d for k in self.by_key)]

    def unpruned(self) -> dict | None:
        return next((r for r in self.rows if r["setting"]["scheme"] == UNPRUNED), None)

    def scale(self) -> str:
        r = self.unpruned() or (self.rows[0] if self.rows else None)
        if r is None:
            return "no scored rows"
        sc = r.get("scale", {})
        kinds = ", ".join(f"{LABELS[d].split()[0]} {self.by_key[(d, UNPRUNED, 1)]['data_kind']}"
                          for d in self.datasets() if (d, UNPRUNED, 1) in self.by_key)
        loss = ""
        if r.get("training"):
            loss = " to training loss " + " / ".join(f"{b} {v['final_loss']:.3f}" for b, v in r["training"].items())
        return (f"U-Net x{sc.get('width', 1):g} ({r.get('params', 0) / 1e6:.2f} M parameters per branch; paper x1, "
                f"24.4 M), {sc.get('epochs')} epochs{loss} (paper 1000, to convergence) + {sc.get('retrain_epochs')} "
                "per pruning round, "
                f"{sc.get('n_train')} training images in {sc.get('crop')} px crops, {sc.get('n_test')} MoNuSeg / "
                f"{sc.get('n_tnbc')} TNBC images scored ({sc.get('eval_crop') or 'whole'} px centre crops), "
                f"encoder {sc.get('encoder')}; data: {kinds}")

    def caveat(self) -> str:
        r = self.unpruned()
        if r is None:
            return ""
        return (f"Every pruning round adds {r.get('scale', {}).get('retrain_epochs')} epochs of retraining: at a scale "
                "where the unpruned branches are not trained to convergence, a pruned model has also trained longer "
                "than the unpruned one it is compared with.")


def _schemes_by_cr(s: _Scores, dataset: str) -> Claim:
    """Layer-wise better at small CRs, network-wide at large ones (sign of the AJI and PQ differences)."""
    shared = sorted(set(s.crs("layer-wise")) & set(s.crs("network-wide")))
    rule = ("sign of the mean-AJI and mean-PQ differences layer-wise minus network-wide at the smallest and the "
            "largest CR both schemes reached: holds if both measures are > 0 at the smallest and < 0 at the largest; "
            "fails if neither is; not resolved if one is (no interval yet)")
    verdict, ours = NOT_TESTABLE, f"the two schemes share CRs {shared or 'none'}: the rule needs two"
    if len(shared) >= 2:
        small, large = shared[0], shared[-1]
        diff = {cr: {k: s.mean(dataset, "layer-wise", cr, k) - s.mean(dataset, "network-wide", cr, k)
                     for k in ("aji", "pq")} for cr in (small, large)}
        ours = "layer-wise minus network-wide " + "; ".join(
            f"at CR {cr}: AJI {diff[cr]['aji']:+.3f}, PQ {diff[cr]['pq']:+.3f}" for cr in (small, large))
        if _finite(*(v for d in diff.values() for v in d.values())):
            shown = sum(diff[small][k] > 0 and diff[large][k] < 0 for k in ("aji", "pq"))
            verdict = {2: HOLDS, 1: NOT_RESOLVED, 0: FAILS}[shown]
    return Claim(paper=f"{PAPER}, {FIGURE[dataset]}",
                 claim=f"{LABELS[dataset]}: layer-wise pruning is better at small CRs, network-wide at large CRs",
                 paper_value=("layer-wise better at small CRs for all measures; layer-wise CR > 2^5 harms "
                              "(curves, no printed values)"),
                 ours=ours, rule=rule, verdict=verdict, scale=s.scale(),
                 note=s.caveat() if dataset == s.datasets()[0] else "")   # the caveat once, on the table's first claim


def _dice_robust(s: _Scores, dataset: str, paper_row: dict) -> Claim:
    """Dice drops at most 0.02 up to the paper's CR (128 network-wide, 16 layer-wise)."""
    scheme, paper_cr, margin = paper_row["scheme"], int(paper_row["cr"]), float(paper_row["max_dice_drop"])
    reached = s.crs(scheme)
    crs = [cr for cr in reached if cr <= paper_cr]
    base = s.base(dataset, "dice")
    drops = {cr: base - s.mean(dataset, scheme, cr, "dice") for cr in crs}
    rule = (f"drop = mean Dice unpruned minus mean Dice at each CR up to {paper_cr}: fails if any drop > {margin:g}; "
            f"holds if none is and CR {paper_cr} was reached; else not testable at this scale")
    if not crs or not _finite(base, *drops.values()):
        verdict, ours = NOT_TESTABLE, f"{scheme} not scored at this scale"
    else:
        ours = (f"unpruned Dice {base:.3f}; drop " + ", ".join(f"CR {cr} {v:+.3f}" for cr, v in drops.items())
                + f"; CRs reached: up to {max(reached)}")
        verdict = FAILS if any(v > margin for v in drops.values()) else HOLDS if max(crs) == paper_cr else NOT_TESTABLE
    note = "" if dataset == "monuseg" else "The paper states this for MoNuSeg (Fig. 2); TNBC is checked the same way."
    return Claim(paper=f"{PAPER}, Section 3 ({FIGURE[dataset]})",
                 claim=f"{LABELS[dataset]}: {scheme} pruning to CR {paper_cr} loses at most {margin:g} Dice",
                 paper_value=f"Dice drop <= {margin:g} up to CR {paper_cr} ({1 - 1 / paper_cr:.1%} of weights pruned)",
                 ours=ours, rule=rule, verdict=verdict, scale=s.scale(), note=note)


def _small_loss(s: _Scores, dataset: str, paper_row: dict) -> Claim:
    """80% of the weights pruned with under 0.02 AJI and PQ lost, for some scheme."""
    fraction, margin = float(paper_row["fraction_pruned"]), float(paper_row["max_drop"])
    needed = 1
    while 1 - 1 / needed < fraction:   # the first power-of-two CR that prunes that fraction
        needed *= 2
    parts, best = [], {}
    for scheme in SCHEMES:
        crs = s.crs(scheme)
        if not crs:
            continue
        ok = [cr for cr in crs
              if all(s.mean(dataset, scheme, cr, k) >= s.base(dataset, k) - margin for k in ("aji", "pq"))]
        best[scheme] = max(ok) if ok else None
        parts.append(f"{scheme}: CRs within {margin:g} of the unpruned AJI and PQ: {ok or 'none'}"
                     + (f" (largest {max(ok)} = {1 - 1 / max(ok):.1%} of the weights pruned)" if ok else ""))
    reached = max((cr for scheme in best for cr in s.crs(scheme)), default=0)
    if reached < needed:
        verdict = NOT_TESTABLE
    else:
        verdict = HOLDS if any(cr is not None and cr >= needed for cr in best.values()) else FAILS
    return Claim(paper=f"{PAPER}, Sections 1 and 4 ({FIGURE[dataset]})",
                 claim=(f"{LABELS[dataset]}: {fraction:.0%} of the weights can be pruned with under {margin:g} AJI "
                        "and PQ lost"),
                 paper_value=f"{fraction:.0%} of the weights pruned, < 2% drop (layer-wise, at a certain CR)",
                 ours="; ".join(parts) or "no pruned scheme scored",
                 rule=(f"holds if, for either scheme, a CR >= {needed} (the first to prune >= {fraction:.0%}) keeps "
                       f"mean AJI and mean PQ both within {margin:g} of the unpruned; fails if none does; "
                       f"not testable if no scheme reached CR {needed}"),
                 verdict=verdict, scale=s.scale())


def _tnbc_shift(s: _Scores) -> Claim:
    """Layer-wise less robust to the TNBC shift: its mean AJI shift is lower than network-wide's."""
    alive = {sch: [cr for cr in s.crs(sch) if s.mean("monuseg", sch, cr, "aji") > ALIVE_AJI] for sch in SCHEMES}
    shift = {sch: (sum(s.mean("tnbc", sch, cr, "aji") - s.mean("monuseg", sch, cr, "aji") for cr in crs) / len(crs)
                   if crs else math.nan) for sch, crs in alive.items()}
    unpruned = s.base("tnbc", "aji") - s.base("monuseg", "aji")
    ours = ("mean AJI(TNBC) minus AJI(MoNuSeg) over the CRs where MoNuSeg AJI > "
            f"{ALIVE_AJI:g}: " + ", ".join(f"{sch} {v:+.3f} (CRs {alive[sch]})" if crs else f"{sch}: no such CR"
                                           for (sch, v), crs in zip(shift.items(), alive.values()))
            + f"; unpruned {unpruned:+.3f}")
    if _finite(*shift.values()):
        verdict = HOLDS if shift["layer-wise"] < shift["network-wide"] else FAILS
    else:
        verdict = NOT_TESTABLE
    return Claim(paper=f"{PAPER}, Fig. 3 and Section 3",
                 claim="layer-wise pruning is less robust to the TNBC distribution shift than network-wide",
                 paper_value="TNBC measures close to MoNuSeg's; layer-wise less robust to the shift (no numbers)",
                 ours=ours,
                 rule=(f"sign comparison of the mean AJI shift (TNBC minus MoNuSeg, over the CRs where MoNuSeg AJI > "
                       f"{ALIVE_AJI:g}: a collapsed model scores 0 on both): holds if layer-wise's is lower than "
                       "network-wide's; fails otherwise; not testable if a scheme has no such CR"),
                 verdict=verdict, scale=s.scale())


def _table1(rows: list[dict], s: _Scores) -> Claim:
    """Table 1's theoretical speed-ups: the full-width net (untrained) against the paper's at CR 2, 16, 128."""
    full = {(r["setting"]["scheme"], r["setting"]["cr"]): r for r in rows if r.get("method") == TABLE1_METHOD}
    paper = {(r["scheme"], r["cr"]): r["speedup"] for r in published.table("pruning", "table1_speedup")}
    cells = [(sch, cr) for sch in SCHEMES for cr in TABLE1_CRS
             if paper.get((sch, cr)) is not None and (sch, cr) in full
             and full[(sch, cr)]["metrics"].get("theoretical_speedup") is not None]
    ours_of = {c: float(full[c]["metrics"]["theoretical_speedup"]) for c in cells}
    trained = []
    for sch in SCHEMES:
        crs = s.crs(sch)
        row = s.by_key.get(("monuseg", sch, crs[-1])) if crs else None
        if row and row.get("theoretical_speedup"):
            ref = paper.get((sch, crs[-1]))
            trained.append(f"{sch} CR {crs[-1]}: {row['theoretical_speedup']['semantic']:.2f}"
                           + (f" (paper {ref:.2f})" if ref is not None else ""))
    lo, hi = 1 - TABLE1_TOLERANCE, 1 + TABLE1_TOLERANCE
    if cells:
        verdict = HOLDS if all(within(ours_of[c] / paper[c], lo, hi) == HOLDS for c in cells) else FAILS
        ours = "full width, untrained: " + "; ".join(
            f"{sch} CR {cr}: {ours_of[(sch, cr)]:.2f} vs {paper[(sch, cr)]:.2f}" for sch, cr in cells)
    else:
        verdict, ours = NOT_TESTABLE, "full-width speed-ups not computed"
    if trained:
        ours += f"; trained semantic branch at its largest CR: {'; '.join(trained)}"
    params = next((r.get("params") for r in full.values()), None)
    return Claim(paper=f"{PAPER}, Table 1",
                 claim="theoretical speed-up (dense FLOPs / sparsity-aware FLOPs) of the pruned U-Net",
                 paper_value="; ".join(f"{sch} CR {cr}: {paper[(sch, cr)]:.2f}" for sch in SCHEMES for cr in TABLE1_CRS
                                       if paper.get((sch, cr)) is not None),
                 ours=ours,
                 rule=(f"ours / paper within [{lo:g}, {hi:g}] at CR {', '.join(map(str, TABLE1_CRS))} for both schemes "
                       "(exact FLOP counts, no interval): holds if every compared cell is; fails otherwise"),
                 verdict=verdict,
                 scale=(f"full-width U-Net ({params / 1e6:.1f} M parameters), He-initialised, not trained"
                        if params else "full-width U-Net, He-initialised, not trained"),
                 note=("Network-wide speed-ups depend on which layers hold the smallest weights: the paper's come from "
                       "trained weights, ours from the He initialisation; layer-wise ones equal the CR whatever the "
                       "weights."))


def _layerwise_max_cr(rows: list[dict], s: _Scores, paper_row: dict) -> Claim:
    full = next((r for r in rows if r.get("method") == TABLE1_METHOD and r.get("layerwise_max_cr")), None)
    narrow = s.unpruned()
    paper_cr = int(paper_row["cr"])
    if full is None:
        verdict, ours = NOT_TESTABLE, "full-width network not costed"
    else:
        verdict = within(full["layerwise_max_cr"], paper_cr, paper_cr)
        ours = f"full width: CR {full['layerwise_max_cr']}"
    if narrow and narrow.get("layerwise_max_cr"):
        ours += f"; x{narrow['scale']['width']:g} (this run): CR {narrow['layerwise_max_cr']}"
    return Claim(paper=f"{PAPER}, Table 1 and Section 3",
                 claim="layer-wise pruning cannot go beyond CR 2^7 in the U-Net (a layer would lose all its weights)",
                 paper_value=f"largest layer-wise CR {paper_cr}",
                 ours=ours,
                 rule=(f"exact count: holds if the largest power-of-two CR that leaves every layer of the full-width "
                       f"U-Net a weight is {paper_cr}; fails otherwise"),
                 verdict=verdict, scale="full-width U-Net (24.4 M parameters per branch), weight counts only")


def _cpu_speed(rows: list[dict]) -> Claim:
    cost = [r for r in rows if r.get("method") == COST_METHOD]
    measured = [r["metrics"]["measured_speedup"] for r in cost]
    theory = [r["metrics"]["theoretical_speedup"] for r in cost]
    ratios = [r["metrics"]["size_ratio"] for r in cost if r["metrics"].get("size_ratio") is not None]
    if cost and _finite(*measured, *theory):
        verdict = HOLDS if all(m < t for m, t in zip(measured, theory)) else FAILS
        ours = (f"zero-filled pruned network {min(measured):.2f}-{max(measured):.2f}x the dense one's speed (measured, "
                f"interleaved) where theory gives {min(theory):.2f}-{max(theory):.2f}x")
        if ratios:
            ours += (f"; sparse (CSR) storage {min(ratios):.2f}-{max(ratios):.2f} of the dense file (8 bytes per kept "
                     "weight: it wins only beyond CR 2)")
        first = cost[0]
        scale = (f"{first['model']}, CRs {sorted({r['setting']['cr'] for r in cost})}, {first.get('input_size')} px "
                 f"input, {first.get('repeats')} rounds, {first.get('device', 'cpu')}")
    else:
        verdict, ours, scale = NOT_TESTABLE, "no measured cost rows", "not measured"
    return Claim(paper=f"{PAPER}, Table 1 and Section 3",
                 claim=("the speed-up is theoretical: it needs hardware that skips zero weights, dense kernels do not "
                        "deliver it"),
                 paper_value="'can potentially be achieved by proper hardware supporting model sparsity' (unmeasured)",
                 ours=ours,
                 rule=("holds if every pruned model's measured CPU speed-up (zeros kept, dense kernels) is below its "
                       "theoretical speed-up; fails if one reaches it"),
                 verdict=verdict, scale=scale)


def paper_claims(rows: list[dict]) -> list[Claim]:
    """The paper's claims against the rows of a run (any order; claim rows of an earlier call are ignored)."""
    s = _Scores(rows)
    published_claims = _published_claims()
    out = [_schemes_by_cr(s, d) for d in s.datasets()]
    out += [_dice_robust(s, d, row) for d in s.datasets() for row in published_claims["dice_robust"]]
    out += [_small_loss(s, d, published_claims["small_loss"][0]) for d in s.datasets()]
    if {"monuseg", "tnbc"} <= set(s.datasets()):
        out.append(_tnbc_shift(s))
    out += [_table1(rows, s), _layerwise_max_cr(rows, s, published_claims["layerwise_max_cr"][0]), _cpu_speed(rows)]
    return out
