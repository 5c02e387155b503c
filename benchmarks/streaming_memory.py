"""Peak memory and time of one training step, streaming vs conventional (Pinckaers et al. 2020,
the constant-tile and constant-input figures), with the whole process's peak and the input's share.

The sweep is ``histolean.methods.streaming.memory.memory_sweep`` (notebook 04 runs the same one),
the rows ``histolean.experiments.streaming_sgd.memory_row``'s. Every configuration runs in a fresh
process (``histolean.core.measure.measure_isolated``): the ImageNette network of the paper's Table 1
(channels reduced so that a 8192^2 step fits in minutes on a laptop CPU), all five conv blocks
streamed, global max pool + linear head, one SGD step on a uniform-noise image, one CPU thread by
default (on a shared machine OpenMP barriers under oversubscription would otherwise dominate
small-tile steps). Conventional steps run only while the peak projected from the largest one that
ran (scaled by the pixels) stays under ``--memory-cap-gib``;
a watchdog kills any process that crosses the cap anyway. Each row has the step's own peak
(``step_peak_mib``) and the whole process's (``process_peak_mib``: libraries, model, the input image
and the step), the input's resident size and share. ``--offdevice-sizes`` repeats sizes with the
input in a memory-mapped file read crop by crop; ``--large-size`` (default 16384) trains one
step from such a file, next to the conventional step's projected peak. Rows go to
``<output-dir>/results/streaming_memory.jsonl``.

    .venv/bin/python benchmarks/streaming_memory.py --output-dir outputs/default --profile default
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import torch

from histolean import streaming
from histolean.core import measure
from histolean.experiments import streaming_sgd
from histolean.study.records import Recorder

GIB = 2 ** 30
PEER = "peers:lightstream_training_step"  # benchmarks/peers.py


def lightstream_status(device: str) -> str:
    """Why lightstream cannot be measured here, or '' when it can."""
    if importlib.util.find_spec("lightstream") is None:
        return ("not installed: `pip install -e '.[bench]'` adds lightstream 1.0.7 and lightning "
                "(lightstream declares only torch, but `import lightstream` imports lightning)")
    try:
        import lightstream  # noqa: F401
    except Exception as err:  # noqa: BLE001
        return f"installed but does not import: {type(err).__name__}: {err}"
    if not device.startswith("cuda"):
        # lightstream 1.0.7 core/scnn/scnn.py moves the network to CUDA unconditionally after gathering
        # its tile statistics (`self.stream_module.cuda()`), so it cannot run on a CPU-only machine.
        return "needs CUDA: lightstream 1.0.7 moves the streamed network to the GPU unconditionally"
    return ""


def _record(rec: Recorder, result: dict, args) -> None:
    rec.add(**streaming_sgd.memory_row(result, args.channels, threads=args.threads))
    print(streaming_sgd.describe_memory_result(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--tile", type=int, default=1024, help="tile of the constant-tile sweep")
    ap.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--tiles-image", type=int, default=2048, help="image of the constant-input sweep")
    ap.add_argument("--channels", type=int, nargs=5, default=[4, 8, 16, 32, 64])
    ap.add_argument("--memory-cap-gib", type=float, default=6.0)
    ap.add_argument("--repeats", type=int, default=1, help="steps per configuration (the first is measured for memory)")
    ap.add_argument("--timeout-s", type=float, default=900)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per measured process (0: torch default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--input-on", default="device", choices=["device", "cpu", "memmap"],
                    help="where the sweeps' input lives (cpu: a CPU tensor while the trunk runs on --device)")
    ap.add_argument("--offdevice-sizes", type=int, nargs="*", default=[4096],
                    help="sizes repeated with the input in a memory-mapped file read crop by crop")
    ap.add_argument("--large-size", type=int, default=16384,
                    help="one memmap-input step at this size (zero-gradient tiles skipped); 0: none")
    args = ap.parse_args(argv)

    rec = Recorder("streaming_memory", args.output_dir, profile=args.profile)
    cap = int(args.memory_cap_gib * GIB)
    calib = measure.measure_isolated("histolean.core.measure:calibration_step", {"megabytes": 256})
    rec.add(dataset="none", data_kind="none", model="calibration_256MiB_tensor", method="calibration",
            setting={"true_peak_mib": 256}, metrics={"peak_mib": calib.get("peak_mib")},
            status=calib["status"], memory_method=calib.get("memory_method"))
    print(f"calibration: a 256 MiB tensor measures {calib.get('peak_mib', float('nan')):.1f} MiB "
          f"({calib.get('memory_method')})", flush=True)

    kw = {"channels": args.channels, "device": args.device}
    streaming.memory.memory_sweep(
        channels=args.channels, sizes=args.sizes, tile=args.tile, tiles=args.tiles, tiles_image=args.tiles_image,
        offdevice_sizes=args.offdevice_sizes, large_size=args.large_size, input_on=args.input_on,
        device=args.device, threads=args.threads or None, memory_cap_bytes=cap, timeout_s=args.timeout_s,
        large_timeout_s=args.timeout_s, repeats=args.repeats, on_result=lambda r: _record(rec, r, args))

    why = lightstream_status(args.device)
    if why:
        rec.add(dataset="none", data_kind="none", model="lightstream==1.0.7", method="lightstream",
                setting={}, metrics={}, status="unavailable", error=why)
        print(f"lightstream: {why}")
    else:  # the peer on the same network, images and tile, in fresh processes too
        sys.path.insert(0, str(Path(__file__).parent))
        os.environ["PYTHONPATH"] = str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", "")
        for size in sorted(args.sizes):
            res = measure.measure_isolated(PEER, {"image_size": size, "tile_size": args.tile, **kw},
                                         repeats=args.repeats, timeout_s=args.timeout_s, memory_limit_bytes=cap,
                                         device=args.device, threads=args.threads or None)
            res = {**res, "sweep": "constant_tile", "method": "lightstream", "image_size": size,
                   "tile_size": args.tile, "input_on": "device", "step_peak_mib": res.get("peak_mib"),
                   "process_peak_mib": res.get("process_peak_rss_mib"),
                   "input_mib": streaming.memory.input_mib(size, "device")}
            if res["status"] == "ok":
                res["input_share"] = res["input_mib"] / res["process_peak_mib"]
            _record(rec, res, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
