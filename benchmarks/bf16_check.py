"""Does bf16 training give the same test AUC as float32 on the TIL task? Paired runs (issue 19).

Each variant (default: ResNet50V2's original and NAR phi=2) is trained once per seed in float32 and once
in bf16 autocast with channels_last (``train.fit(precision=...)``): same task, same seed, same loaders,
only the precision differs, so every seed gives one paired difference AUC(bf16) - AUC(fp32). Test AUCs
are computed in float32 (``train.predict``). The task and the training settings are the profile's
``til_nar_resrep`` ones (``params/<profile>.yaml``), as in notebook 05. Read the mean paired difference
against the seed-to-seed spread of the float32 AUCs: bf16 keeps results equal when the first is small
beside the second. Times per epoch are side by side (a pair trains concurrently with ``--workers 2``)
and labelled as measured on a loaded machine when the load average exceeded the cores::

    .venv/bin/python benchmarks/bf16_check.py                                    # default profile, seeds 0-2
    .venv/bin/python benchmarks/bf16_check.py --epochs 1 --seeds 0 --variants original   # a quick look
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import torch
from histolean.core import metrics, models, train
from histolean.core import precision as precisions
from histolean.data.til_task import load_til_task
from histolean.experiments import til_nar_resrep
from histolean.study.runner import load_profile, output_dir
from histolean.util import atomic

BENCHMARK = til_nar_resrep.BENCHMARK
PRECISIONS = ("fp32", "bf16")
DEFAULT_VARIANTS = ("original", "nar_phi2")


def profile_settings(profile: str) -> tuple[dict, int]:
    """The profile's ``til_nar_resrep`` parameters and its seed (the seed of the data)."""
    cfg = load_profile(profile)
    return dict(cfg["benchmarks"][BENCHMARK]), int(cfg["seed"])


def load_task(params: dict, data_seed: int, data_root=None):
    return load_til_task(params.get("dataset", "crc_windows"), data_root, window_um=params["window_um"],
                         train_windows_per_image=params["train_windows_per_image"],
                         split_fractions=params["split_fractions"], seed=data_seed,
                         n_train=params.get("n_train"), n_eval=params.get("n_eval"))


def train_config(params: dict, epochs: int | None = None) -> til_nar_resrep.TrainConfig:
    return til_nar_resrep.TrainConfig(epochs=epochs or params["epochs"], batch_size=params["batch_size"],
                                      lr=params["lr"], weight_decay=params["weight_decay"],
                                      schedule=params.get("schedule"))


def select_variants(architecture: str, base_input: int, names) -> list:
    """Variants by their short names (``original``, ``nar_phi2``, ``ir_k3``), built as the notebook builds them."""
    config = {"base_input": base_input}
    for name in names:
        for prefix, method in (("nar_phi", "nar"), ("ir_k", "ir")):
            if name.startswith(prefix):
                config.setdefault(method, []).append(int(name[len(prefix):]))
                break
        else:
            if name != "original":
                raise ValueError(f"unknown variant {name!r}; use original, nar_phi<N> or ir_k<N>")
    found = {v.id.split("__", 1)[1]: v for v in til_nar_resrep.build_variants({architecture: config})}
    return [found[name] for name in names]


def train_pair_member(task, variant, cfg, seed: int, requested: str) -> dict:
    """One training in one precision; its test AUC in float32."""
    torch.set_num_threads(1)
    loader = til_nar_resrep.TilRunner(task, ".", cfg, device="cpu").loader   # the experiment's own loaders
    size = variant.spec.input_size
    net = models.build(variant.spec, seed=seed)
    fit = train.fit(net, loader("train", size, shuffle=True, seed=seed), loader("valid", size),
                    epochs=cfg.epochs, optimizer="adam", lr=cfg.lr, weight_decay=cfg.weight_decay,
                    schedule=cfg.schedule, step_size=cfg.step_size, gamma=cfg.gamma, device="cpu",
                    precision=requested, progress=False, seed=seed, desc=variant.id)
    probs, labels = train.predict(net, loader("test", size), device="cpu")   # float32, default layout
    return {"variant": variant.id, "seed": seed, "requested": requested, "precision": fit.precision,
            "test_auc": metrics.auc(labels, probs), "val_auc": fit.best_value, "best_epoch": fit.best_epoch,
            "epochs_run": len(fit.history), "epoch_time_s": fit.time_per_epoch_s, "n_test": len(labels)}


def _sd(values) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def summarise(runs: list[dict], variant_ids, seeds) -> dict:
    """Per variant: AUCs by precision and seed, paired differences bf16 - fp32, their mean/min/max/sd."""
    out = {}
    for vid in variant_ids:
        by = {(r["seed"], r["requested"]): r for r in runs if r["variant"] == vid}
        auc = {p: [by[(s, p)]["test_auc"] for s in seeds] for p in PRECISIONS}
        diffs = [b - f for b, f in zip(auc["bf16"], auc["fp32"])]
        out[vid] = {"seeds": list(seeds), "test_auc": auc, "paired_diff": diffs,
                    "mean_diff": float(np.mean(diffs)), "min_diff": float(min(diffs)),
                    "max_diff": float(max(diffs)), "sd_diff": _sd(diffs),
                    "auc_sd_over_seeds": {p: _sd(auc[p]) for p in PRECISIONS},
                    "epoch_time_s": {p: float(np.mean([by[(s, p)]["epoch_time_s"] for s in seeds]))
                                     for p in PRECISIONS},
                    "precision_recorded": {p: sorted({by[(s, p)]["precision"] for s in seeds}) for p in PRECISIONS}}
    return out


def run_check(task, variants, cfg, seeds, *, workers: int = 1, log=print) -> dict:
    """Every variant x seed x precision trained, summarised; ``workers`` > 1 trains in that many processes."""
    jobs = [(v, s, p) for v in variants for s in seeds for p in PRECISIONS]   # a pair is adjacent: trained together
    loads = [os.getloadavg()[0]]
    runs = []
    if workers > 1:
        context = multiprocessing.get_context("spawn")   # no fork of a process torch has threaded
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(train_pair_member, task, v, cfg, s, p) for v, s, p in jobs]
            for future in concurrent.futures.as_completed(futures):
                runs.append(future.result())
                loads.append(os.getloadavg()[0])
                log(_run_line(runs[-1]))
    else:
        for v, s, p in jobs:
            runs.append(train_pair_member(task, v, cfg, s, p))
            loads.append(os.getloadavg()[0])
            log(_run_line(runs[-1]))
    cores = os.cpu_count() or 1
    loaded = max(loads) > cores
    timing = (f"measured on a loaded machine (1-min load average up to {max(loads):.1f} on {cores} cores), "
              if loaded else "measured with the machine otherwise idle, ") + f"{workers} training(s) at a time"
    return {"variants": summarise(runs, [v.id for v in variants], seeds), "runs": sorted(
        runs, key=lambda r: (r["variant"], r["seed"], r["requested"])), "timing": timing, "loaded": loaded,
        "load_average_max": max(loads), "machine": precisions.machine(1)}


def _run_line(r: dict) -> str:
    return (f"{r['variant']} seed {r['seed']} {r['requested']} (ran {r['precision']}): test AUC {r['test_auc']:.4f}, "
            f"{r['epoch_time_s']:.1f} s/epoch")


def print_report(result: dict) -> None:
    print("\n| variant | seed | AUC fp32 | AUC bf16 | bf16 - fp32 |\n|---|---|---|---|---|")
    for vid, v in result["variants"].items():
        for i, s in enumerate(v["seeds"]):
            print(f"| {vid} | {s} | {v['test_auc']['fp32'][i]:.4f} | {v['test_auc']['bf16'][i]:.4f} | "
                  f"{v['paired_diff'][i]:+.4f} |")
    def fmt(x):
        return "n/a" if x is None else f"{x:.4f}"

    print("\n| variant | mean diff | min | max | sd diff | sd AUC fp32 over seeds | s/epoch fp32 | s/epoch bf16 |"
          " precision recorded |\n|---|---|---|---|---|---|---|---|---|")
    for vid, v in result["variants"].items():
        t, rec = v["epoch_time_s"], v["precision_recorded"]
        print(f"| {vid} | {v['mean_diff']:+.4f} | {v['min_diff']:+.4f} | {v['max_diff']:+.4f} | {fmt(v['sd_diff'])} |"
              f" {fmt(v['auc_sd_over_seeds']['fp32'])} | {t['fp32']:.1f} | {t['bf16']:.1f} |"
              f" fp32: {'/'.join(rec['fp32'])}, bf16: {'/'.join(rec['bf16'])} |")
    print(f"times per epoch {result['timing']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", help="params/<profile>.yaml gives task and training")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs (quick runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        help="short names: original, nar_phi<N>, ir_k<N>")
    parser.add_argument("--architecture", default="resnet50v2")
    parser.add_argument("--workers", type=int, default=2, help="trainings at a time, one torch thread each")
    parser.add_argument("--data-root", default=None, help="default: $HISTOLEAN_DATA or ./data")
    parser.add_argument("--out", default=None, help="default: outputs/<profile>/bf16_check.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    params, data_seed = profile_settings(args.profile)
    base_input = params["architectures"][args.architecture]["base_input"]
    variants = select_variants(args.architecture, base_input, args.variants)
    cfg = train_config(params, args.epochs)
    task = load_task(params, data_seed, args.data_root)
    print(f"{task.dataset} ({task.data_kind}): {task.sizes()}; {cfg}; seeds {args.seeds}", flush=True)
    result = run_check(task, variants, cfg, args.seeds, workers=args.workers, log=lambda s: print(s, flush=True))
    result["settings"] = {"profile": args.profile, "data_seed": data_seed, "base_input": base_input,
                          "train": vars(cfg), "task": {**task.sizes(), "dataset": task.dataset,
                                                       "data_kind": task.data_kind, "window_px": task.window_px},
                          "input_size": {v.id: v.spec.input_size for v in variants}}
    print_report(result)
    out = Path(args.out) if args.out else output_dir(args.profile) / "bf16_check.json"
    atomic.write_text(out, json.dumps(result, indent=1, default=float))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
