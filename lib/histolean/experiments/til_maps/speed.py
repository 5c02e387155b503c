"""Backends side by side: model-only, reading and end-to-end patches/s of each, in one interleaved timing run
(one core budget for all)."""

from __future__ import annotations

import os
import statistics
import time
from typing import Iterable

import numpy as np

from histolean.data import wsi
from histolean.experiments.til_maps.model import TilModel
from histolean.experiments.til_maps.predict import Predictor, torch_threads
from histolean.experiments.til_maps.slides import lead_in, window

READ = "reader/read"                 # the reader alone, one entry for all backends
READ_PATCHES = 4096                  # reading alone is timed on up to this many patches of the slide


def compare_backends(model: TilModel, slide: wsi.Slide, backends: Iterable[str], *, n_patches: int = 64,
                     batch_size: int = 16, repeats: int = 5, warmup: int = 1, threads: int | None = None,
                     onnx_dir=None, progress: bool = False) -> dict[str, dict]:
    """Model-only, reading-only and end-to-end patches/s of each backend on ``n_patches`` tissue
    patches of ``slide``, timed side by side in one :func:`histolean.core.measure.compare_speed` run
    (reference: the first backend's model-only time).

    Model-only: ``n_patches`` consecutive tissue patches from the middle of the slide (raster order, as
    a whole-slide map reads them), already in memory -> probabilities. End-to-end: the same patches
    read from the slide and resized by the prefetching reader thread while the model runs. Reading: the
    reader alone (strips read as ``slide.reader`` says, resized) over the slide's tissue patches, up to
    ``READ_PATCHES`` (cheap; a window decodes more or fewer tiles per patch than a map does). Every
    timed read starts, untimed, from the tile cache a raster-order map has on arriving at its first
    patch: a fresh cache of the default size holding the tiles of the rows just above
    (:func:`~histolean.experiments.til_maps.slides.lead_in`). Each round decodes again, and a tile
    shared by neighbouring patches once, as in a map.

    One budget for all: with ``threads`` set, the whole process (the model's threads and the reader
    thread) is confined to ``threads`` cores while timing (``measure.cpu_budget``, Linux), so
    end-to-end pays for its reading out of the cores model-only had, as a machine mapping one slide
    per ``threads`` cores does; each backend also gets ``threads`` threads (one: a fair engine
    comparison that a busy shared machine does not distort much). Per backend: ``model_per_s``,
    ``read_per_s`` (the same reader for all), ``end_to_end_per_s``, ``end_to_end_share``
    (model-only / end-to-end time in the same round, median over rounds, with ``end_to_end_share_min``
    and ``_max``), ``reading_bound`` (model / (model + reading) time, the same way: the share when
    reading and the model take turns on the budget), ``ms_per_patch`` (model, reading, end-to-end: where
    the time goes), ``speedup`` (model-only, against the reference, median over rounds, with
    ``speedup_min``/``speedup_max``), ``end_to_end_speedup``, ``label`` and ``precision`` (as
    ``core.backends`` names it), ``check`` (its predictions against eager float32 on the same
    patches), ``first_call_s`` (one call before timing: ONNX session or torch.compile included),
    ``cores`` (the CPU ids timed on; None: not confined), ``reader`` (what decoded the slide's pixels),
    ``n_read_patches`` (how many patches reading alone was timed over) and the 1-minute ``load_average`` after.
    torch's thread count and the process's CPU affinity are restored afterwards.
    """
    from histolean.core import measure

    backends = list(backends)

    def fresh_cache() -> None:  # an unseen slide: nothing decoded yet, the default cache a map reads with
        slide.reset_cache()

    def as_in_a_map(lead: np.ndarray):  # the cache a raster-order map has on arriving at the first patch
        return lambda: (fresh_cache(), wsi.read_patches(whole, lead))

    def read_all() -> None:
        for start in range(0, len(read_grid), batch_size):
            wsi.read_patches(read_grid, np.arange(start, min(start + batch_size, len(read_grid))))

    # consecutive patches, as a whole-slide map reads them (not spread out: neighbours share tiles)
    whole = wsi.patch_grid(slide, patch_um=model.patch_um, size=model.input_size)
    grid = window(whole, n_patches)
    # reading alone is cheap: timed over the slide (up to READ_PATCHES), for the tiles per patch a map decodes
    read_grid = window(whole, max(n_patches, READ_PATCHES))
    images = np.stack([grid.read(i) for i in range(len(grid))])
    calls, setup, first_call, built = {}, {}, {}, {}
    with torch_threads(threads):
        # built and first called outside the budget: OpenVINO reads the CPUs it may use once, when its
        # plugin first compiles, and would keep later models of the process on the budget's cores
        for backend in backends:
            predictor = built[backend] = Predictor(model, backend, threads=threads, onnx_dir=onnx_dir)
            t0 = time.perf_counter()
            predictor(images[:batch_size])
            first_call[backend] = time.perf_counter() - t0
            calls[f"{backend}/model"] = (lambda p=predictor: [p(images[i:i + batch_size])
                                                              for i in range(0, len(images), batch_size)])
            calls[f"{backend}/end_to_end"] = (lambda p=predictor: wsi.predict_slide(grid, p, batch_size, prefetch=2))
            setup[f"{backend}/end_to_end"] = as_in_a_map(lead_in(whole, grid))
        calls[READ] = read_all
        setup[READ] = as_in_a_map(lead_in(whole, read_grid))
        with measure.cpu_budget(threads) as cores:
            timing = measure.compare_speed(calls, reference=f"{backends[0]}/model", repeats=repeats,
                                           warmup=warmup, items_per_call=len(grid), setup=setup,
                                           progress=progress)
            # inside too: an OpenVINO model binds its calling thread to the cores it last ran on
            checks = _checks(model, built, images)
    fresh_cache()
    ref_e2e = timing[f"{backends[0]}/end_to_end"]["median_s"]
    read = timing[READ]
    reading_ms = 1e3 * read["median_s"] / len(read_grid)   # timed over read_grid, not the window
    read_s = [t * len(grid) / len(read_grid) for t in read["times_s"]]   # reading the window's patch count
    out = {}
    for backend in backends:
        m, e = timing[f"{backend}/model"], timing[f"{backend}/end_to_end"]
        model_ms = 1e3 * m["median_s"] / len(grid)
        # paired by round (the machine's speed drifts between rounds, not within one)
        shares = [mt / et for mt, et in zip(m["times_s"], e["times_s"])]
        bounds = [mt / (mt + rt) for mt, rt in zip(m["times_s"], read_s)]
        out[backend] = {"label": built[backend].label, "precision": built[backend].precision,
                        "check": checks[backend], "model_per_s": m["per_s"], "read_per_s": 1e3 / reading_ms,
                        "end_to_end_per_s": e["per_s"], "end_to_end_share": statistics.median(shares),
                        "end_to_end_share_min": min(shares), "end_to_end_share_max": max(shares),
                        "reading_bound": statistics.median(bounds),
                        "ms_per_patch": {"model": model_ms, "reading": reading_ms,
                                         "end_to_end": 1e3 * e["median_s"] / len(grid)},
                        "speedup": m["speedup"], "speedup_min": m["speedup_min"], "speedup_max": m["speedup_max"],
                        "end_to_end_speedup": ref_e2e / e["median_s"], "first_call_s": first_call[backend],
                        "n_patches": len(grid), "n_read_patches": len(read_grid), "batch_size": batch_size,
                        "repeats": repeats, "threads": threads,
                        "cores": cores, "reader": slide.reader, "load_average": os.getloadavg()[0],
                        "reference": backends[0],
                        "timing": {"model": m, "end_to_end": e, "reading": read}}
    return out


def _checks(model: TilModel, built: dict, images: np.ndarray) -> dict[str, dict]:
    """Each backend's float32 check on the timed patches (one eager float32 reference for all)."""
    from histolean.core import backends as core_backends

    kwargs = dict(input_size=model.input_size, mean=model.mean, std=model.std)
    reference = core_backends.make_predictor(model.net, "torch", "fp32", **kwargs)(images)
    return {name: core_backends.check_against_fp32(model.net, p.engine, p.precision, images, reference=reference,
                                                   **kwargs)
            for name, p in built.items()}
