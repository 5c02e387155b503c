"""A slide's outputs, each written atomically, and its completion record.

``map.png`` (thumbnail beside the map: red TIL-positive, blue tissue; its caption carries any
plausibility flag), ``patches.parquet`` (level-0 x, y, patch size, probability, label),
``patches.geojson`` (every tissue patch as a QuPath detection with its probability as a measurement
and its class by the model's threshold: QuPath can re-threshold and colour by measurement),
``til_regions.geojson`` (merged TIL-positive regions as annotations) and, last, ``complete.json``: a
:mod:`histolean.util.cache` record of the slide's summary, keyed by the fingerprint of its settings
(model, backend, threshold included). A slide whose record matches the current key, with all its
files present, is finished.

The GeoJSON follows QuPath 0.4+ (File > Import objects, or drag and drop): Polygon geometries in
level-0 pixels, ``properties.objectType`` detection / annotation, ``classification`` {name, color},
``measurements`` as a name -> number object.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from histolean.data import wsi
from histolean.experiments.til_maps.model import TilModel
from histolean.experiments.til_maps.regions import merge_cells
from histolean.util import atomic, cache

OUTPUT_FILES = ("map.png", "patches.parquet", "patches.geojson", "til_regions.geojson")
COMPLETE = "complete.json"
QUPATH_FORMAT = "QuPath 0.4+ GeoJSON (File > Import objects)"
TIL_RED, TISSUE_BLUE, UNSAMPLED_BLUE = (220, 30, 30), (40, 80, 200), (175, 195, 235)
POSITIVE, NEGATIVE, REGION = "TIL-positive", "TIL-negative", "TIL region"


# Completion ---------------------------------------------------------------------------------------
def completion_key(settings: dict) -> str:
    """The key a finished slide is found by: the fingerprint of its settings (model checksum, backend and
    precision, mpp, patch size, input size, patch cap, threshold)."""
    return cache.fingerprint(settings)


def read_complete(folder: str | os.PathLike, key: str) -> dict | None:
    """The summary of a slide finished with ``key``; None when it is not finished, was made with other
    settings, lacks one of its files, or its record is corrupt (moved aside, with a warning)."""
    folder = Path(folder)
    done = cache.load(folder / COMPLETE, key)
    if done is None or not all((folder / f).is_file() for f in OUTPUT_FILES):
        return None
    return done


def mark_complete(folder: str | os.PathLike, key: str, summary: dict) -> Path:
    """Record the slide as finished (written last, after all its files)."""
    return cache.save(Path(folder) / COMPLETE, key, summary)


def forget_complete(folder: str | os.PathLike) -> None:
    """Drop the record before any file of the slide changes: a re-map killed midway leaves no record
    that a rerun could trust over a mix of old and new files."""
    cache.forget(Path(folder) / COMPLETE)


def start_staging(folder: str | os.PathLike) -> Path:
    """Begin a (re-)map of ``folder``: its record goes first, leftovers of killed runs are removed, and
    a fresh hidden folder beside it is returned to write every new file into (:func:`publish`)."""
    folder = Path(folder)
    forget_complete(folder)
    for stale in [*folder.parent.glob(f".{folder.name}.partial-*"), *folder.parent.glob(f".{folder.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    staging = folder.parent / f".{folder.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, folder: str | os.PathLike) -> Path:
    """Put a finished staging folder (its ``complete.json`` written last) in the place of ``folder``: two
    renames, so a kill leaves the old folder (without its record), or none, never a mix."""
    folder = Path(folder)
    old = None
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return folder


# Files --------------------------------------------------------------------------------------------
def write_table(path: Path, grid: wsi.PatchGrid, probs, positive, model: TilModel, slide_path: Path,
                inference: dict | None = None, extra: dict | None = None) -> None:
    """The patch table as Parquet: level-0 coordinates, patch size, grid cell, probability, label; its
    metadata names the slide, the model, ``inference`` (backend label, precision, float32 check) and
    ``extra`` (threshold, model check, plausibility flag)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "x": grid.coords[:, 0], "y": grid.coords[:, 1],
        "patch_px": np.full(len(grid), grid.patch_px, dtype=np.int64),
        "patch_um": np.full(len(grid), grid.effective_patch_um),
        "row": grid.cells[:, 0], "col": grid.cells[:, 1], "tissue_fraction": grid.tissue_fraction,
        "probability": probs, "til_positive": positive,
    }).replace_schema_metadata({"slide": slide_path.name, "model": model.name, "model_sha256": model.digest,
                                "mpp": str(grid.slide.mpp), "coordinates": "level-0 pixels, top-left corner",
                                **{k: json.dumps(v) if isinstance(v, (dict, list)) or v is None else str(v)
                                   for k, v in {**(inference or {}), **(extra or {})}.items()}})
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_patches(folder: str | os.PathLike):
    """A slide's patch table (pandas DataFrame) from its output folder."""
    import pandas as pd

    path = Path(folder) / "patches.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: map the slide first (histolean tilmap)")
    return pd.read_parquet(path)


def _square(x: int, y: int, side: int) -> list:
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]


def _collection(features: list, grid: wsi.PatchGrid, model: TilModel, properties: dict | None) -> dict:
    return {"type": "FeatureCollection", "features": features,
            "properties": {"format": QUPATH_FORMAT, "slide": grid.slide.path.name, "model": model.name,
                           "patch_um": grid.effective_patch_um, "coordinates": "level-0 pixels",
                           **(properties or {})}}


def geojson(grid: wsi.PatchGrid, probs: np.ndarray, positive: np.ndarray, model: TilModel,
            properties: dict | None = None) -> dict:
    """Every patch as a QuPath detection: a square in level-0 pixels, classified TIL-positive or
    TIL-negative by the threshold, with its probability as the ``TIL probability`` measurement.
    ``properties`` (threshold, model check, plausibility flag) go on the collection."""
    side = grid.patch_px
    features = []
    for (x, y), p, pos in zip(grid.coords.tolist(), np.asarray(probs).tolist(), np.asarray(positive).tolist()):
        name, color = (POSITIVE, TIL_RED) if pos else (NEGATIVE, TISSUE_BLUE)
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [_square(x, y, side)]},
                         "properties": {"objectType": "detection",
                                        "classification": {"name": name, "color": list(color)},
                                        "measurements": {"TIL probability": round(float(p), 6)}}})
    return _collection(features, grid, model, properties)


def regions_geojson(grid: wsi.PatchGrid, probs: np.ndarray, positive: np.ndarray, model: TilModel,
                    properties: dict | None = None) -> dict:
    """TIL-positive patches merged into regions (4-connected groups of grid cells, with holes) as
    QuPath annotations, each with its patch count, area and mean probability."""
    positive = np.asarray(positive, dtype=bool)
    probs = np.asarray(probs)[positive]
    side, um = grid.patch_px, grid.effective_patch_um
    features = []
    for region in merge_cells(grid.cells[positive], grid.grid_shape):
        rings = [[[x * side, y * side] for x, y in ring] for ring in region["rings"]]
        n = len(region["index"])
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": rings},
                         "properties": {"objectType": "annotation",
                                        "classification": {"name": REGION, "color": list(TIL_RED)},
                                        "measurements": {"Patches": n, "Area um^2": round(n * um * um, 1),
                                                         "Mean TIL probability":
                                                             round(float(probs[region["index"]].mean()), 6)
                                                             if n else None}}})
    return _collection(features, grid, model, properties)


def write_geojson(path: Path, doc: dict) -> None:
    atomic.write_text(path, json.dumps(doc))


def map_image(tissue_grid: wsi.PatchGrid, grid: wsi.PatchGrid, positive: np.ndarray, height: int = 480,
              flag: str | None = None) -> "PIL.Image.Image":  # noqa: F821
    """The slide's thumbnail beside its map (red TIL-positive, blue tissue, pale blue not sampled);
    ``flag`` (an implausible positive rate) is written under the caption, in red."""
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
    legend = 18 * (2 if flag else 1)
    canvas = Image.new("RGB", (2 * thumb.width + 10, thumb.height + legend), "white")
    canvas.paste(thumb, (0, 0))
    canvas.paste(heat, (thumb.width + 10, 0))
    sampled = "" if len(grid) == len(tissue_grid) else f", pale: not sampled ({len(grid)}/{len(tissue_grid)})"
    draw = ImageDraw.Draw(canvas)
    draw.text((4, thumb.height + 3), f"{slide.path.name}: red TIL-positive ({int(positive.sum())}/{len(grid)}), "
              f"blue tissue{sampled}", fill=(0, 0, 0))
    if flag:
        draw.text((4, thumb.height + 21), f"FLAGGED {flag}", fill=(200, 0, 0))
    return canvas


def write_map_image(path: Path, tissue_grid: wsi.PatchGrid, grid: wsi.PatchGrid, positive: np.ndarray,
                    flag: str | None = None) -> None:
    with atomic.atomic_path(path) as tmp:
        map_image(tissue_grid, grid, positive, flag=flag).save(tmp, format="PNG")
