"""Which slides to map, opening them with a known resolution, and the settings that decide a slide's map."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from histolean.data import wsi
from histolean.experiments.til_maps.model import TilModel
from histolean.util.errors import DataError, data_error

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".vms", ".vmu")


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


def window(grid: wsi.PatchGrid, n: int) -> wsi.PatchGrid:
    """``n`` consecutive patches (raster order) from the middle of the grid: what a whole-slide map
    reads next to each other, so timing them measures its reading as it is (tiles shared by neighbours)."""
    if len(grid) <= n:
        return grid
    start = (len(grid) - n) // 2
    keep = np.arange(start, start + n)
    return dataclasses.replace(grid, coords=grid.coords[keep], cells=grid.cells[keep],
                               tissue_fraction=grid.tissue_fraction[keep])


def lead_in(whole: wsi.PatchGrid, part: wsi.PatchGrid) -> np.ndarray:
    """Indices of ``whole`` that a raster-order map reads just before ``part`` (a :func:`window`) and
    whose tiles ``part`` may share: the earlier patches of the rows one tile height above its first row.
    Read untimed before ``part`` is timed, they leave the tile cache as a whole-slide map has it there
    (without them the window's first row decodes every tile alone: 30% more reading per patch, measured)."""
    if len(part) == 0 or len(part) == len(whole):
        return np.zeros(0, dtype=np.int64)
    start = int(np.flatnonzero((whole.cells == part.cells[0]).all(axis=1))[0])
    slide = whole.slide
    level = slide.best_level_for_downsample(max(whole.patch_px / whole.size, 1.0))
    tile_h = int(slide.properties.get(f"openslide.level[{level}].tile-height", 512))
    rows = int(np.ceil(tile_h / (whole.patch_px / slide.level_downsamples[level])))
    earlier = np.arange(start)
    return earlier[whole.cells[:start, 0] >= part.cells[0, 0] - rows]


def slide_settings(model: TilModel, slide: wsi.Slide, max_patches, threshold: float) -> dict:
    """What decides a slide's outputs: a finished slide with other settings is mapped again."""
    return {"model_sha256": model.digest, "mpp": round(slide.mpp, 6), "patch_um": model.patch_um,
            "input_size": model.input_size, "max_patches": max_patches, "threshold": threshold}
