"""Mapping slides: one in this process (:func:`map_slide`), or many on a Dask cluster (:func:`map_slides`).

Per slide: tissue mask -> grid of ``patch_um`` squares (``histolean.data.wsi``) -> each patch read
from the pyramid level nearest the model's resolution, resized to its input size (a reader
thread keeps batches ahead of the model) -> TIL probability -> the files of
:mod:`~histolean.experiments.til_maps.outputs`. A slide finished with the current settings is
skipped, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from histolean.core import backends
from histolean.data import wsi
from histolean.experiments.til_maps import outputs
from histolean.experiments.til_maps.model import TilModel, load_til_model
from histolean.experiments.til_maps.predict import (AUTO, DEFAULT_BACKEND, Predictor, check_backend, choose,
                                                    inference_record, predictor_for, torch_threads)
from histolean.experiments.til_maps.slides import find_slides, open_slide, slide_settings, subsample
from histolean.util import cluster
from histolean.util.errors import DataError


def map_slide(slide_path: str | os.PathLike, model: TilModel | str | os.PathLike, out_dir: str | os.PathLike, *,
              mpp: float | dict | None = None, backend: str = DEFAULT_BACKEND, batch_size: int = 32,
              prefetch: int = 2, max_patches: int | None = None, threshold: float = 0.5,
              threads: int | None = None, predictor: Predictor | None = None, choice: dict | None = None,
              force: bool = False, progress: bool = True) -> dict:
    """Map one slide into ``out_dir/<slide stem>/``; return its summary (``status`` done or skipped).

    ``max_patches`` caps the patches predicted (evenly spread; the others show pale on the map).
    ``backend``: a label of ``core.backends`` or ``auto`` (chosen on this slide's patches, cached
    under ``out_dir/.backend``); ``choice``: a :func:`~.predict.choose` result made already.
    ``threads``: torch's thread count while this slide is predicted (restored after) and ONNX
    Runtime's session threads. Errors (no MPP, unreadable file, bad checkpoint) are raised naming the file.
    """
    slide_path, out_dir = Path(slide_path), Path(out_dir)
    model = model if isinstance(model, TilModel) else load_til_model(model)
    folder = out_dir / slide_path.stem
    t0 = time.perf_counter()
    with open_slide(slide_path, mpp) as slide:
        settings = slide_settings(model, slide, max_patches, threshold)
        key = outputs.completion_key(settings)
        done = None if force else outputs.read_complete(folder, key)
        if done is not None:
            return {**done, "status": "skipped"}
        outputs.forget_complete(folder)  # before any file changes
        tissue_grid = wsi.patch_grid(slide, patch_um=model.patch_um, size=model.input_size)
        grid = subsample(tissue_grid, max_patches)
        if predictor is None:
            if choice is None:
                choice = choose(model, held_out_patches(slide, model), backend=backend, threads=threads,
                                cache_dir=out_dir / ".backend", onnx_dir=out_dir / ".onnx")
            predictor = predictor_for(model, choice, threads=threads, onnx_dir=out_dir / ".onnx")
        inference = predictor.inference() if hasattr(predictor, "inference") else inference_record(
            getattr(predictor, "label", "custom"), getattr(predictor, "precision", "unknown"), None)
        t_predict = time.perf_counter()
        with torch_threads(threads):
            probs = _predict(grid, predictor, batch_size, prefetch, progress, slide_path.name)
        predict_s = time.perf_counter() - t_predict
        positive = probs >= threshold
        outputs.write_table(folder / "patches.parquet", grid, probs, positive, model, slide_path, inference)
        outputs.write_geojson(folder / "til_positive.geojson", grid, probs, positive, model)
        outputs.write_map_image(folder / "map.png", tissue_grid, grid, positive)
        summary = {
            "slide": str(slide_path), "name": slide_path.name, "folder": str(folder), "settings": settings,
            "model": model.name, **inference, "mpp": slide.mpp, "mpp_source": slide.mpp_source,
            "dimensions": list(slide.dimensions), "patch_px": grid.patch_px, "grid_shape": list(grid.grid_shape),
            "n_tissue_patches": len(tissue_grid), "n_patches": len(grid), "n_positive": int(positive.sum()),
            "fraction_positive": float(positive.mean()) if len(grid) else float("nan"),
            "predict_s": predict_s, "seconds": time.perf_counter() - t0,
            "patches_per_s": len(grid) / predict_s if predict_s > 0 else float("nan"),
        }
    outputs.mark_complete(folder, key, summary)  # last: the slide is finished
    return {**summary, "status": "done"}


def held_out_patches(slide: wsi.Slide, model: TilModel, n: int = 64) -> np.ndarray:
    """``n`` tissue patches of ``slide`` spread evenly over it: the real patches a backend is checked
    and timed on before it maps (never used in training)."""
    grid = subsample(wsi.patch_grid(slide, patch_um=model.patch_um, size=model.input_size), n)
    if not len(grid):
        raise DataError(f"{slide.path}: no tissue patches to check a backend on")
    return np.stack([grid.read(i) for i in range(len(grid))])


def _predict(grid: wsi.PatchGrid, predict: Callable, batch_size: int, prefetch: int, progress: bool,
             name: str) -> np.ndarray:
    from tqdm.auto import tqdm

    with tqdm(total=len(grid), desc=name, unit="patch", disable=not progress, leave=False) as bar:
        def step(images: np.ndarray) -> np.ndarray:
            out = predict(images)
            bar.update(len(images))
            return out

        return wsi.predict_slide(grid, step, batch_size=batch_size, prefetch=prefetch)


def _failed(slide_path: str, error: str) -> dict:
    return {"slide": slide_path, "name": Path(slide_path).name, "status": "failed", "error": error}


_PREDICTORS: dict = {}  # per worker process: a model is loaded and exported once, not once per slide


def _map_one(slide_path: str, model_path: str, out_dir: str, choice: dict, threads: int | None, **kwargs) -> dict:
    """One slide, never raising for bad input: a failure is a row naming the slide and the problem.
    The worker's entry point; ``threads`` is torch's thread count while the slide is mapped."""
    try:
        stat = os.stat(model_path)
        key = (model_path, stat.st_mtime_ns, stat.st_size, choice["label"], threads)  # a rewritten checkpoint reloads
        if key not in _PREDICTORS:
            model = load_til_model(model_path)
            _PREDICTORS[key] = predictor_for(model, choice, threads=threads, onnx_dir=Path(out_dir) / ".onnx")
        predictor = _PREDICTORS[key]
        return map_slide(slide_path, predictor.model, out_dir, predictor=predictor, threads=threads, **kwargs)
    except (DataError, ValueError, OSError, RuntimeError) as err:
        return _failed(slide_path, f"{type(err).__name__}: {err}")


def _choose_for_slides(paths: list[str], model: TilModel, backend: str, threads: int | None, mpp,
                       out_dir: Path) -> dict:
    """The backend choice for a slide set, on the first slide that opens; an explicit label where
    none does (the slides' own rows then say why they failed)."""
    for path in paths if backend == AUTO else paths[:1]:
        try:
            with open_slide(path, mpp) as slide:
                patches = held_out_patches(slide, model)
        except (DataError, ValueError, OSError):
            continue
        return choose(model, patches, backend=backend, threads=threads, cache_dir=out_dir / ".backend",
                      onnx_dir=out_dir / ".onnx")
    label = "onnxruntime" if backend == AUTO else backend
    backend_name, precision = backends.parse_label(label)
    return {"label": label, "backend": backend_name, "precision": backends.resolve_precision(backend_name, precision),
            "checks": {}, "chosen_by": "no readable slide"}


@contextlib.contextmanager
def _dask_client(scheduler, n_workers: int) -> Iterator:
    """A client for ``scheduler`` ("local": a LocalCluster of ``n_workers`` started here and closed after)."""
    if scheduler == "local":
        with cluster.local_cluster(n_workers) as local, cluster.client(local.scheduler_address) as client:
            yield client
    else:
        with cluster.client(scheduler) as client:
            yield client


def map_slides(inputs: Iterable[str | os.PathLike], model_path: str | os.PathLike, out_dir: str | os.PathLike, *,
               scheduler="local", n_workers: int = 2, threads: int | None = None,
               backend: str = DEFAULT_BACKEND, progress: bool = True, **kwargs) -> list[dict]:
    """Map every slide (files or folders) with the checkpoint at ``model_path``; one summary per slide,
    in input order, ``status`` done / skipped / failed (with ``error``). A failed slide never stops
    the others.

    ``scheduler``: ``"local"`` starts a Dask LocalCluster of ``n_workers`` processes, an address
    (``tcp://host:8786``), a scheduler file or a ``distributed.Client`` uses a running cluster, None
    maps in this process. ``threads`` per worker (default: the cores shared out among the local
    workers). ``backend``: a label or ``auto``, chosen here once, before any worker starts, on held-out
    patches of the first readable slide (cached under ``out_dir/.backend``): every slide is mapped on it.
    Other keywords go to :func:`map_slide`.
    """
    from tqdm.auto import tqdm

    check_backend(backend)
    paths = [str(p) for p in find_slides(inputs)]
    out_dir = Path(out_dir)
    model = load_til_model(model_path)  # a bad checkpoint stops here, before any slide is touched
    if scheduler is not None:
        from distributed import Client

        if scheduler == "local" or isinstance(scheduler, Client):  # cores known: share them out
            threads = threads or max(1, (os.cpu_count() or 1) // n_workers)
    # chosen (and exported) once here, not in every worker; the workers are as many as the timing assumed
    choice = _choose_for_slides(paths, model, backend, threads, kwargs.get("mpp"), out_dir)
    task = functools.partial(_map_one, model_path=str(model_path), out_dir=str(out_dir), choice=choice,
                             progress=progress, **kwargs)
    with tqdm(total=len(paths), desc="slides", unit="slide", disable=not progress) as overall:
        if scheduler is None:
            results = []
            for path in paths:
                results.append(task(path, threads=threads))
                overall.update(1)
            return results
        with _dask_client(scheduler, n_workers) as client:
            outcomes = cluster.map_variants(functools.partial(task, threads=threads), paths, client,
                                            return_exceptions=True, on_done=lambda *_: overall.update(1))
    # an exception here: the worker died (e.g. a crash inside a slide library)
    return [_failed(path, f"the Dask task failed ({type(out).__name__}: {out})") if isinstance(out, BaseException)
            else out for path, out in zip(paths, outcomes)]
