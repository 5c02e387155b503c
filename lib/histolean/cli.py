"""The ``histolean`` command: run the study, build its report, inspect and fetch data.

    histolean run [--profile P] [--only NAME ...] [--force] [--scheduler ADDRESS] [--dry-run]
                  [--set BENCHMARK.KEY=VALUE ...]
    histolean report [--profile P]
    histolean data status
    histolean data fetch NAME [--dest DIR] [--url-base URL]
    histolean data check PATH --kind patches|nuclei [--mpp X] [--patch-um 50]
    histolean tilmap SLIDE_OR_FOLDER... --model CHECKPOINT --out DIR [--mpp X] [--scheduler ADDRESS]
                     [--backend auto|torch|onnxruntime|openvino:bf16|...] [--min-auc A] [--stain macenko] [--strict]
                     [--force]
"""

from __future__ import annotations

import argparse
import sys


def _cmd_run(args) -> int:
    from histolean.util import distributed
    from histolean.study import report, runner

    if distributed.launched():   # under torchrun: every rank runs the notebooks, their fits data-parallel
        from histolean.study import torchrun

        if args.dry_run:
            raise ValueError("--dry-run under torchrun: run the dry run as one process (histolean run --dry-run)")
        if args.scheduler:
            raise ValueError("--scheduler under torchrun: use one or the other (Dask fans notebooks out over "
                             "workers; torchrun runs each notebook on all its ranks)")
        outcomes = torchrun.run(args.profile, only=args.only, force=args.force, data_root=args.data,
                                 overrides=args.set)
        if not distributed.is_main():
            return 1 if any(o.status == "failed" for o in outcomes) else 0
    else:
        outcomes = runner.run(args.profile, only=args.only, force=args.force, data_root=args.data,
                             scheduler=args.scheduler, dry_run=args.dry_run, overrides=args.set)
    failed = [o for o in outcomes if o.status == "failed"]
    if not args.no_report and not args.dry_run:
        path = report.build(args.profile, data_root=args.data)
        print(f"report: {path}")
    done = sum(o.status == "ok" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    left_out = [o.benchmark for o in outcomes if o.status == "not_run"]
    print(f"{done} ran, {skipped} already complete, {len(failed)} failed"
          + (": " + ", ".join(o.benchmark for o in failed) if failed else "")
          + (f"; left out of the dry run: {', '.join(left_out)}" if left_out else ""))
    return 1 if failed else 0


def _cmd_report(args) -> int:
    from histolean.study import report

    print(report.build(args.profile, data_root=args.data))
    return 0


def _cmd_data(args) -> int:
    from histolean import data

    if args.data_cmd == "status":
        print(data.format_status(data.dataset_status(args.root)))
        return 0
    if args.data_cmd == "check":
        return _cmd_data_check(args)
    path = data.fetch(args.name, dest=args.dest, base_url=args.url_base)
    print(f"{args.name}: {path}")
    return 0


def _cmd_data_check(args) -> int:
    """The user folder read as the notebooks read it; exit 2 on any blocking problem (nothing is written)."""
    if args.kind == "patches":
        from histolean.data.user_patches import check_patches

        report, _ = check_patches(args.path, mpp=args.mpp, patch_um=args.patch_um)
    else:
        from histolean.data.user_nuclei import check_nuclei

        report, _ = check_nuclei(args.path, mpp=args.mpp)
    print(report.format())
    return 0 if report.ok else 2


def _backend_label(text: str) -> str:
    """--backend checked when parsed (imported here: the other commands need no torch)."""
    from histolean.experiments.til_maps.predict import check_backend

    try:
        check_backend(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _cmd_tilmap(args) -> int:
    import warnings

    from histolean.experiments import til_maps

    scheduler = None if args.scheduler == "none" else args.scheduler
    with warnings.catch_warnings():  # flagged slides are reported below, one line each
        warnings.simplefilter("ignore", til_maps.ImplausibleMapWarning)
        results = til_maps.map_slides(args.slides, args.model, args.out, mpp=args.mpp, scheduler=scheduler,
                                      n_workers=args.workers, threads=args.threads, backend=args.backend,
                                      batch_size=args.batch_size, max_patches=args.max_patches,
                                      threshold=args.threshold, force=args.force, allow_weak_model=args.force,
                                      stain=args.stain,
                                      **({} if args.min_auc is None else {"min_auc": args.min_auc}))
    flagged = 0
    for r in results:
        if r["status"] == "failed":
            print(f"failed   {r['name']}: {r['error']}", file=sys.stderr)
            continue
        print(f"{r['status']:<8} {r['name']}: {r['n_positive']}/{r['n_patches']} patches TIL-positive "
              f"({r['fraction_positive']:.1%}) at threshold {r.get('threshold', 0.5):g} on {r.get('backend')} "
              f"-> {r['folder']}")
        if r.get("flag"):
            flagged += 1
            print(f"histolean: warning: {r['name']}: {r['flag']}", file=sys.stderr)
    check = results[0].get("model_check") if results and results[0]["status"] != "failed" else None
    if check and check["verdict"] != til_maps.PAINTED:
        print(f"histolean: warning: {check['reason']}" + (" (mapped anyway: --force)" if check["forced"] else ""),
              file=sys.stderr)
    failed = sum(r["status"] == "failed" for r in results)
    print(f"{len(results) - failed} slide(s) mapped or already complete ({flagged} flagged), {failed} failed")
    return 1 if failed or (args.strict and flagged) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="histolean", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="execute the benchmark notebooks of a profile (resumable)")
    run.add_argument("--profile", default="default", help="smoke | default | paper (params/<profile>.yaml)")
    run.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    run.add_argument("--force", action="store_true", help="re-run benchmarks that are already complete")
    run.add_argument("--data", default=None, help="data root (default: $HISTOLEAN_DATA, else ./data)")
    run.add_argument("--no-report", action="store_true", help="do not rebuild report.html afterwards")
    run.add_argument("--dry-run", action="store_true",
                     help="every notebook with the profile's settings but each loop cut to its first step, into "
                          "outputs/<profile>-dry-run, ending with a table of step times, memory and GPU estimates")
    run.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="run each notebook as a task on this Dask cluster (tcp://host:8786 or a scheduler "
                          "file); outputs/ must be on a path the workers share")
    run.add_argument("--set", action="append", default=[], metavar="BENCHMARK.KEY=VALUE",
                     help="replace one profile setting for this run, VALUE as YAML (repeatable), e.g. "
                          "--set pcam_idc_zoo.pcam_models=[b2] --set streaming_sgd.memory_sizes=[512]")
    run.set_defaults(func=_cmd_run)

    rep = sub.add_parser("report", help="build outputs/<profile>/report.html")
    rep.add_argument("--profile", default="default")
    rep.add_argument("--data", default=None, help="data root the run used (default: $HISTOLEAN_DATA, else ./data)")
    rep.set_defaults(func=_cmd_report)

    dat = sub.add_parser("data", help="datasets: what is there, downloading them, checking your own")
    dsub = dat.add_subparsers(dest="data_cmd", required=True)
    st = dsub.add_parser("status", help="every dataset found, with counts; how to get the missing ones")
    st.add_argument("--root", default=None, help="data root (default: $HISTOLEAN_DATA, else ./data)")
    fe = dsub.add_parser("fetch", help="download a dataset from its official source (checksums, resume)")
    fe.add_argument("name")
    fe.add_argument("--dest", default=None, help="where to put it (default: the data root)")
    fe.add_argument("--url-base", default=None, help="mirror to download from instead of the official URL")
    ch = dsub.add_parser("check", help="check your own folder before a notebook trains on it (exit 2: blocking "
                                       "problems, each with its file and a fix)")
    ch.add_argument("path", help="patches: a folder (<class>/, {train,valid,test}/<class>/) or a CSV "
                                 "path,label[,group][,split]; nuclei: a folder with images/ + masks/ or annotations/")
    ch.add_argument("--kind", required=True, choices=("patches", "nuclei"))
    ch.add_argument("--mpp", type=float, default=None, help="microns per pixel (default: the folder's dataset.json)")
    ch.add_argument("--patch-um", type=float, default=50.0, help="patch side in microns the notebooks use (50)")
    dat.set_defaults(func=_cmd_data)

    til = sub.add_parser("tilmap", help="TIL maps of whole slides with a trained patch classifier (resumable)")
    til.add_argument("slides", nargs="+", metavar="SLIDE_OR_FOLDER", help="slide files, or folders of slides")
    til.add_argument("--model", required=True, metavar="CHECKPOINT", help="a checkpoint written by save_model")
    til.add_argument("--out", required=True, metavar="DIR", help="output folder (one subfolder per slide)")
    til.add_argument("--mpp", type=float, default=None,
                     help="microns per pixel for slides whose file does not record it")
    til.add_argument("--scheduler", default="local", metavar="ADDRESS",
                     help="'local' (a Dask LocalCluster, default), a scheduler address tcp://host:8786, "
                          "or 'none' (this process)")
    til.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    til.add_argument("--threads", type=int, default=None, help="threads per worker (default: cores / workers)")
    til.add_argument("--backend", type=_backend_label, default="auto", metavar="LABEL",
                     help="inference backend: auto (default: the fastest backend whose float32 check passes, "
                          "measured on the first slide's patches and cached under --out) or a label of "
                          "histolean.core.backends: torch, torch_channels_last, torch_bf16, torch_compile, "
                          "onnxruntime, openvino (the CPU's precision), openvino:fp32, openvino:bf16")
    til.add_argument("--batch-size", type=int, default=32)
    til.add_argument("--max-patches", type=int, default=None, help="cap of patches per slide, evenly spread")
    til.add_argument("--threshold", type=float, default=None,
                     help="probability that counts as TIL-positive (default: the checkpoint's decision_threshold, "
                          "from its out-of-fold predictions, else 0.5)")
    til.add_argument("--min-auc", type=float, default=None,
                     help="refuse, before any inference, a model whose out-of-fold AUC (oof_auc in the checkpoint) "
                          "is below this (default: til_maps.checks.DEFAULT_MIN_AUC, 0.75; 0: no floor)")
    til.add_argument("--stain", choices=("none", "macenko"), default="none",
                     help="stain normalisation before the model: macenko (fitted per slide on held-out tissue "
                          "patches, to the checkpoint's stain_reference or the published Macenko reference)")
    til.add_argument("--strict", action="store_true",
                     help="exit 1 when a slide's positive rate is implausible (the map is written and flagged)")
    til.add_argument("--force", action="store_true",
                     help="map slides again even if complete, and map with a model below --min-auc")
    til.set_defaults(func=_cmd_tilmap)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, ConnectionError) as err:
        # Errors of ours already name the file and the fix; no traceback for them (one line per problem).
        for line in str(err).splitlines() or [type(err).__name__]:
            print(f"histolean: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("histolean: interrupted; finished benchmarks are kept, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
