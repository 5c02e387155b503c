"""The glue of notebook 04 (``streaming_sgd``) and of ``benchmarks/streaming_memory.py``: the memory
experiment's result rows (one shape for both) and the notebook's closing claims.

The method lives in :mod:`histolean.methods.streaming` (the tiled trunk, the ImageNette network, one
measured step and the sweep, :func:`histolean.methods.streaming.memory.memory_sweep`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from histolean.methods import streaming
from histolean.study import published
from histolean.study.claims import NOT_RESOLVED, NOT_TESTABLE, Claim, directional, within

PAPER = "Pinckaers et al. 2020"
MEMORY_METRICS = ("step_peak_mib", "process_peak_mib", "input_mib", "input_share", "time_s", "projected_mib")
# Decision margins. float32 training drifts apart by rounding only; float64 gradients agree to ~1e-14.
LOSS_GAP_MARGIN = 1e-4
FLOAT64_MARGIN = 1e-10
# The streamed step may still grow with the image (the trunk's output and its gradient are kept whole),
# but by clearly less than the conventional step, whose activations grow with the pixels.
STREAMED_GROWTH_SHARE = 0.5


# --------------------------------------------------------------------------- memory rows

def memory_row(result: dict, channels, threads: int | None = None) -> dict:
    """The keyword arguments of ``Recorder.add`` for one result of ``streaming.memory.memory_sweep``."""
    tile, size = result["tile_size"], result["image_size"]
    trunk = streaming.imagenette_network(2, list(channels), 5)[0]
    out_h, out_w = streaming.StreamingTrunk(trunk, 16).output_size(size, size)
    return {
        "dataset": "uniform_noise", "data_kind": "synthetic", "model": f"imagenette_cnn{tuple(channels)}",
        "method": result["method"],
        "setting": {"part": "memory", "sweep": result["sweep"], "image_size": size, "tile_size": tile,
                    "crop_size": streaming.StreamingTrunk(trunk, tile).crop_size[0] if tile else None,
                    "input_on": result.get("input_on"),
                    "skip_zero_gradient_tiles": bool(result.get("skip_zero_gradient_tiles", False))},
        "metrics": {k: result.get(k) for k in MEMORY_METRICS},
        "status": result["status"], "error": result.get("error"), "memory_method": result.get("memory_method"),
        "projection_basis": result.get("basis"), "input_size": size,
        # the streamed trunk's output (float32) is kept whole: it, its gradient and the head grow with the image
        "trunk_output_mib": channels[-1] * out_h * out_w * 4 / 2 ** 20,
        "image_mib": 3 * size * size * 4 / 2 ** 20, "threads": threads,
    }


def read_memory_results(path: str | Path) -> list[dict]:
    """The memory rows of a ``benchmarks/streaming_memory.py`` results file (older files: ``peak_mib``)."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r["method"] in ("streaming", "conventional")]
    for r in rows:
        r["setting"].setdefault("part", "memory")
        r["metrics"].setdefault("step_peak_mib", r["metrics"].get("peak_mib"))
    return rows


def describe_memory_result(r: dict) -> str:
    """One printed line per sweep result."""
    if r["status"] == "ok":
        shown = (f"step {r['step_peak_mib']:8.1f} MiB, process {r['process_peak_mib']:8.1f} MiB "
                 f"(input {r['input_mib']:.0f} MiB, {100 * r['input_share']:.0f} %), {r['time_s']:7.2f} s")
    elif r["status"] == "projected":
        shown = f"projected {r['projected_mib']:.0f} MiB ({r['basis']})" if r.get("projected_mib") else r["basis"]
    else:
        shown = r.get("error") or r["status"]
    return (f"{r['sweep']:14s} {r['method']:12s} image {r['image_size']:5d} tile {r['tile_size'] or '-':>5} "
            f"input {r.get('input_on') or '-':6s}: {shown}")


# --------------------------------------------------------------------------- claims

def _part(rows: list[dict], part: str, method: str | None = None) -> list[dict]:
    return [r for r in rows if r["setting"].get("part") == part and (method is None or r["method"] == method)]


def training_equivalent(rows: list[dict]) -> Claim:
    gap = next((r for r in rows if r["method"] == "equivalence_training"), None)
    rule = f"holds if the largest difference of the per-epoch losses is within {LOSS_GAP_MARGIN:g} (float32)"
    paper_value = "nearly identical loss curves (ImageNette, 200 epochs; a figure, no numbers)"
    if gap is None:
        return Claim(paper=f"{PAPER}, Section 5", claim="streaming and conventional training give the same loss "
                     "curves", paper_value=paper_value, ours="not run", rule=rule, verdict=NOT_TESTABLE, scale="-")
    m, s = gap["metrics"], gap["setting"]
    return Claim(
        paper=f"{PAPER}, Section 5", claim="streaming and conventional training give the same loss curves",
        paper_value=paper_value,
        ours=f"largest loss difference {m['loss_gap']:.1e}, largest weight difference {m['weight_gap']:.1e} "
             f"after {s['epochs']} epochs",
        rule=rule, verdict=within(m["loss_gap"], 0.0, LOSS_GAP_MARGIN),
        scale=f"{s['epochs']} epochs, {gap.get('input_size')} px mosaics, tile {s['tile']}, {gap['data_kind']}")


def gradients_equal(rows: list[dict]) -> Claim:
    checks = {r["setting"]["input"]: r for r in rows if r["method"] == "equivalence_check"}
    dithered = next((r for name, r in checks.items() if "dithered" in name), None)
    keys = ("output_abs", "weight_grad_abs", "input_grad_abs", "loss_abs")
    rule = (f"holds if, on the dithered input (no exact max-pool ties), the float64 outputs, loss, weight and "
            f"input gradients differ by at most {FLOAT64_MARGIN:g}")
    if dithered is None:
        return Claim(paper=f"{PAPER}, Section 3", claim="streaming computes the same gradients", paper_value="exact",
                     ours="not run", rule=rule, verdict=NOT_TESTABLE, scale="-")
    m = dithered["metrics"]
    worst = max(m[k] for k in keys)
    ties = [r["metrics"]["input_grad_abs"] for name, r in checks.items() if r is not dithered]
    return Claim(
        paper=f"{PAPER}, Section 3", claim="streaming computes the same gradients as the conventional network",
        paper_value="exact (up to rounding)",
        ours=f"float64: largest difference {worst:.1e} (outputs {m['output_abs']:.1e}, weight gradients "
             f"{m['weight_grad_abs']:.1e}, input gradients {m['input_grad_abs']:.1e})",
        rule=rule, verdict=within(worst, 0.0, FLOAT64_MARGIN),
        scale=f"{dithered['setting'].get('image_size')} px, tile {dithered['setting'].get('tile')}, float64",
        note=(f"on the images as loaded, input gradients differ by up to {max(ties):.1e} (exact max-pool ties, "
              "where there are any, send them to other, equally valid pixels)") if ties else "")


def memory_tracks_the_tile(rows: list[dict]) -> Claim:
    sweep = [r for r in _part(rows, "memory") if r["setting"]["sweep"] == "constant_tile" and r["status"] == "ok"
             and r["setting"].get("input_on", "device") == "device"]
    peaks = {m: {r["setting"]["image_size"]: r for r in sweep if r["method"] == m}
             for m in ("streaming", "conventional")}
    both = sorted(set(peaks["streaming"]) & set(peaks["conventional"]))
    rule = (f"over the constant-tile sweep (smallest to largest image both ran), holds if the streamed step's "
            f"own peak grows by less than {STREAMED_GROWTH_SHARE:g} x the conventional step's growth (MiB)")
    claim = "with a constant tile, a streamed step's memory does not grow with the image as a conventional one's does"
    paper_value = "memory depends on the tile, not on the image (constant-tile figure, no numbers)"
    if len(both) < 2:
        return Claim(paper=PAPER, claim=claim, paper_value=paper_value, ours="fewer than two sizes ran both ways",
                     rule=rule, verdict=NOT_TESTABLE, scale="-")
    a, b = both[0], both[-1]
    s0, s1 = peaks["streaming"][a]["metrics"], peaks["streaming"][b]["metrics"]
    c0, c1 = peaks["conventional"][a]["metrics"], peaks["conventional"][b]["metrics"]
    grow_s, grow_c = s1["step_peak_mib"] - s0["step_peak_mib"], c1["step_peak_mib"] - c0["step_peak_mib"]
    return Claim(
        paper=PAPER, claim=claim, paper_value=paper_value,
        ours=f"from {a} to {b} px ({(b / a) ** 2:.0f}x the pixels) the step's peak goes {s0['step_peak_mib']:.0f} -> "
             f"{s1['step_peak_mib']:.0f} MiB streamed, {c0['step_peak_mib']:.0f} -> {c1['step_peak_mib']:.0f} MiB "
             f"conventional; the whole process {s0['process_peak_mib']:.0f} -> {s1['process_peak_mib']:.0f} MiB "
             f"streamed, of which the input {100 * s1['input_share']:.0f} % at {b} px",
        rule=rule, verdict=within(grow_s, -math.inf, STREAMED_GROWTH_SHARE * grow_c) if grow_c > 0 else NOT_RESOLVED,
        scale=f"{peaks['streaming'][a]['model']}, tile {peaks['streaming'][a]['setting']['tile_size']} px, "
              f"one SGD step per fresh process",
        note="what still grows when streamed is the trunk's output, its gradient and the head")


def beyond_conventional(rows: list[dict]) -> Claim:
    large = {r["method"]: r for r in _part(rows, "memory") if r["setting"]["sweep"] == "large"}
    claimed = next(iter(published.table("streaming", "memory_claims")), {})
    paper_value = (f"a conventional {claimed.get('image_size')}^2 network needs ~{claimed.get('memory_per_image_gb')} "
                   "GB per image (their network)")
    rule = ("holds if the streamed step (input read from a memory-mapped file) needs less memory for itself than "
            "the conventional step's peak projected to the same size; fails otherwise")
    claim = "streaming trains a step at a size the conventional step could not hold"
    done, proj = large.get("streaming"), large.get("conventional")
    if not done or not proj or done["status"] != "ok" or not proj["metrics"].get("projected_mib"):
        return Claim(paper=f"{PAPER}, Discussion", claim=claim, paper_value=paper_value,
                     ours="no large step, or nothing to project from", rule=rule, verdict=NOT_TESTABLE, scale="-")
    d, p = done["metrics"], proj["metrics"]
    size = done["setting"]["image_size"]
    return Claim(
        paper=f"{PAPER}, Discussion", claim=claim, paper_value=paper_value,
        ours=f"at {size}^2 streamed from a memory-mapped file: step {d['step_peak_mib']:.0f} MiB, whole process "
             f"{d['process_peak_mib']:.0f} MiB; the conventional step would need about {_size(p['projected_mib'])} "
             f"plus {_size(p['input_mib'])} for the image (projected: {proj.get('projection_basis')})",
        rule=rule, verdict=within(d["step_peak_mib"], 0.0, p["projected_mib"]),
        scale=f"{done['model']} (reduced channels), tile {done['setting']['tile_size']} px")


def auc_rises_with_resolution(rows: list[dict]) -> Claim:
    e2e = sorted(_part(rows, "end_to_end", "streaming"), key=lambda r: r["setting"]["image_size"])
    theirs = published.table("streaming", "table4_camelyon17_auc")
    paper_value = "AUC " + ", ".join(f"{t['negative']:.2f} at {t['image_size']}" for t in theirs) + \
        " (CAMELYON17, negative vs any metastasis)"
    rule = ("holds if the highest resolution's AUC interval lies wholly above the lowest's (the difference's "
            "conservative interval [lo_high - hi_low, hi_high - lo_low] above 0); fails if wholly below; "
            "else not resolved")
    claim = "the AUC rises with the image's resolution (image-level labels only)"
    if len(e2e) < 2:
        return Claim(paper=f"{PAPER}, Table 4", claim=claim, paper_value=paper_value, ours="fewer than two sizes ran",
                     rule=rule, verdict=NOT_TESTABLE, scale="-")
    (low_lo, low_hi), (high_lo, high_hi) = _ci(e2e[0]), _ci(e2e[-1])
    lo, hi = high_lo - low_hi, high_hi - low_lo
    resolved = not (math.isnan(lo) or math.isnan(hi))
    s = e2e[0]["setting"]
    return Claim(
        paper=f"{PAPER}, Table 4", claim=claim, paper_value=paper_value,
        ours=", ".join(f"{_num(r['metrics']['auc']):.2f} [{_ci(r)[0]:.2f}, {_ci(r)[1]:.2f}] "
                       f"at {r['setting']['image_size']} px" for r in e2e),
        rule=rule, verdict=directional(lo, hi, "higher") if resolved else NOT_TESTABLE,
        interval=(lo, hi) if resolved else None,
        scale=f"PCam mosaics of {s['grid']}x{s['grid']} patches, {s['n_train']} training images, {s['epochs']} "
              f"epochs, {e2e[0]['metrics']['n_test']} test images ({e2e[0]['data_kind']})",
        note="" if resolved else "a test set with one class has no AUC interval")


def _size(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def _num(value) -> float:
    return math.nan if value is None else float(value)  # a NaN is stored as null in the rows


def _ci(row: dict) -> tuple[float, float]:
    lo, hi = row["metrics"].get("auc_ci") or (None, None)
    return _num(lo), _num(hi)


def paper_claims(rows: list[dict]) -> list[Claim]:
    """Equivalence, memory and end-to-end claims of the paper, each decided from the notebook's rows."""
    rows = [r for r in rows if r.get("kind", "variant") != "claim"]
    return [training_equivalent(rows), gradients_equal(rows), memory_tracks_the_tile(rows),
            beyond_conventional(rows), auc_rises_with_resolution(rows)]
