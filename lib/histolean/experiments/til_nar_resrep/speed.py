"""The TIL variants' speed as deployed: every variant of one architecture on the backend the slide maps
would use (chosen by measurement, checked against float32 on held-out windows), beside eager float32, in
one interleaved run; batch-1 latency in eager float32.

On OpenVINO and ONNX Runtime every network runs as its exported graph, whose compiler fuses BatchNorm
into the convolutions: IR, NAR and (already folded by their conversion) ResRep networks are then timed
in the same form. Eager float32 keeps BatchNorm as a layer for all of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histolean.core import backends, export, measure
from histolean.data.common import resize_images

from .runner import MEAN, STD

AUTO = "auto"
CHECK_WINDOWS = 64      # held-out windows the backend's float32 check runs on


def speed_form(label: str) -> str:
    """What a row's speed columns timed: the backend and whether BatchNorm was fused."""
    if label.split(":")[0] in ("openvino", "onnxruntime"):
        return f"{label}: exported graph, BatchNorm fused into the convolutions by its compiler"
    return f"{label}: eager PyTorch modules (BatchNorm as a layer; converted ResRep networks have it folded)"


def deployed_speed(group: dict, reference: str, check_windows: np.ndarray, *, backend: str = AUTO,
                   batch_size: int, repeats: int, cache_dir, seed: int = 0) -> dict[str, dict]:
    """Result-row speed fields per variant id of ``group`` (variant id -> ``VariantResult``, one
    architecture): ``speedup`` (+ ``_min``/``_max``: paired ratios over interleaved rounds against
    ``reference``) and ``throughput_per_s`` on the deployment backend, the same in eager float32
    (``*_eager_fp32``), batch-1 eager ``latency_ms``, and ``backend``, ``precision``, ``backend_chosen_by``,
    ``backend_check``, ``speed_form``. ``backend``: "auto" (the fastest label whose check on
    ``check_windows``, uint8 images, passes; cached in ``cache_dir`` per network and machine) or a label."""
    cache_dir = Path(cache_dir)
    original = group[reference]
    net, size = original.net.cpu().eval(), original.variant.spec.input_size
    windows = resize_images(np.asarray(check_windows)[:CHECK_WINDOWS], size)   # at the network's input
    choice = backends.choose_backend(
        net, windows[:batch_size], check_batch=windows, cache_dir=cache_dir,
        key=f"til_nar_resrep-{reference}-{export.network_fingerprint(net, size)}", input_size=size, mean=MEAN,
        std=STD, repeats=repeats, override=None if backend == AUTO else backend, export_dir=cache_dir / "onnx")
    nets = {vid: (r.net.cpu().eval(), r.variant.spec.input_size) for vid, r in group.items()}
    timed = backends.time_on_backends(nets, choice["label"], batch_size=batch_size, repeats=repeats,
                                      reference=reference, export_dir=cache_dir / "onnx", seed=seed)
    latency = measure.throughput({vid: n for vid, (n, _) in nets.items()}, reference=reference, batch_size=1,
                                 repeats=repeats, input_sizes={vid: s for vid, (_, s) in nets.items()}, seed=seed)
    out = {}
    for vid, t in timed.items():
        out[vid] = {"throughput_per_s": t["per_s"], "throughput_per_s_min": t["per_s_min"],
                    "throughput_per_s_max": t["per_s_max"], "speedup": t["speedup"],
                    "speedup_min": t["speedup_min"], "speedup_max": t["speedup_max"],
                    "throughput_per_s_eager_fp32": t["per_s_eager_fp32"], "speedup_eager_fp32": t["speedup_eager_fp32"],
                    "speedup_eager_fp32_min": t["speedup_eager_fp32_min"],
                    "speedup_eager_fp32_max": t["speedup_eager_fp32_max"],
                    "latency_ms": latency[vid]["median_s"] * 1e3, "latency_ms_min": latency[vid]["min_s"] * 1e3,
                    "latency_ms_max": latency[vid]["max_s"] * 1e3, "latency_speedup": latency[vid]["speedup"],
                    "speed_batch": batch_size, "speed_repeats": repeats, "speed_device": "cpu",
                    "backend": choice["label"], "precision": choice["precision"],
                    "backend_chosen_by": choice["chosen_by"], "backend_check": choice["checks"].get(choice["label"]),
                    "speed_form": speed_form(choice["label"])}
    return out
