"""A slide's outputs, each written atomically into its folder, and its completion record.

``map.png`` (thumbnail beside the map: red TIL-positive, blue tissue), ``patches.parquet``
(level-0 x, y, patch size, probability), ``til_positive.geojson`` (QuPath: File > Import objects)
and, last, ``complete.json``: a :mod:`histolean.util.cache` record of the slide's summary, keyed by
the fingerprint of its settings (model included). A slide whose record matches the current key,
with all its files present, is finished.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from histolean.data import wsi
from histolean.experiments.til_maps.model import TilModel
from histolean.util import atomic, cache

OUTPUT_FILES = ("map.png", "patches.parquet", "til_positive.geojson")
COMPLETE = "complete.json"
TIL_RED, TISSUE_BLUE, UNSAMPLED_BLUE = (220, 30, 30), (40, 80, 200), (175, 195, 235)


# Completion ---------------------------------------------------------------------------------------
def completion_key(settings: dict) -> str:
    """The key a finished slide is found by: the fingerprint of its settings (model checksum, mpp, patch
    size, input size, patch cap, threshold)."""
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


# Files --------------------------------------------------------------------------------------------
def write_table(path: Path, grid: wsi.PatchGrid, probs, positive, model: TilModel, slide_path: Path,
                inference: dict | None = None) -> None:
    """The patch table as Parquet: level-0 coordinates, patch size, grid cell, probability, label; its
    metadata names the slide, the model and ``inference`` (backend label, precision, float32 check)."""
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
                                **{k: json.dumps(v) if isinstance(v, dict) else str(v)
                                   for k, v in (inference or {}).items()}})
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


def write_geojson(path: Path, grid: wsi.PatchGrid, probs: np.ndarray, positive: np.ndarray, model: TilModel) -> None:
    atomic.write_text(path, json.dumps(geojson(grid, probs, positive, model)))


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


def write_map_image(path: Path, tissue_grid: wsi.PatchGrid, grid: wsi.PatchGrid, positive: np.ndarray) -> None:
    with atomic.atomic_path(path) as tmp:
        map_image(tissue_grid, grid, positive).save(tmp, format="PNG")
