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
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from histolean.core import backends
from histolean.data import wsi
from histolean.experiments.til_maps import checks, outputs
from histolean.experiments.til_maps import stain as stains
from histolean.experiments.til_maps.model import TilModel, load_til_model
from histolean.experiments.til_maps.predict import (AUTO, DEFAULT_BACKEND, Predictor, check_backend, choose,
                                                    inference_record, predictor_for, torch_threads)
from histolean.experiments.til_maps.slides import find_slides, open_slide, slide_settings, subsample
from histolean.util import cluster
from histolean.util.errors import DataError


def map_slide(slide_path: str | os.PathLike, model: TilModel | str | os.PathLike, out_dir: str | os.PathLike, *,
              mpp: float | dict | None = None, backend: str = DEFAULT_BACKEND, batch_size: int = 32,
              prefetch: int = 2, max_patches: int | None = None, threshold: float | None = None,
              threads: int | None = None, predictor: Predictor | None = None, choice: dict | None = None,
              force: bool = False, progress: bool = True, min_auc: float = checks.DEFAULT_MIN_AUC,
              allow_weak_model: bool = False, stain: str = "none") -> dict:
    """Map one slide into ``out_dir/<slide stem>/``; return its summary (``status`` done or skipped).

    ``threshold``: the probability that counts as TIL-positive (default: the checkpoint's
    ``decision_threshold``, else 0.5). A model whose out-of-fold AUC is below ``min_auc`` is refused
    (ValueError) unless ``allow_weak_model``. A slide whose positive rate is implausible is written
    but flagged (``flag`` in the summary, the files and a warning).
    ``max_patches`` caps the patches predicted (evenly spread; the others show pale on the map).
    ``backend``: a label of ``core.backends`` or ``auto`` (chosen on this slide's patches, cached
    under ``out_dir/.backend``); ``choice``: a :func:`~.predict.choose` result made already.
    ``threads``: torch's thread count while this slide is predicted (restored after) and ONNX
    Runtime's session threads. Errors (no MPP, unreadable file, bad checkpoint) are raised naming the file.
    ``stain``: "none", or "macenko" (the slide's stain, fitted on its held-out patches, normalised to
    the checkpoint's ``stain_reference`` or the published Macenko reference before the model).
    Every file is written into a hidden folder renamed into place at the end (:func:`.outputs.publish`).
    """
    if stain not in STAINS:
        raise ValueError(f"--stain must be one of {', '.join(STAINS)}, got {stain!r}")
    problems = checks.check_settings(mpp=mpp, threshold=threshold, max_patches=max_patches, batch_size=batch_size,
                                     threads=threads, min_auc=min_auc)
    if problems:
        raise ValueError("; ".join(problems))
    slide_path, out_dir = Path(slide_path), Path(out_dir)
    model = model if isinstance(model, TilModel) else load_til_model(model)
    model_check = checked_model(model, min_auc, allow_weak_model)
    if threshold is None:
        threshold, threshold_source = model_check["decision_threshold"], model_check["threshold_source"]
    else:
        threshold_source = "argument"
    folder = out_dir / slide_path.stem
    t0 = time.perf_counter()
    with open_slide(slide_path, mpp) as slide:
        if predictor is None and choice is None and backend == AUTO:  # the backend is part of the key
            choice = choose(model, held_out_patches(slide, model), backend=backend, threads=threads,
                            cache_dir=out_dir / ".backend", onnx_dir=out_dir / ".onnx")
        settings = {**slide_settings(model, slide, max_patches, threshold), **_backend_key(predictor, choice, backend),
                    "stain": stain}
        key = outputs.completion_key(settings)
        done = None if force else outputs.read_complete(folder, key)
        if done is not None:
            return {**done, "status": "skipped"}
        staging = outputs.start_staging(folder)  # the old record goes before any work
        tissue_grid = wsi.patch_grid(slide, patch_um=model.patch_um, size=model.input_size)
        grid = subsample(tissue_grid, max_patches)
        if predictor is None:
            if choice is None:
                choice = choose(model, held_out_patches(slide, model), backend=backend, threads=threads,
                                cache_dir=out_dir / ".backend", onnx_dir=out_dir / ".onnx")
            predictor = predictor_for(model, choice, threads=threads, onnx_dir=out_dir / ".onnx")
        inference = predictor.inference() if hasattr(predictor, "inference") else inference_record(
            getattr(predictor, "label", "custom"), getattr(predictor, "precision", "unknown"), None)
        predict, stain_record = _with_stain(predictor, stain, slide, model)
        t_predict = time.perf_counter()
        with torch_threads(threads):
            probs = _predict(grid, predict, batch_size, prefetch, progress, slide_path.name)
        predict_s = time.perf_counter() - t_predict
        positive = probs >= threshold
        plausible = checks.plausibility(int(positive.sum()), len(grid))
        if plausible["flag"]:
            checks.warn_implausible(slide_path.name, plausible["flag"])
        extra = {"threshold": threshold, "threshold_source": threshold_source, "stain": stain_record,
                 "model_check": model_check,
                 "plausibility": plausible, "flag": plausible["flag"]}
        outputs.write_table(staging / "patches.parquet", grid, probs, positive, model, slide_path, inference, extra)
        outputs.write_geojson(staging / "patches.geojson", outputs.geojson(grid, probs, positive, model, extra))
        outputs.write_geojson(staging / "til_regions.geojson",
                              outputs.regions_geojson(grid, probs, positive, model, extra))
        outputs.write_map_image(staging / "map.png", tissue_grid, grid, positive, flag=plausible["flag"])
        summary = {
            "slide": str(slide_path), "name": slide_path.name, "folder": str(folder), "settings": settings,
            "model": model.name, **inference, **extra, "mpp": slide.mpp, "mpp_source": slide.mpp_source,
            "dimensions": list(slide.dimensions), "patch_px": grid.patch_px, "grid_shape": list(grid.grid_shape),
            "n_tissue_patches": len(tissue_grid), "n_patches": len(grid), "n_positive": int(positive.sum()),
            "fraction_positive": float(positive.mean()) if len(grid) else float("nan"),
            "predict_s": predict_s, "seconds": time.perf_counter() - t0,
            "patches_per_s": len(grid) / predict_s if predict_s > 0 else float("nan"),
        }
    outputs.mark_complete(staging, key, summary)  # last: the slide is finished
    outputs.publish(staging, folder)
    return {**summary, "status": "done"}


STAINS = ("none", "macenko")


def _with_stain(predictor: Callable, stain: str, slide: wsi.Slide, model: TilModel) -> tuple[Callable, dict]:
    """The predictor, with the slide's patches stain-normalised first when ``stain`` is "macenko"; and
    what the rows record about it."""
    if stain == "none":
        return predictor, {"method": "none"}
    reference = model.info.get("stain_reference")
    normalise = stains.Normaliser(stains.fit(held_out_patches(slide, model)), reference)
    record = {"method": stain, "reference": "checkpoint stain_reference" if reference
              else "published Macenko reference", "slide_he": normalise.he.round(4).tolist(),
              "slide_max_c": normalise.max_c.round(4).tolist()}
    return (lambda images: predictor(normalise(images))), record


def checked_model(model: TilModel, min_auc: float = checks.DEFAULT_MIN_AUC, allow_weak_model: bool = False) -> dict:
    """:func:`.checks.model_check` of ``model``; a refused model raises ValueError (one line) unless
    ``allow_weak_model`` (then ``forced`` is True in the record)."""
    check = checks.model_check(model.name, model.info, min_auc, force=allow_weak_model)
    if check["verdict"] == checks.REFUSED and not allow_weak_model:
        raise ValueError(f"model checkpoint {model.path}: {check['reason']}; map anyway with --force "
                         f"(allow_weak_model=True) or lower --min-auc")
    return check


def _backend_key(predictor, choice: dict | None, backend: str) -> dict:
    """The backend label and precision that make the probabilities (part of a finished slide's key)."""
    if predictor is not None:
        return {"backend": getattr(predictor, "label", "custom"),
                "precision": getattr(predictor, "precision", "unknown")}
    if choice is not None:
        return {"backend": choice["label"], "precision": choice["precision"]}
    name, precision = backends.parse_label(backend)
    return {"backend": backends.label(name, precision), "precision": backends.resolve_precision(name, precision)}


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


def _why(slide_path: str, err: BaseException) -> str:
    """One line: the error, naming the slide when the message does not already."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if str(slide_path) in text else f"{slide_path}: {type(err).__name__}: {text}"


_PREDICTORS: dict = {}  # per worker process: a model is loaded and exported once, not once per slide


def _map_one(slide_path: str, model_path: str, out_dir: str, choice: dict, threads: int | None, **kwargs) -> dict:
    """One slide, never raising: any failure (a bad file, a tile that does not decode, a slide library's
    own error) is a row naming the slide and the problem, so the other slides go on in every scheduler
    mode. The worker's entry point; ``threads`` is torch's thread count while the slide is mapped."""
    try:
        stat = os.stat(model_path)
        key = (model_path, stat.st_mtime_ns, stat.st_size, choice["label"], threads)  # a rewritten checkpoint reloads
        if key not in _PREDICTORS:
            model = load_til_model(model_path)
            _PREDICTORS[key] = predictor_for(model, choice, threads=threads, onnx_dir=Path(out_dir) / ".onnx")
        predictor = _PREDICTORS[key]
        with warnings.catch_warnings():  # a flag travels in the row; map_slides warns once, in the caller
            warnings.simplefilter("ignore", checks.ImplausibleMapWarning)
            return map_slide(slide_path, predictor.model, out_dir, predictor=predictor, threads=threads, **kwargs)
    except Exception as err:  # noqa: BLE001 (a failed slide is a row, whatever failed)
        return _failed(slide_path, _why(slide_path, err))


def _choose_for_slides(paths: list[str], model: TilModel, backend: str, threads: int | None, mpp,
                       out_dir: Path, candidates: list[str] | None = None) -> dict:
    """The backend choice for a slide set, on the first slide whose patches can be read; an explicit
    label where none can (the slides' own rows then say why they failed)."""
    for path in paths if backend == AUTO else paths[:1]:
        try:
            with open_slide(path, mpp) as slide:
                patches = held_out_patches(slide, model)
        except Exception:  # noqa: BLE001 (this slide's own row will say what is wrong with it)
            continue
        return choose(model, patches, backend=backend, threads=threads, cache_dir=out_dir / ".backend",
                      onnx_dir=out_dir / ".onnx", candidates=candidates)
    label = "onnxruntime" if backend == AUTO else backend
    backend_name, precision = backends.parse_label(label)
    return {"label": backends.label(backend_name, precision), "backend": backend_name,
            "precision": backends.resolve_precision(backend_name, precision), "checks": {},
            "chosen_by": "no readable slide"}


@contextlib.contextmanager
def _dask_client(scheduler, n_workers: int) -> Iterator:
    """A client for ``scheduler`` ("local": a LocalCluster of ``n_workers`` started here and closed after)."""
    if scheduler == "local":
        with cluster.local_cluster(n_workers) as local, cluster.client(local.scheduler_address) as client:
            yield client
    else:
        with cluster.client(scheduler) as client:
            yield client


def check_before_work(out_dir, scheduler=None, **settings) -> None:
    """Every check that needs no slide: the settings (:func:`.checks.check_settings`), ``out_dir``
    writable, the scheduler reachable within a few seconds. Raises one ValueError / ConnectionError
    listing every problem found, one per line."""
    problems = checks.check_settings(**settings)
    unwritable = checks.check_writable(out_dir)
    problems += [unwritable] if unwritable else []
    if problems:
        raise ValueError("\n".join(problems))
    if scheduler not in (None, "local"):
        cluster.check_reachable(scheduler)


def map_slides(inputs: Iterable[str | os.PathLike], model_path: str | os.PathLike, out_dir: str | os.PathLike, *,
               scheduler="local", n_workers: int = 2, threads: int | None = None,
               backend: str = DEFAULT_BACKEND, progress: bool = True, min_auc: float = checks.DEFAULT_MIN_AUC,
               allow_weak_model: bool = False, candidates: list[str] | None = None, **kwargs) -> list[dict]:
    """Map every slide (files or folders) with the checkpoint at ``model_path``; one summary per slide,
    in input order, ``status`` done / skipped / failed (with ``error``). A failed slide never stops
    the others.

    Before any work: the settings, ``out_dir`` and the scheduler are checked (:func:`check_before_work`),
    the slides found, the checkpoint loaded and its out-of-fold AUC checked against ``min_auc``
    (refused unless ``allow_weak_model``); all raise one clear error.
    ``scheduler``: ``"local"`` starts a Dask LocalCluster of ``n_workers`` processes (only for more
    than one slide: one slide is mapped in this process), an address (``tcp://host:8786``), a
    scheduler file or a ``distributed.Client`` uses a running cluster, None maps in this process.
    ``threads`` per worker (default: the cores shared out among the local workers). ``backend``: a
    label or ``auto``, chosen here once, before any worker starts, on held-out patches of the first
    readable slide (cached under ``out_dir/.backend``): every slide is mapped on it. ``candidates``:
    the labels ``auto`` chooses among (default: every backend this machine runs).
    Other keywords go to :func:`map_slide`.
    """
    from tqdm.auto import tqdm

    check_backend(backend)
    if kwargs.get("stain", "none") not in STAINS:
        raise ValueError(f"--stain must be one of {', '.join(STAINS)}, got {kwargs['stain']!r}")
    check_before_work(out_dir, scheduler, n_workers=n_workers, threads=threads, min_auc=min_auc,
                      **{k: kwargs.get(k) for k in ("mpp", "threshold", "max_patches", "batch_size")})
    paths = [str(p) for p in find_slides(inputs)]
    out_dir = Path(out_dir)
    model = load_til_model(model_path)  # a bad checkpoint stops here, before any slide is touched
    checked_model(model, min_auc, allow_weak_model)  # a weak model too, before any inference
    if scheduler == "local" and len(paths) <= 1:
        scheduler = None  # a cluster costs seconds to start and gains nothing for one slide
    if scheduler is not None:
        from distributed import Client

        if scheduler == "local" or isinstance(scheduler, Client):  # cores known: share them out
            threads = threads or max(1, (os.cpu_count() or 1) // n_workers)
    # chosen (and exported) once here, not in every worker; the workers are as many as the timing assumed
    if candidates is not None:
        for label in candidates:
            check_backend(label)
    choice = _choose_for_slides(paths, model, backend, threads, kwargs.get("mpp"), out_dir, candidates)
    task = functools.partial(_map_one, model_path=str(model_path), out_dir=str(out_dir), choice=choice,
                             progress=progress, min_auc=min_auc, allow_weak_model=allow_weak_model, **kwargs)
    with tqdm(total=len(paths), desc="slides", unit="slide", disable=not progress) as overall:
        if scheduler is None:
            results = []
            for path in paths:
                results.append(task(path, threads=threads))
                overall.update(1)
        else:
            with _dask_client(scheduler, n_workers) as client:
                outcomes = cluster.map_variants(functools.partial(task, threads=threads), paths, client,
                                                return_exceptions=True, on_done=lambda *_: overall.update(1))
            # an exception here: the worker died (e.g. a crash inside a slide library)
            results = [_failed(path, f"{path}: the Dask task failed ({type(out).__name__}: "
                                     f"{' '.join(str(out).split())})")
                       if isinstance(out, BaseException) else out for path, out in zip(paths, outcomes)]
    for r in results:
        if r.get("flag"):
            checks.warn_implausible(r["name"], r["flag"])
    return results
