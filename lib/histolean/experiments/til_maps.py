"""Whole-slide TIL maps: a trained patch classifier run over every tissue patch of a slide.

::

    model = tilmap.load_til_model("outputs/default/models/til_nar_resrep/nar-phi2.pt")
    summary = tilmap.map_slide("slide.svs", model, "maps/")                 # one slide, this process
    results = tilmap.map_slides(["slides/"], "model.pt", "maps/")           # many, on a Dask cluster
    patches = tilmap.read_patches("maps/slide")                             # x, y, probability, ...

Per slide: tissue mask -> grid of ``patch_um`` squares (``histolean.data.wsi``) -> each patch read
from the pyramid level nearest the model's resolution, resized to its input size (a reader
thread keeps batches ahead of the model) -> TIL probability. Written to ``<out>/<slide stem>/``,
each file atomically: ``map.png`` (thumbnail beside the map: red TIL-positive, blue tissue),
``patches.parquet`` (level-0 x, y, patch size, probability), ``til_positive.geojson``
(QuPath: File > Import objects) and, last, ``complete.json``. A slide whose ``complete.json``
matches the current settings is skipped, so a killed run resumes where it stopped.

Backends: eager ``torch``, ``torch_channels_last``, ``torch_compile`` and ``onnxruntime`` (the
network exported once per checkpoint, :mod:`histolean.core.export`). All turn logits into
probabilities with the same numpy code.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from histolean.util import atomic
from histolean.data import wsi
from histolean.data.common import DataError, data_error

BACKENDS = ("torch", "torch_channels_last", "torch_compile", "onnxruntime")
# fastest that works on the 2-core CPU here (notebooks/08_til_maps.ipynb measures all of them)
DEFAULT_BACKEND = "onnxruntime"
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".vms", ".vmu")
OUTPUT_FILES = ("map.png", "patches.parquet", "til_positive.geojson")
COMPLETE = "complete.json"
TIL_RED, TISSUE_BLUE, UNSAMPLED_BLUE = (220, 30, 30), (40, 80, 200), (175, 195, 235)


# Model -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TilModel:
    """A checkpoint written by ``checkpoints.save_model``, with what inference needs from it."""

    path: Path
    net: object               # torch nn.Module, eval mode
    info: dict
    input_size: int
    patch_um: float
    mean: np.ndarray          # per channel, on 0..1 pixel values
    std: np.ndarray
    digest: str               # sha256 of the checkpoint file: names its ONNX export, keys finished slides

    @property
    def name(self) -> str:
        return self.path.stem


def load_til_model(path: str | os.PathLike) -> TilModel:
    """Load a TIL patch classifier; anything but a two-class (or one-logit) image model is an error
    naming the file."""
    from histolean.core import checkpoints

    path = Path(path)
    net, info = checkpoints.load_model(path)  # damaged, foreign or mismatched files raise naming the path
    spec = info["spec"]
    if spec.num_classes not in (1, 2) or spec.in_channels != 3:
        raise ValueError(f"model checkpoint {path}: {spec.label} has {spec.num_classes} classes and "
                         f"{spec.in_channels} input channels; a TIL map needs a 2-class RGB patch classifier")
    input_size = int(info.get("input_size") or spec.input_size)
    patch_um = float(info.get("patch_um", 50.0))
    if not patch_um > 0:
        raise ValueError(f"model checkpoint {path}: patch_um must be positive, got {patch_um!r}")

    def channels(key: str, default: float) -> np.ndarray:
        value = np.broadcast_to(np.asarray(info.get(key, default), dtype=np.float32).reshape(-1), (3,)).copy()
        if key == "std" and not (value > 0).all():
            raise ValueError(f"model checkpoint {path}: std must be positive, got {value.tolist()}")
        return value

    from histolean.core.train import NORM_MEAN, NORM_STD  # what fit() trains with when a checkpoint does not say

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return TilModel(path, net, info, input_size, patch_um, channels("mean", NORM_MEAN), channels("std", NORM_STD),
                    digest)


def to_input(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 (b, h, w, 3) -> normalised float32 (b, 3, h, w), as ``train.ArrayDataset`` feeds training."""
    x = images.astype(np.float32) / 255.0
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def positive_probability(logits: np.ndarray) -> np.ndarray:
    """P(TIL) from (b, 2) logits (softmax) or (b, 1) (sigmoid), in float64."""
    from scipy.special import expit, softmax

    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 2 and logits.shape[1] > 1:
        return softmax(logits, axis=1)[:, 1]
    return expit(logits.reshape(-1))


class Predictor:
    """uint8 patches -> P(TIL), through one backend. ``logits(x)`` takes a prepared float batch."""

    def __init__(self, model: TilModel, backend: str = DEFAULT_BACKEND, *, threads: int | None = None,
                 onnx_dir: str | os.PathLike | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        import torch

        self.model, self.backend, self.threads = model, backend, threads
        if threads:
            torch.set_num_threads(int(threads))
        self._fixed_batch: int | None = None
        if backend == "onnxruntime":
            from histolean.core import export

            onnx_path = onnx_file(model, onnx_dir)
            if not onnx_path.is_file():
                export.to_onnx(model.net, model.input_size, onnx_path)
            self._session = export.onnx_session(onnx_path, threads)
            return
        net = model.net.eval()
        if backend == "torch_channels_last":  # on a copy: .to() converts in place, other backends share the net
            net = copy.deepcopy(net).to(memory_format=torch.channels_last)
        elif backend == "torch_compile":
            net = torch.compile(net, dynamic=False)
        self._net = net

    def logits(self, x: np.ndarray) -> np.ndarray:
        if self.backend == "onnxruntime":
            from histolean.core.export import INPUT_NAME

            return self._session.run(None, {INPUT_NAME: x})[0]
        import torch

        n = len(x)
        if self.backend == "torch_compile":
            # a compiled graph is specialised to one batch size: pad short batches instead of recompiling
            self._fixed_batch = self._fixed_batch or n
            if n < self._fixed_batch:
                x = np.concatenate([x, np.zeros((self._fixed_batch - n, *x.shape[1:]), x.dtype)])
        t = torch.from_numpy(x)
        if self.backend == "torch_channels_last":
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self._net(t).float().numpy()[:n]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return positive_probability(self.logits(to_input(images, self.model.mean, self.model.std)))


def onnx_file(model: TilModel, onnx_dir: str | os.PathLike | None = None) -> Path:
    """Where a checkpoint's ONNX export lives (next to it by default), named by its content."""
    folder = Path(onnx_dir) if onnx_dir is not None else model.path.parent
    return folder / f"{model.name}-{model.digest[:12]}.onnx"


# Slides ------------------------------------------------------------------------------------------
def find_slides(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Slide files from files and folders (a folder gives its files with a slide suffix, sorted).
    A file named explicitly is kept whatever its suffix: opening it then says what is wrong."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
            if not inside:
                raise data_error(path, f"holds no slide files ({', '.join(SLIDE_SUFFIXES)})", "Point to a slide "
                                 "or a folder of slides")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"slide {path} does not exist")
    stems = [p.stem for p in found]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise ValueError(f"slides share an output folder name (file stem): {clash}; rename or map them separately")
    return found


def open_slide(path: str | os.PathLike, mpp: float | dict | None = None) -> wsi.Slide:
    """Open a slide. ``mpp``: a number is used for a slide whose file records no microns per pixel
    (the file's own value wins otherwise); a dict {file name: mpp} sets it per slide, overriding."""
    path = Path(path)
    if isinstance(mpp, dict):
        return wsi.open_slide(path, mpp=mpp.get(path.name))
    if mpp is None:
        try:
            return wsi.open_slide(path)
        except DataError as err:
            if "microns per pixel" not in str(err):
                raise
            raise data_error(path, "the slide does not record its microns per pixel, so a 50 um patch has no "
                             "size in pixels", "Give it: --mpp X on the command line (mpp=X in Python), "
                             "e.g. 0.25 for 40x or 0.5 for 20x") from None
    slide = wsi.open_slide(path, mpp=mpp)
    if slide.properties.get("openslide.mpp-x"):  # the file knows its own resolution: use that
        slide.close()
        return wsi.open_slide(path)
    return slide


def subsample(grid: wsi.PatchGrid, max_patches: int | None) -> wsi.PatchGrid:
    """At most ``max_patches`` of the grid, evenly spread over it in raster order (deterministic)."""
    if not max_patches or len(grid) <= max_patches:
        return grid
    keep = np.unique(np.round(np.linspace(0, len(grid) - 1, int(max_patches))).astype(int))
    return dataclasses.replace(grid, coords=grid.coords[keep], cells=grid.cells[keep],
                               tissue_fraction=grid.tissue_fraction[keep])


def slide_settings(model: TilModel, slide: wsi.Slide, max_patches, threshold: float) -> dict:
    """What decides a slide's outputs: a finished slide with other settings is mapped again."""
    return {"model_sha256": model.digest, "mpp": round(slide.mpp, 6), "patch_um": model.patch_um,
            "input_size": model.input_size, "max_patches": max_patches, "threshold": threshold}


def read_complete(folder: str | os.PathLike) -> dict | None:
    """The ``complete.json`` of a slide's output folder, or None when the slide is not finished."""
    marker = Path(folder) / COMPLETE
    try:
        done = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if not all((Path(folder) / f).is_file() for f in OUTPUT_FILES):
        return None
    return done


def map_slide(slide_path: str | os.PathLike, model: TilModel | str | os.PathLike, out_dir: str | os.PathLike, *,
              mpp: float | dict | None = None, backend: str = DEFAULT_BACKEND, batch_size: int = 32,
              prefetch: int = 2, max_patches: int | None = None, threshold: float = 0.5,
              threads: int | None = None, predictor: Predictor | None = None, force: bool = False,
              progress: bool = True) -> dict:
    """Map one slide into ``out_dir/<slide stem>/``; return its summary (``status`` done or skipped).

    ``max_patches`` caps the patches predicted (evenly spread; the others show pale on the map).
    Errors (no MPP, unreadable file, bad checkpoint) are raised naming the file.
    """
    slide_path, out_dir = Path(slide_path), Path(out_dir)
    model = model if isinstance(model, TilModel) else load_til_model(model)
    folder = out_dir / slide_path.stem
    t0 = time.perf_counter()
    with open_slide(slide_path, mpp) as slide:
        settings = slide_settings(model, slide, max_patches, threshold)
        done = read_complete(folder)
        if not force and done is not None and done.get("settings") == settings:
            return {**done, "status": "skipped"}
        tissue_grid = wsi.patch_grid(slide, patch_um=model.patch_um, size=model.input_size)
        grid = subsample(tissue_grid, max_patches)
        predictor = predictor or Predictor(model, backend, threads=threads, onnx_dir=out_dir / ".onnx")
        t_predict = time.perf_counter()
        probs = _predict(grid, predictor, batch_size, prefetch, progress, slide_path.name)
        predict_s = time.perf_counter() - t_predict
        positive = probs >= threshold
        _write_table(folder / "patches.parquet", grid, probs, positive, model, slide_path)
        atomic.write_text(folder / "til_positive.geojson", json.dumps(geojson(grid, probs, positive, model)))
        with atomic.atomic_path(folder / "map.png") as tmp:
            map_image(tissue_grid, grid, positive).save(tmp, format="PNG")
        summary = {
            "slide": str(slide_path), "name": slide_path.name, "folder": str(folder), "settings": settings,
            "model": model.name, "backend": predictor.backend, "mpp": slide.mpp, "mpp_source": slide.mpp_source,
            "dimensions": list(slide.dimensions), "patch_px": grid.patch_px, "grid_shape": list(grid.grid_shape),
            "n_tissue_patches": len(tissue_grid), "n_patches": len(grid), "n_positive": int(positive.sum()),
            "fraction_positive": float(positive.mean()) if len(grid) else float("nan"),
            "predict_s": predict_s, "seconds": time.perf_counter() - t0,
            "patches_per_s": len(grid) / predict_s if predict_s > 0 else float("nan"),
        }
    atomic.write_text(folder / COMPLETE, json.dumps(summary, indent=1))  # last: the slide is finished
    return {**summary, "status": "done"}


def _predict(grid: wsi.PatchGrid, predict: Callable, batch_size: int, prefetch: int, progress: bool,
             name: str) -> np.ndarray:
    from tqdm.auto import tqdm

    with tqdm(total=len(grid), desc=name, unit="patch", disable=not progress, leave=False) as bar:
        def step(images: np.ndarray) -> np.ndarray:
            out = predict(images)
            bar.update(len(images))
            return out

        return wsi.predict_slide(grid, step, batch_size=batch_size, prefetch=prefetch)


def _write_table(path: Path, grid: wsi.PatchGrid, probs, positive, model: TilModel, slide_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "x": grid.coords[:, 0], "y": grid.coords[:, 1],
        "patch_px": np.full(len(grid), grid.patch_px, dtype=np.int64),
        "patch_um": np.full(len(grid), grid.effective_patch_um),
        "row": grid.cells[:, 0], "col": grid.cells[:, 1], "tissue_fraction": grid.tissue_fraction,
        "probability": probs, "til_positive": positive,
    }).replace_schema_metadata({"slide": slide_path.name, "model": model.name, "model_sha256": model.digest,
                                "mpp": str(grid.slide.mpp), "coordinates": "level-0 pixels, top-left corner"})
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_patches(folder: str | os.PathLike):
    """A slide's patch table (pandas DataFrame) from its output folder."""
    import pandas as pd

    path = Path(folder) / "patches.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: map the slide first (histolean tilmap)")
    return pd.read_parquet(path)


def geojson(grid: wsi.PatchGrid, probs: np.ndarray, positive: np.ndarray, model: TilModel) -> dict:
    """TIL-positive patches as QuPath detections: squares in level-0 pixels, with their probability."""
    side = grid.patch_px
    features = []
    for (x, y), p in zip(grid.coords[positive].tolist(), probs[positive].tolist()):
        ring = [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"objectType": "detection",
                                        "classification": {"name": "TIL-positive", "color": list(TIL_RED)},
                                        "measurements": {"TIL probability": round(float(p), 6)}}})
    return {"type": "FeatureCollection", "features": features,
            "properties": {"slide": grid.slide.path.name, "model": model.name, "patch_um": grid.effective_patch_um}}


def map_image(tissue_grid: wsi.PatchGrid, grid: wsi.PatchGrid, positive: np.ndarray,
              height: int = 480) -> "PIL.Image.Image":  # noqa: F821
    """The slide's thumbnail beside its map (red TIL-positive, blue tissue, pale blue not sampled)."""
    from PIL import Image, ImageDraw

    slide = tissue_grid.slide
    w, h = slide.dimensions
    thumb = Image.fromarray(slide.thumbnail(max_size=max(int(round(height * max(w, h) / h)), 8)))
    cells = np.full((*tissue_grid.grid_shape, 3), 255, dtype=np.uint8)
    cells[tissue_grid.cells[:, 0], tissue_grid.cells[:, 1]] = UNSAMPLED_BLUE
    cells[grid.cells[:, 0], grid.cells[:, 1]] = TISSUE_BLUE
    cells[grid.cells[positive, 0], grid.cells[positive, 1]] = TIL_RED
    scale = thumb.width / w
    rows, cols = tissue_grid.grid_shape
    side = tissue_grid.patch_px * scale
    heat = Image.fromarray(cells).resize((max(1, round(cols * side)), max(1, round(rows * side))),
                                         Image.Resampling.NEAREST)
    legend = 18
    canvas = Image.new("RGB", (2 * thumb.width + 10, thumb.height + legend), "white")
    canvas.paste(thumb, (0, 0))
    canvas.paste(heat, (thumb.width + 10, 0))
    sampled = "" if len(grid) == len(tissue_grid) else f", pale: not sampled ({len(grid)}/{len(tissue_grid)})"
    ImageDraw.Draw(canvas).text((4, thumb.height + 3), f"{slide.path.name}: red TIL-positive "
                                f"({int(positive.sum())}/{len(grid)}), blue tissue{sampled}", fill=(0, 0, 0))
    return canvas


# Many slides ---------------------------------------------------------------------------------------
def local_cluster(n_workers: int = 2):
    """A Dask LocalCluster of ``n_workers`` single-threaded processes, no dashboard (reuse it for
    several :func:`map_slides` calls through ``distributed.Client(cluster)``)."""
    from dask.distributed import LocalCluster

    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=40)


_PREDICTORS: dict = {}  # per worker process: a model is loaded and exported once, not once per slide


def _map_one(slide_path: str, model_path: str, out_dir: str, backend: str, threads: int | None, **kwargs) -> dict:
    """One slide, never raising: a failure is a row naming the slide and the problem."""
    try:
        stat = os.stat(model_path)
        key = (model_path, stat.st_mtime_ns, stat.st_size, backend, threads)  # a rewritten checkpoint reloads
        if key not in _PREDICTORS:
            model = load_til_model(model_path)
            _PREDICTORS[key] = Predictor(model, backend, threads=threads, onnx_dir=Path(out_dir) / ".onnx")
        predictor = _PREDICTORS[key]
        return map_slide(slide_path, predictor.model, out_dir, predictor=predictor, **kwargs)
    except (DataError, ValueError, OSError, RuntimeError) as err:
        return {"slide": slide_path, "name": Path(slide_path).name, "status": "failed",
                "error": f"{type(err).__name__}: {err}"}


def map_slides(inputs: Iterable[str | os.PathLike], model_path: str | os.PathLike, out_dir: str | os.PathLike, *,
               scheduler: str | None = "local", n_workers: int = 2, threads: int | None = None,
               backend: str = DEFAULT_BACKEND, progress: bool = True, **kwargs) -> list[dict]:
    """Map every slide (files or folders) with the checkpoint at ``model_path``; one summary per slide,
    in input order, ``status`` done / skipped / failed (with ``error``). A failed slide never stops
    the others.

    ``scheduler``: ``"local"`` starts a Dask LocalCluster of ``n_workers`` processes, an address
    (``tcp://host:8786``) or a ``distributed.Client`` uses a running cluster, None maps in this process. ``threads`` per
    worker (default: the cores shared out among the local workers). Other keywords go to
    :func:`map_slide`.
    """
    from tqdm.auto import tqdm

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    paths = find_slides(inputs)
    out_dir = Path(out_dir)
    model = load_til_model(model_path)  # a bad checkpoint stops here, before any slide is touched
    if backend == "onnxruntime":  # export once here, not in every worker
        from histolean.core import export

        target = onnx_file(model, out_dir / ".onnx")
        if not target.is_file():
            export.to_onnx(model.net, model.input_size, target)
    args = dict(model_path=str(model_path), out_dir=str(out_dir), backend=backend, progress=progress, **kwargs)
    overall = tqdm(total=len(paths), desc="slides", unit="slide", disable=not progress)
    results: dict[str, dict] = {}
    if scheduler is None:
        for path in paths:
            results[str(path)] = _map_one(str(path), threads=threads, **args)
            overall.update(1)
    else:
        from dask.distributed import Client, LocalCluster, as_completed

        cluster = None
        if scheduler == "local":
            cluster = local_cluster(n_workers)
        if cluster is not None or isinstance(scheduler, Client):
            threads = threads or max(1, (os.cpu_count() or 1) // n_workers)
        given = isinstance(scheduler, Client)
        client = scheduler if given else Client(cluster if cluster is not None else scheduler)
        try:
            futures = {client.submit(_map_one, str(p), threads=threads, pure=False, **args): str(p) for p in paths}
            for future in as_completed(futures):
                path = futures[future]
                try:
                    results[path] = future.result()
                except Exception as err:  # the worker died (e.g. a crash inside a slide library)
                    results[path] = {"slide": path, "name": Path(path).name, "status": "failed",
                                     "error": f"the Dask task failed ({type(err).__name__}: {err})"}
                overall.update(1)
        finally:
            if not given:
                client.close()
            if cluster is not None:
                cluster.close()
    overall.close()
    return [results[str(p)] for p in paths]


# Speed ---------------------------------------------------------------------------------------------
def compare_backends(model: TilModel, slide: wsi.Slide, backends: Iterable[str], *, n_patches: int = 64,
                     batch_size: int = 16, repeats: int = 5, warmup: int = 1, threads: int | None = None,
                     onnx_dir=None, progress: bool = False) -> dict[str, dict]:
    """Model-only and end-to-end patches/s of each backend on ``n_patches`` tissue patches of
    ``slide``, timed side by side in one :func:`bench.compare_speed` run (reference: the first backend).

    Model-only: patches already in memory -> probabilities. End-to-end: the same patches read from
    the slide (OpenSlide's tile cache off, so every round decodes again) and resized by the
    prefetching reader while the model runs. Per backend: ``model_per_s``, ``end_to_end_per_s``,
    ``end_to_end_share`` (end-to-end / model-only), ``speedup`` (model-only, against the reference,
    median over rounds, with ``speedup_min``/``speedup_max``), ``end_to_end_speedup`` and
    ``first_call_s`` (one call before timing: ONNX session or torch.compile included), and the
    1-minute ``load_average`` of the machine after timing. ``threads`` is given to every backend
    (one thread: a fair engine comparison that a busy shared machine does not distort much; torch's
    OpenMP threads slow down several-fold when another process holds one of the cores).
    """
    import openslide

    from histolean.core import measure

    backends = list(backends)
    slide._osr.set_cache(openslide.OpenSlideCache(0))  # timed reads must decode, as on an unseen slide
    grid = subsample(wsi.patch_grid(slide, patch_um=model.patch_um, size=model.input_size), n_patches)
    images = np.stack([grid.read(i) for i in range(len(grid))])
    calls, first_call = {}, {}
    for backend in backends:
        predictor = Predictor(model, backend, threads=threads, onnx_dir=onnx_dir)
        t0 = time.perf_counter()
        predictor(images[:batch_size])
        first_call[backend] = time.perf_counter() - t0
        calls[f"{backend}/model"] = (lambda p=predictor: [p(images[i:i + batch_size])
                                                          for i in range(0, len(images), batch_size)])
        calls[f"{backend}/end_to_end"] = (lambda p=predictor: wsi.predict_slide(grid, p, batch_size, prefetch=2))
    timing = bench.compare_speed(calls, reference=f"{backends[0]}/model", repeats=repeats, warmup=warmup,
                                 items_per_call=len(grid), progress=progress)
    ref_e2e = timing[f"{backends[0]}/end_to_end"]["median_s"]
    out = {}
    for backend in backends:
        m, e = timing[f"{backend}/model"], timing[f"{backend}/end_to_end"]
        out[backend] = {"model_per_s": m["per_s"], "end_to_end_per_s": e["per_s"],
                        "end_to_end_share": e["per_s"] / m["per_s"], "speedup": m["speedup"],
                        "speedup_min": m["speedup_min"], "speedup_max": m["speedup_max"],
                        "end_to_end_speedup": ref_e2e / e["median_s"], "first_call_s": first_call[backend],
                        "n_patches": len(grid), "batch_size": batch_size, "repeats": repeats, "threads": threads,
                        "load_average": os.getloadavg()[0],
                        "reference": backends[0], "timing": {"model": m, "end_to_end": e}}
    return out
