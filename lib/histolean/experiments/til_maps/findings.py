"""The closing claims of notebook 08: the NAR paper's deployment and issue 14's measurements, against our rows.

:func:`paper_claims` is pure (rows in, ``study.claims.Claim`` out). It reads the rows the notebook
records, by ``kind``: ``model`` (one per role, original / reduced, with ``gflops``, AUC and the
checkpoints' ``source``), ``agreement`` (per slide), ``speed`` (per role and backend), ``check``
(Dask against one process) and ``scale`` (the extrapolation, per role).
"""

from __future__ import annotations

import math

from histolean.study import claims
from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE, Claim

PAPER = "Meirelles et al. 2022"
ISSUE = "issue 14 (side-by-side check on this 2-core CPU)"
ROLES = ("original", "reduced")
# Cohen's kappa bands (Landis & Koch 1977): >= 0.6 substantial agreement, < 0.4 fair or worse
KAPPA_SAME, KAPPA_DIFFERENT = 0.6, 0.4
# model-only speed-ups over eager torch that issue 14 measured for ResNet50V2 NAR phi=2
ISSUE_SPEEDUPS = {"onnxruntime": 1.6, "torch_compile": 1.4, "torch_channels_last": 1.15}
REFERENCE_BACKEND = "torch"
# end-to-end / model-only patches/s that counts as "close" (the goal issue 22 sets)
CLOSE_SHARE = 0.9


def _of(rows: list[dict], kind: str) -> list[dict]:
    return [r for r in rows if r.get("kind") == kind]


def _fmt(x, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _by_role(rows: list[dict]) -> dict[str, dict]:
    return {r["setting"]["role"]: r for r in rows if r.get("setting", {}).get("role") in ROLES}


def _label(model_row: dict) -> str:
    setting = ", ".join(f"{k}={v}" for k, v in model_row.get("setting", {}).items() if k != "role")
    role, network = model_row["setting"]["role"], f"{model_row['model']} {model_row['method']}"
    return f"{role} ({network}{' ' + setting if setting else ''})"


def _scale(rows: list[dict]) -> str:
    parts = []
    profile = next((r.get("profile") for r in rows if r.get("profile")), None)
    if profile:
        parts.append(f"{profile} profile")
    models = _of(rows, "model")
    if models:
        parts.append(f"models: {models[0].get('source', 'unknown source')}")
    maps = _of(rows, "map")
    if maps:
        cap = (maps[0].get("scale") or {}).get("max_patches_per_slide")
        parts.append(f"at most {cap} patches per slide predicted" if cap else "every tissue patch predicted")
    speed = _of(rows, "speed")
    if speed:
        s = speed[0]
        loads = [r["metrics"].get("load_average") for r in speed if r["metrics"].get("load_average") is not None]
        parts.append(f"speed: {s.get('scale', {}).get('speed_patches', '?')} patches x "
                     f"{s.get('scale', {}).get('speed_repeats', '?')} interleaved rounds, "
                     f"{s.get('threads') or 'all'} thread(s) per backend"
                     + (f" on {len(s['metrics']['cores'])} core(s) with the reader" if s["metrics"].get("cores")
                        else "")
                     + (f", load average up to {max(loads):.1f}" if loads else ""))
    return "; ".join(parts) or "no rows"


def _combine(verdicts: list[str]) -> str:
    """All models agree on a verdict: that one; otherwise not resolved."""
    return verdicts[0] if verdicts and all(v == verdicts[0] for v in verdicts) else NOT_RESOLVED


# ---------------------------------------------------------------------------------------------
def same_map_claim(rows: list[dict], scale: str) -> Claim:
    models = _by_role(_of(rows, "model"))
    agreement = _of(rows, "agreement")
    base = dict(paper=f"{PAPER}, Sections 1 and 5",
                claim="NAR: about 4x fewer FLOPs for the same TIL classification (the reduced model's map "
                      "agrees with the original's)",
                paper_value="up to 4x fewer FLOPs at the same AUC (ResNet50V2 NAR phi=2: 3.26x)",
                rule=f"not testable with stand-ins trained here; else holds if Cohen's kappa of the two maps is "
                     f">= {KAPPA_SAME} (substantial) on every slide, fails if < {KAPPA_DIFFERENT} on any slide, "
                     f"else not resolved (also when a kappa is undefined: one class only)",
                scale=scale)
    if set(models) != set(ROLES) or not agreement:
        return Claim(**base, ours="not run (no model pair or no agreement rows)", verdict=NOT_TESTABLE)
    g_o, g_r = models["original"].get("gflops"), models["reduced"].get("gflops")
    kappas = [r["metrics"]["cohen_kappa"] for r in agreement]
    same = [r["metrics"]["same_label_fraction"] for r in agreement]
    auc = {role: models[role].get("metrics", {}).get("auc") for role in ROLES}
    ours = (f"{_label(models['original'])} {_fmt(g_o, 3)} GFLOPs/patch, {_label(models['reduced'])} {_fmt(g_r, 3)} "
            f"({_fmt(g_o / g_r if g_o and g_r else None, 1)}x fewer). Maps agree on "
            f"{', '.join(f'{x:.0%}' for x in same)} of patches, Cohen's kappa {', '.join(_fmt(k) for k in kappas)} "
            f"({', '.join(r['dataset'] for r in agreement)}); validation AUC {_fmt(auc['original'])} vs "
            f"{_fmt(auc['reduced'])}")
    stand_ins = "stand-in" in str(models["original"].get("source", ""))
    finite = [k for k in kappas if k is not None and math.isfinite(k)]
    if stand_ins:
        verdict = NOT_TESTABLE
    elif any(k < KAPPA_DIFFERENT for k in finite):
        verdict = FAILS
    elif len(finite) == len(kappas) and all(k >= KAPPA_SAME for k in finite):
        verdict = HOLDS
    else:
        verdict = NOT_RESOLVED
    note = ("The paper's claim is on AUC over test patches (notebook 05 tests it); here it is read as 'the reduced "
            "model draws the same map'.")
    if stand_ins:
        note += (" The models are stand-ins trained briefly at reduced scale: their agreement says little about "
                 "the paper's.")
    return Claim(**base, ours=ours, verdict=verdict, note=note)


def backend_claims(rows: list[dict], scale: str) -> list[Claim]:
    speed = _of(rows, "speed")
    out = []
    for backend, paper_speedup in ISSUE_SPEEDUPS.items():
        base = dict(paper=ISSUE, claim=f"{backend} runs model-only inference faster than eager torch",
                    paper_value=f"about {paper_speedup:g}x (ResNet50V2 NAR phi=2)",
                    rule="holds if the speed-up over eager torch is above 1 in every timed round for both models; "
                         "fails if below 1 in every round for both; else not resolved",
                    scale=scale)
        timed = [r for r in speed if r["method"] == backend]
        if not timed or any(r["setting"].get("reference") != REFERENCE_BACKEND for r in timed):
            why = "not timed in this profile" if not timed else "timed against another reference than eager torch"
            out.append(Claim(**base, ours=why, verdict=NOT_TESTABLE))
            continue
        lo = min(r["metrics"]["speedup_min"] for r in timed)
        hi = max(r["metrics"]["speedup_max"] for r in timed)
        ours = "; ".join(f"{r['setting']['role']} {r['metrics']['speedup']:.2f}x (rounds "
                         f"{r['metrics']['speedup_min']:.2f}-{r['metrics']['speedup_max']:.2f})" for r in timed)
        out.append(Claim(**base, ours=ours, verdict=claims.directional(lo - 1, hi - 1, "higher"), interval=(lo, hi),
                         note="The range is over interleaved timing rounds on a shared machine, not a confidence "
                              "interval."))
    return out


def deployed_backend(rows: list[dict], role: str | None = None) -> str | None:
    """The backend label ``role``'s maps were made with (the ``auto`` choice, per checkpoint, or
    ``--backend``), from the map rows; any role's when ``role`` is None."""
    used = [r["setting"]["backend"] for r in _of(rows, "map")
            if r.get("setting", {}).get("backend") and role in (None, r["setting"].get("role"))]
    return used[0] if used else None


def default_backend_claim(rows: list[dict], scale: str) -> Claim:
    speed = _of(rows, "speed")
    roles = sorted({r["setting"]["role"] for r in speed})
    deployed = {role: deployed_backend(rows, role) for role in roles}
    base = dict(paper=ISSUE, claim="the backend the maps use (chosen by measurement) is the fastest that works",
                paper_value="onnxruntime was the fastest of the four measured in issue 14; issue 19 adds OpenVINO",
                rule="holds if, for every model, the backend its map rows name ("
                     + (", ".join(f"{k}: {v}" for k, v in deployed.items()) or "none")
                     + ") has the highest median model-only speed-up among the backends timed; fails if it has not "
                       "for every model; not resolved when the models disagree (a comparison of medians; the choice "
                       "was measured on other patches and threads, so it can lose a close race here)",
                scale=scale)
    methods = {role: {r["method"] for r in speed if r["setting"]["role"] == role} for role in roles}
    if not roles or any(d is None or d not in methods[role] or len(methods[role]) < 2 for role, d in deployed.items()):
        return Claim(**base, ours="the maps' backend and at least one other backend were not both timed",
                     verdict=NOT_TESTABLE)
    fastest = {role: max((r for r in speed if r["setting"]["role"] == role), key=lambda r: r["metrics"]["speedup"])
               for role in roles}
    ours = "fastest: " + ", ".join(f"{role} {r['method']} ({r['metrics']['speedup']:.2f}x; maps on {deployed[role]})"
                                   for role, r in fastest.items())
    return Claim(**base, ours=ours, verdict=_combine([HOLDS if r["method"] == deployed[role] else FAILS
                                                     for role, r in fastest.items()]))


def end_to_end_claim(rows: list[dict], scale: str) -> Claim:
    speed = _of(rows, "speed")
    base = dict(paper=ISSUE, claim="reading overlaps compute, so end-to-end patches/s stays close to model-only",
                paper_value=f"close (issue 22 sets the goal at >= {CLOSE_SHARE:g})",
                rule=f"holds if end-to-end patches/s is at least {CLOSE_SHARE:g} of model-only (model-only / "
                     f"end-to-end time in the same round, median over rounds; the reader and the model on the "
                     f"cores model-only had; the timed window starts with the tiles a raster-order map has "
                     f"decoded there), and so is model / (model + reading) time with reading timed over the slide "
                     f"(a window of patches can decode fewer tiles per patch than a map), for every backend and "
                     f"model; fails otherwise",
                scale=scale)
    if not speed:
        return Claim(**base, ours="not timed", verdict=NOT_TESTABLE)
    lowest = min(min(r["metrics"]["end_to_end_share"], r["metrics"]["reading_bound"]) for r in speed)
    ours = "end-to-end / model-only: " + "; ".join(
        f"{r['method']} {r['setting']['role']} {r['metrics']['end_to_end_share']:.0%}" for r in speed)
    short = [r for r in speed if min(r["metrics"]["end_to_end_share"], r["metrics"]["reading_bound"]) < CLOSE_SHARE]
    if short:  # where the time goes
        ours += ". Below the goal, per patch: " + "; ".join(
            f"{r['method']} {r['setting']['role']} model {r['metrics']['ms_per_patch']['model']:.2f} ms, reading "
            f"{r['metrics']['ms_per_patch']['reading']:.2f} ms over the slide (at best "
            f"{r['metrics']['reading_bound']:.0%} with the two sharing the cores)" for r in short)
    ours += "; model / (model + reading over the slide): " + "; ".join(
        f"{r['method']} {r['setting']['role']} {r['metrics']['reading_bound']:.0%}" for r in speed)
    return Claim(**base, ours=ours, verdict=claims.within(lowest, CLOSE_SHARE, math.inf),
                 note="Reading (decoding the slide's tiles, resizing) costs the same per patch whatever the "
                      "backend, so the faster the model, the more of the budget reading takes: on the same "
                      "cores, end-to-end / model-only cannot exceed model / (model + reading) time.")


def dask_claim(rows: list[dict], scale: str) -> Claim:
    checks = _of(rows, "check")
    base = dict(paper=ISSUE, claim="Dask gives the single-process result", paper_value="the same results",
                rule="holds if the Dask map and the single-process map hold the same patches with identical "
                     "probabilities (largest difference 0); fails otherwise",
                scale=scale)
    if not checks:
        return Claim(**base, ours="not checked", verdict=NOT_TESTABLE)
    c = checks[0]
    m = c["metrics"]
    diff = m["max_abs_probability_difference"]
    same = bool(m["same_patches"]) and diff is not None and math.isfinite(diff)
    ours = (f"{c['dataset']}: same patches {bool(m['same_patches'])} ({m['n_patches']}), largest probability "
            f"difference {'n/a' if diff is None else f'{diff:.3g}'}")
    return Claim(**base, ours=ours, verdict=claims.within(diff, 0.0, 0.0) if same else FAILS)


def scale_claim(rows: list[dict], scale: str) -> Claim:
    whole = _by_role([r for r in _of(rows, "scale") if r.get("data_kind") == "none"])
    base = dict(paper=f"{PAPER}, Sections 1 and 2.1",
                claim="analysing thousands of slides is costly, and the reduced model makes it cheaper",
                paper_value="not quantified (the motivation of NAR)",
                rule="holds if the reduced model's extrapolated time for the slides is below the original's; fails "
                     "otherwise (a sign comparison of medians from separate timing runs, no interval)",
                scale=scale)
    if set(whole) != set(ROLES):
        return Claim(**base, ours="no extrapolation for both models", verdict=NOT_TESTABLE)
    o, r = whole["original"]["metrics"], whole["reduced"]["metrics"]
    ours = (f"{o['slides']} slides, each a {whole['original']['dataset']}: original {o['hours_for_slides']:.1f} h, "
            f"reduced {r['hours_for_slides']:.1f} h ({o['seconds_per_slide']:.0f} s vs {r['seconds_per_slide']:.0f} s "
            f"per slide "
            f"with the {whole['original']['setting'].get('backend', deployed_backend(rows, 'original'))} backend, "
            f"{o['slides_at_once']} slide(s) at a time on this machine)")
    return Claim(**base, ours=ours, verdict=HOLDS if r["hours_for_slides"] < o["hours_for_slides"] else FAILS)


def paper_claims(rows: list[dict]) -> list[Claim]:
    """The notebook's claims, each with what our rows show and the rule that decided it."""
    rows = [r for r in rows if r.get("kind") != "claim"]
    scale = _scale(rows)
    return [same_map_claim(rows, scale), *backend_claims(rows, scale), default_backend_claim(rows, scale),
            end_to_end_claim(rows, scale), dask_claim(rows, scale), scale_claim(rows, scale)]
