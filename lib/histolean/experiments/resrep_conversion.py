"""The glue of notebook 03 (benchmark ``resrep``): its settings stated once, its networks, the paper's
table beside ours, and its closing claims.

Named ``resrep_conversion`` so that it is not confused with the method it tours,
:mod:`histolean.methods.resrep` (compactors, progressive masks, conversion), which holds all the ResRep
code. Row vocabulary: ``flop_reduction`` = FLOPs(original) / FLOPs(converted) (>= 1 when cheaper);
``setting.flops_target`` stays ResRep's own parameter, the *fraction* of the original FLOPs the masks
aim at (so the masks reach it when ``flop_reduction >= 1 / flops_target``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from histolean.core import arch
from histolean.methods import nar, resrep
from histolean.study import published
from histolean.study.claims import NOT_TESTABLE, Claim, within

PAPER = "Meirelles et al. 2022, Table 3"
DING = "Ding et al. 2021 (ResRep)"
NETWORKS = ("tiny", "b6", "resnet50v2", "resnet50v2_nar2", "inception_v4")
PAPER_NETWORK, PAPER_INPUT, PAPER_EPSILON = "resnet50v2", 240, 0.90
# Relative margin of "the same FLOP reduction" at the paper's epsilon: its neighbouring epsilons
# (0.88, 0.92) differ from 0.90 by 6 % and 19 % in GFLOPs.
EPSILON_FLOP_MARGIN = 0.10


def network_spec(name: str, input_size: int) -> arch.Spec:
    """The networks notebook 03 can prune, by name: the registry's, the NAR-reduced ResNet50V2 (phi = 2),
    and the tiny CNN at width 16."""
    if name == "resnet50v2_nar2":
        return arch.with_input_size(nar.reduce(arch.spec("resnet50v2", input_size=input_size), 2), input_size)
    if name == "tiny":
        return arch.spec("tiny", input_size=input_size, width=16)
    if name not in NETWORKS:
        raise ValueError(f"networks: unknown network {name!r}; choose from {', '.join(NETWORKS)}")
    return arch.spec(name, input_size=input_size)


@dataclass(frozen=True)
class Settings:
    """The remembering phase's settings, stated once; :meth:`for_network` applies one network's overrides
    and resolves ``scope="paper"`` (``resrep.paper_scope``). Defaults: Ding et al.'s (``resrep.OFFICIAL``)."""

    flops_target: float                      # fraction of the original FLOPs the masks aim at
    epochs: int
    optimizer_setting: str = "resrep"        # "resrep": SGD, compactor momentum 0.99 | "nar": Adam + StepLR
    lr: float | None = None                  # None: the optimiser setting's own
    compactor_lr: float | None = None        # None: lr
    lasso_strength: float = resrep.OFFICIAL["lasso_strength"]
    warmup_epochs: float = resrep.OFFICIAL["warmup_epochs"]
    mask_interval: int = resrep.OFFICIAL["mask_interval"]
    granularity: int | None = resrep.OFFICIAL["granularity"]
    scope: str = "paper"                     # "paper" | "any" | "bottleneck"

    def for_network(self, spec: arch.Spec, overrides: dict | None = None) -> "Settings":
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides or {}) - fields
        if unknown:
            raise ValueError(f"network_settings: unknown setting(s) {sorted(unknown)}; use {sorted(fields)}")
        own = dataclasses.replace(self, **(overrides or {}))
        return dataclasses.replace(own, scope=resrep.paper_scope(spec) if own.scope == "paper" else own.scope)

    def remember_kwargs(self) -> dict:
        """Keyword arguments of ``resrep.remember`` (besides the model, loader, input size, seed, device)."""
        return {"epochs": self.epochs, "flops_target": self.flops_target, "setting": self.optimizer_setting,
                "lasso_strength": self.lasso_strength, "warmup_epochs": self.warmup_epochs,
                "mask_interval": self.mask_interval, "granularity": self.granularity, "scope": self.scope,
                "lr": self.lr, "compactor_lr": self.compactor_lr}

    def row_setting(self) -> dict:
        """The settings as every row records them."""
        return {"optimizer": self.optimizer_setting, "lambda": self.lasso_strength, "flops_target": self.flops_target,
                "epochs": self.epochs, "lr": self.lr, "compactor_lr": self.compactor_lr, "scope": self.scope,
                "granularity": self.granularity, "mask_interval": self.mask_interval,
                "warmup_epochs": self.warmup_epochs}


def paper_table() -> list[dict]:
    """The NAR paper's ResRep rows (Table 3) with their FLOP reduction and AUC change against its original."""
    table = published.table("resrep", "table3_cost_auc")
    ref = next(r for r in table if r["method"] == "original")
    return [{"epsilon": r["setting"]["epsilon"], "gflops": r["gflops"], "flop_reduction": ref["gflops"] / r["gflops"],
             "auc": r["auc"], "auc_change": r["auc"] - ref["auc"]} for r in table if r["method"] == "resrep"]


def conversions(rows: list[dict]) -> list[dict]:
    """One flat record per converted network (the compactor network itself left out), for tables and claims."""
    out = []
    for r in rows:
        setting = r.get("setting", {})
        if r.get("kind", "variant") == "claim" or setting.get("conversion", "none") == "none":
            continue
        m = r["metrics"]
        out.append({"model": r["model"], "seed": r["seed"], "data_kind": r["data_kind"], "scope": setting["scope"],
                    "conversion": setting["conversion"], "epsilon": setting.get("epsilon"),
                    "flops_target": setting["flops_target"], "flop_reduction": r["flop_reduction"],
                    "flops_counted": r["flops_counted"], "flops_predicted": r["flops_predicted"],
                    "auc": m["auc"], "auc_before": m["auc_before"], "auc_change": m["auc"] - m["auc_before"],
                    "report": r["conversion_report"], "scale": r.get("scale", {}), "dataset": r["dataset"]})
    return out


def _scale(c: dict) -> str:
    s = c["scale"]
    return (f"{s.get('input_size')} px, {s.get('epochs')} epochs, {s.get('n_train')} training patches, "
            f"{s.get('runs')} run(s), {c['dataset']} ({c['data_kind']})")


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def cost_known_from_mask(convs: list[dict]) -> Claim:
    worst = max((abs(c["flops_counted"] - c["flops_predicted"]) for c in convs), default=None)
    return Claim(
        paper=DING, claim="conversion yields a plain network whose cost is known from the mask",
        paper_value="FLOPs of the converted network = FLOPs predicted from the removed channels",
        ours=f"counted on every converted module: {'equal to' if worst == 0 else 'DIFFERENT from'} the prediction "
             f"(largest difference {worst} FLOPs over {len(convs)} conversions)" if convs else "no conversion ran",
        rule="holds if the FLOPs counted on every converted module equal the prediction exactly (difference "
             "within [0, 0])",
        verdict=within(worst, 0, 0) if convs else NOT_TESTABLE,
        scale=_scale(convs[0]) if convs else "-")


def masks_reach_target(model: str, convs: list[dict]) -> Claim:
    mask = [c for c in convs if c["conversion"] == "mask"]
    target = mask[0]["flops_target"] if mask else math.nan
    rule = ("holds if every run's mask conversion cuts the FLOPs at least 1 / flops_target times "
            f"(>= {1 / target:.2f}x)" if mask else "holds if every run's mask conversion reaches the FLOPs target")
    if not mask:
        return Claim(paper=DING, claim=f"{model}: the masks reach the FLOPs target", paper_value="-",
                     ours="no mask conversion ran", rule=rule, verdict=NOT_TESTABLE, scale="-")
    return Claim(
        paper=DING, claim=f"{model} (scope {mask[0]['scope']}): the masks reach the FLOPs target",
        paper_value=f"target {target} of the original FLOPs ({1 / target:.2f}x fewer)",
        ours=f"{_mean(c['flop_reduction'] for c in mask):.2f}x fewer FLOPs (mean of {len(mask)} run(s)); "
             f"removing the masked rows: norms up to {max(c['report']['max_removed_norm'] for c in mask):.2g}, "
             f"output difference {max(c['report']['max_output_diff'] for c in mask):.2g}, AUC "
             f"{_mean(c['auc'] for c in mask):.3f} vs {_mean(c['auc_before'] for c in mask):.3f} before",
        rule=rule, verdict=within(min(c["flop_reduction"] for c in mask), 1 / target, math.inf),
        scale=_scale(mask[0]))


def official_conversion_exact(model: str, convs: list[dict]) -> Claim:
    collapsed = [c for c in convs if c["conversion"] == "collapsed"]
    rule = ("holds if every collapsed-row conversion (official: rows below 1e-5 removed) is exact: largest "
            "output difference <= tolerance x max(1, output scale)")
    if not collapsed:
        return Claim(paper=DING, claim=f"{model}: the official conversion is lossless", paper_value="lossless",
                     ours="no collapsed-row conversion ran", rule=rule, verdict=NOT_TESTABLE, scale="-")
    reports = [c["report"] for c in collapsed]
    return Claim(
        paper=DING, claim=f"{model}: the official conversion (collapsed rows) is lossless", paper_value="lossless",
        ours=f"removes {_mean(r['removed_classes'] for r in reports):.0f} channel classes (mean), output difference "
             f"{max(r['max_output_diff'] for r in reports):.2g}",
        rule=rule, verdict=within(sum(not r["exact"] for r in reports), 0, 0), scale=_scale(collapsed[0]),
        note="in short runs few rows collapse below 1e-5, so little or nothing is removed")


def paper_epsilon(model: str, convs: list[dict]) -> Claim:
    paper = next(p for p in paper_table() if math.isclose(p["epsilon"], PAPER_EPSILON))
    at = [c for c in convs if c["conversion"] == "epsilon" and c["epsilon"] is not None
          and math.isclose(c["epsilon"], PAPER_EPSILON)]
    rule = (f"compared for {PAPER_NETWORK} at {PAPER_INPUT} px only (else not testable at this scale): holds if our "
            f"FLOP reduction lies within ±{EPSILON_FLOP_MARGIN:.0%} of the paper's; the AUC change is shown, "
            "not decided (no interval)")
    claim = f"ResRep epsilon={PAPER_EPSILON:.2f} cuts ResNet50V2's FLOPs {paper['flop_reduction']:.2f}x at the same AUC"
    paper_value = (f"{paper['flop_reduction']:.2f}x ({paper['gflops']:.2f} GFLOPs), AUC change "
                   f"{paper['auc_change']:+.2f} (TIL, 240 px)")
    if not at:
        return Claim(paper=PAPER, claim=claim, paper_value=paper_value,
                     ours=f"{model}: epsilon {PAPER_EPSILON} not run", rule=rule, verdict=NOT_TESTABLE, scale="-")
    reduction = _mean(c["flop_reduction"] for c in at)
    comparable = model == PAPER_NETWORK and at[0]["scale"].get("input_size") == PAPER_INPUT
    return Claim(
        paper=PAPER, claim=claim, paper_value=paper_value,
        ours=f"{model}: {reduction:.2f}x fewer FLOPs, AUC change {_mean(c['auc_change'] for c in at):+.3f} "
             f"(mean of {len(at)} run(s), no fine-tuning)",
        rule=rule,
        verdict=within(reduction / paper["flop_reduction"] - 1, -EPSILON_FLOP_MARGIN, EPSILON_FLOP_MARGIN)
        if comparable else NOT_TESTABLE,
        scale=_scale(at[0]),
        note="" if comparable else "another network, input size or data than the paper's: the shape of the "
                                   "trade-off is shown, not compared")


def paper_claims(rows: list[dict]) -> list[Claim]:
    """Ding et al.'s conversion claims and the NAR paper's epsilon 0.90, per network, from the rows."""
    convs = conversions(rows)
    out = [cost_known_from_mask(convs)]
    for model in dict.fromkeys(c["model"] for c in convs):
        mine = [c for c in convs if c["model"] == model]
        out += [masks_reach_target(model, mine), official_conversion_exact(model, mine), paper_epsilon(model, mine)]
    return out
