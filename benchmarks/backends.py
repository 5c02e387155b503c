"""Inference speed of every backend in both precisions, and a training step in float32 vs bf16 (issue 19).

One command prints the issue's table: per network, patches/s of each backend (:mod:`histolean.core.
backends`) from one interleaved run (``histolean.core.measure.compare_speed``: every round calls every
backend once, in a rotated order; medians over rounds), the speed-up against eager float32 (median of the
per-round ratios, with their range), and each backend's float32 check (largest class-probability
difference, label agreement; untrained networks, random patches). Then one training step (forward,
backward, SGD) in float32 and in bf16 autocast with channels_last, timed side by side, as a ratio.

Ratios are what to read: absolute speeds move with the load of the machine. Run it alone::

    .venv/bin/python benchmarks/backends.py                                  # the issue's table
    .venv/bin/python benchmarks/backends.py --networks tiny --train-networks tiny --rounds 2 --batch 4
    .venv/bin/python benchmarks/backends.py --json outputs/backends.json     # the rows, for a report

Networks: ``resnet50v2``, ``resnet50v2_nar2`` (NAR phi=2), ``inception_v4``, ``inception_v4_nar6`` (NAR
phi=6), ``tiny``; each at ``--input-size`` (inference, default 240 px: the TIL patches) or ``--train-size``
(training step, default 96 px) before NAR reduces it (ResNet50V2 NAR phi=2 at 240 px runs at 181 px,
Inception V4 NAR phi=6 at 104 px).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from histolean.core import arch, backends, measure, models, precision
from histolean.methods import nar

NETWORKS = {
    "resnet50v2": lambda size: arch.resnet50v2(input_size=size),
    "resnet50v2_nar2": lambda size: nar.reduce(arch.resnet50v2(input_size=size), 2),
    "inception_v4": lambda size: arch.inception_v4(input_size=size),
    "inception_v4_nar6": lambda size: nar.reduce(arch.inception_v4(input_size=size), 6),
    "tiny": lambda size: arch.tiny(input_size=size),
}
INFERENCE_DEFAULT = ("resnet50v2", "resnet50v2_nar2", "inception_v4_nar6")
TRAINING_DEFAULT = ("resnet50v2", "resnet50v2_nar2", "inception_v4")


def inference_rows(name: str, size: int, labels: list[str], *, batch: int, threads: int, rounds: int,
                   warmup: int, export_dir: str | None) -> list[dict]:
    """Every backend of ``labels`` on one network, checked against eager float32, then timed in one run."""
    spec = NETWORKS[name](size)
    net = models.build(spec, seed=0).eval()
    patches = np.random.default_rng(0).integers(0, 256, (batch, spec.input_size, spec.input_size, 3), dtype=np.uint8)
    reference = backends.make_predictor(net, "torch", threads=threads)(patches)
    calls, checks, failed = {}, {}, {}
    for text in labels:
        try:
            predict = backends.make_predictor(net, text, threads=threads, export_dir=export_dir, batch_size=batch)
            checks[text] = backends.check_against_fp32(net, predict, predict.precision, patches, reference=reference)
        except Exception as err:  # a runtime this network does not run on: shown, not timed
            failed[text] = f"{type(err).__name__}: {err}"
            continue
        calls[text] = (lambda p=predict: p(patches))
    ref = "torch" if "torch" in calls else next(iter(calls))
    timing = measure.compare_speed(calls, reference=ref, repeats=rounds, warmup=warmup, items_per_call=batch,
                                   progress=True)
    rows = []
    for text in labels:
        backend, _ = backends.parse_label(text)
        row = {"kind": "inference", "network": name, "label": spec.label, "input_size": spec.input_size,
               "backend": backend, "precision": backends.resolve_precision(*backends.parse_label(text)),
               "backend_label": text, "batch_size": batch, "threads": threads, "reference": ref}
        if text in failed:
            rows.append({**row, "status": "failed", "error": failed[text]})
            continue
        t = timing[text]
        rows.append({**row, "status": "ok", "per_s": t["per_s"], "speedup": t["speedup"],
                     "speedup_min": t["speedup_min"], "speedup_max": t["speedup_max"], "repeats": t["repeats"],
                     "check": checks[text]})
    return rows


def training_rows(name: str, size: int, *, batch: int, threads: int, rounds: int, warmup: int) -> list[dict]:
    """One SGD step in float32 and in bf16 autocast + channels_last, timed side by side."""
    spec = NETWORKS[name](size)
    base = models.build(spec, seed=0).train()
    x = torch.rand(batch, 3, spec.input_size, spec.input_size)
    y = torch.randint(0, spec.num_classes, (batch,), generator=torch.Generator().manual_seed(0))
    calls = {}
    for used in ("fp32", "bf16"):
        net = copy.deepcopy(base)
        inputs = x
        if precision.uses_channels_last(used):
            net = net.to(memory_format=torch.channels_last)
            inputs = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

        def step(net=net, opt=opt, inputs=inputs, used=used):
            opt.zero_grad(set_to_none=True)
            with precision.autocast(used, "cpu"):
                loss = F.cross_entropy(net(inputs), y)
            loss.backward()
            opt.step()

        calls[used] = step
    timing = measure.compare_speed(calls, reference="fp32", repeats=rounds, warmup=warmup, items_per_call=batch,
                                   progress=True)
    b = timing["bf16"]
    return [{"kind": "training_step", "network": name, "label": spec.label, "input_size": spec.input_size,
             "batch_size": batch, "threads": threads, "fp32_s": timing["fp32"]["median_s"], "bf16_s": b["median_s"],
             "bf16_speedup": b["speedup"], "bf16_speedup_min": b["speedup_min"], "bf16_speedup_max": b["speedup_max"],
             "repeats": rounds}]


def print_inference_table(rows: list[dict], labels: list[str]) -> None:
    print("\nInference, patches/s (speed-up against eager fp32, median of rounds [min-max]); "
          "fp32 check: largest probability difference / label agreement")
    print("| network (input) | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for network in dict.fromkeys(r["network"] for r in rows):
        cells = []
        first = next(r for r in rows if r["network"] == network)
        for text in labels:
            r = next((r for r in rows if r["network"] == network and r["backend_label"] == text), None)
            if r is None or r["status"] != "ok":
                cells.append("failed" if r else "-")
                continue
            c = r["check"]
            cells.append(f"{r['per_s']:.1f} ({r['speedup']:.2f}x [{r['speedup_min']:.2f}-{r['speedup_max']:.2f}]; "
                         f"{c['max_prob_diff']:.3f}/{c['label_agreement']:.2f}{'' if c['passed'] else ' FAILED'})")
        print(f"| {first['label']} ({first['input_size']} px) | " + " | ".join(cells) + " |")
    for network in dict.fromkeys(r["network"] for r in rows):
        ok = {r["backend_label"]: r for r in rows if r["network"] == network and r["status"] == "ok"}
        if "openvino:bf16" in ok and "onnxruntime" in ok:
            ratio = ok["openvino:bf16"]["speedup"] / ok["onnxruntime"]["speedup"]
            print(f"{network}: OpenVINO bf16 / ONNX Runtime fp32 = {ratio:.2f}x (issue 19 asks >= 2x)")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['network']} {r['backend_label']}: {r['error']}")


def print_training_table(rows: list[dict]) -> None:
    print("\nTraining step (forward, backward, SGD): bf16 autocast + channels_last against fp32")
    print("| network (input) | fp32 s/step | bf16 s/step | fp32 time / bf16 time [min-max] |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} ({r['input_size']} px) | {r['fp32_s']:.3f} | {r['bf16_s']:.3f} | "
              f"{r['bf16_speedup']:.2f}x [{r['bf16_speedup_min']:.2f}-{r['bf16_speedup_max']:.2f}] |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="*", default=list(INFERENCE_DEFAULT), choices=list(NETWORKS))
    parser.add_argument("--train-networks", nargs="*", default=list(TRAINING_DEFAULT), choices=list(NETWORKS),
                        help="networks for the training step (none: skip it)")
    parser.add_argument("--backends", nargs="*", default=None,
                        help="backend labels (default: all available here, e.g. torch openvino:bf16)")
    parser.add_argument("--with-compile", action="store_true", help="add torch_compile (minutes per network)")
    parser.add_argument("--input-size", type=int, default=240, help="inference input before NAR reduces it")
    parser.add_argument("--train-size", type=int, default=96, help="training-step input before NAR reduces it")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after --warmup ones)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--export-dir", default=None, help="where ONNX exports are kept (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write every row to this JSON file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    labels = args.backends or backends.available(include_compile=args.with_compile)
    for text in labels:
        backends.parse_label(text)
    machine = precision.machine(args.threads)
    print(f"machine: {machine}", flush=True)
    rows = []
    for name in args.networks:
        print(f"inference: {name} ...", flush=True)
        rows += inference_rows(name, args.input_size, labels, batch=args.batch, threads=args.threads,
                               rounds=args.rounds, warmup=args.warmup, export_dir=args.export_dir)
    train_rows = []
    for name in args.train_networks:
        print(f"training step: {name} ...", flush=True)
        train_rows += training_rows(name, args.train_size, batch=args.train_batch, threads=args.threads,
                                    rounds=args.rounds, warmup=args.warmup)
    if rows:
        print_inference_table(rows, labels)
    if train_rows:
        print_training_table(train_rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows + train_rows}, indent=1,
                                              default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
