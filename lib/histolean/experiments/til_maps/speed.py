"""Backends side by side: model-only and end-to-end patches/s of each, in one interleaved timing run."""

from __future__ import annotations

import os
import time
from typing import Iterable

import numpy as np

from histolean.data import wsi
from histolean.experiments.til_maps.model import TilModel
from histolean.experiments.til_maps.predict import Predictor, torch_threads
from histolean.experiments.til_maps.slides import window


def compare_backends(model: TilModel, slide: wsi.Slide, backends: Iterable[str], *, n_patches: int = 64,
                     batch_size: int = 16, repeats: int = 5, warmup: int = 1, threads: int | None = None,
                     onnx_dir=None, progress: bool = False) -> dict[str, dict]:
    """Model-only and end-to-end patches/s of each backend on ``n_patches`` tissue patches of
    ``slide``, timed side by side in one :func:`histolean.core.measure.compare_speed` run (reference:
    the first backend).

    The patches are ``n_patches`` consecutive tissue patches from the middle of the slide (raster
    order, as a whole-slide map reads them). Model-only: patches already in memory -> probabilities.
    End-to-end: the same patches read from the slide (OpenSlide's tile cache off, so every round decodes
    again) and resized by the prefetching reader while the model runs. Per backend:
    ``model_per_s``, ``end_to_end_per_s``,
    ``end_to_end_share`` (end-to-end / model-only), ``speedup`` (model-only, against the reference,
    median over rounds, with ``speedup_min``/``speedup_max``), ``end_to_end_speedup`` and
    ``label`` and ``precision`` (the backend as ``core.backends`` names it), ``check`` (its predictions
    against eager float32 on the same patches: max probability difference, agreement, passed),
    ``first_call_s`` (one call before timing: ONNX session or torch.compile included), and the
    1-minute ``load_average`` of the machine after timing. ``threads`` is given to every backend
    for the duration of the timing (one thread: a fair engine comparison that a busy shared machine
    does not distort much; torch's OpenMP threads slow down several-fold when another process holds
    one of the cores); torch's thread count is restored afterwards.
    """
    import openslide

    from histolean.core import measure

    backends = list(backends)
    slide._osr.set_cache(openslide.OpenSlideCache(0))  # timed reads must decode, as on an unseen slide
    # consecutive patches, as a whole-slide map reads them (not spread out: neighbours share tiles)
    grid = window(wsi.patch_grid(slide, patch_um=model.patch_um, size=model.input_size), n_patches)
    images = np.stack([grid.read(i) for i in range(len(grid))])
    calls, first_call, built = {}, {}, {}
    with torch_threads(threads):
        for backend in backends:
            predictor = built[backend] = Predictor(model, backend, threads=threads, onnx_dir=onnx_dir)
            t0 = time.perf_counter()
            predictor(images[:batch_size])
            first_call[backend] = time.perf_counter() - t0
            calls[f"{backend}/model"] = (lambda p=predictor: [p(images[i:i + batch_size])
                                                              for i in range(0, len(images), batch_size)])
            calls[f"{backend}/end_to_end"] = (lambda p=predictor: wsi.predict_slide(grid, p, batch_size, prefetch=2))
        timing = measure.compare_speed(calls, reference=f"{backends[0]}/model", repeats=repeats, warmup=warmup,
                                       items_per_call=len(grid), progress=progress)
    checks = _checks(model, built, images)
    ref_e2e = timing[f"{backends[0]}/end_to_end"]["median_s"]
    out = {}
    for backend in backends:
        m, e = timing[f"{backend}/model"], timing[f"{backend}/end_to_end"]
        out[backend] = {"label": built[backend].label, "precision": built[backend].precision,
                        "check": checks[backend], "model_per_s": m["per_s"], "end_to_end_per_s": e["per_s"],
                        "end_to_end_share": e["per_s"] / m["per_s"], "speedup": m["speedup"],
                        "speedup_min": m["speedup_min"], "speedup_max": m["speedup_max"],
                        "end_to_end_speedup": ref_e2e / e["median_s"], "first_call_s": first_call[backend],
                        "n_patches": len(grid), "batch_size": batch_size, "repeats": repeats, "threads": threads,
                        "load_average": os.getloadavg()[0],
                        "reference": backends[0], "timing": {"model": m, "end_to_end": e}}
    return out


def _checks(model: TilModel, built: dict, images: np.ndarray) -> dict[str, dict]:
    """Each backend's float32 check on the timed patches (one eager float32 reference for all)."""
    from histolean.core import backends as core_backends

    kwargs = dict(input_size=model.input_size, mean=model.mean, std=model.std)
    reference = core_backends.make_predictor(model.net, "torch", "fp32", **kwargs)(images)
    return {name: core_backends.check_against_fp32(model.net, p.engine, p.precision, images, reference=reference,
                                                   **kwargs)
            for name, p in built.items()}
