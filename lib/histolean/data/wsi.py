"""Whole-slide images through OpenSlide: physical units, tissue, patch grids, slide maps.

::

    slide = wsi.open_slide("CMU-1-Small-Region.svs")          # mpp from the file
    slide = wsi.open_slide("tcga-cr-7395.svs", mpp=0.25)       # files without mpp need it
    grid = wsi.patch_grid(slide, patch_um=50, size=224)        # tissue-only 50 x 50 um patches
    probs = wsi.predict_slide(grid, predict_batch, batch_size=64)
    heat = wsi.slide_map(grid, probs)                           # (rows, cols) float, NaN off tissue

Patch sides are computed from the slide's own microns per pixel (``patch_um / mpp``
level-0 pixels, rounded), read from the pyramid level that still has at least the
output resolution, and resized to ``size`` x ``size``. Reading runs in a background
thread that keeps ``prefetch`` batches ahead of the consumer.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from histolean.data import tiff_tiles
from histolean.data.common import resize_images
from histolean.util.errors import DataError, data_error


class Slide:
    """An open slide with its microns per pixel (from the file, or the ``mpp=`` override)."""

    def __init__(self, path: str | os.PathLike, mpp: float | None = None):
        import openslide

        self.path = Path(path)
        if not self.path.is_file():
            raise data_error(self.path, "slide file does not exist", "Check the path")
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideUnsupportedFormatError, openslide.OpenSlideError) as exc:
            raise data_error(self.path, f"OpenSlide cannot open it ({exc or type(exc).__name__})",
                             "Is it a complete .svs / pyramidal TIFF? Re-download it") from None
        props = self._osr.properties
        file_mpp = (props.get("openslide.mpp-x"), props.get("openslide.mpp-y"))
        if mpp is not None:
            if not (isinstance(mpp, (int, float)) and mpp > 0):
                raise ValueError(f"open_slide({self.path}): mpp must be a positive number of microns per pixel, "
                                 f"got {mpp!r}")
            self.mpp_x = self.mpp_y = float(mpp)
            self.mpp_source = "argument"
        elif file_mpp[0] and float(file_mpp[0]) > 0:
            self.mpp_x = float(file_mpp[0])
            self.mpp_y = float(file_mpp[1] or file_mpp[0])
            self.mpp_source = "file"
        else:
            self._osr.close()
            raise data_error(self.path, "the slide does not record its microns per pixel (no openslide.mpp-x "
                             "property)", "Pass it explicitly, e.g. wsi.open_slide(path, mpp=0.25) for 40x or "
                             "mpp=0.5 for 20x")
        # level 0 is decoded tile by tile when that gives OpenSlide's pixels (data.tiff_tiles), decided
        # at the first level-0 read; ``reader`` says which reads them
        self._tiles, self._tiles_decided, self._tiles_lock = None, False, threading.Lock()
        self.reader = "openslide"

    # Geometry -------------------------------------------------------------------------
    @property
    def mpp(self) -> float:
        return (self.mpp_x + self.mpp_y) / 2

    @property
    def dimensions(self) -> tuple[int, int]:
        return self._osr.dimensions

    @property
    def level_count(self) -> int:
        return self._osr.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._osr.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._osr.level_downsamples

    @property
    def properties(self):
        return self._osr.properties

    def best_level_for_downsample(self, downsample: float) -> int:
        return self._osr.get_best_level_for_downsample(downsample)

    # Pixels ---------------------------------------------------------------------------
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 (h, w, 3) at ``level``; ``location`` is level-0 (x, y). Transparent = white."""
        if level == 0 and self._level0_tiles() is not None:
            return self._tiles.region(int(location[0]), int(location[1]), int(size[0]), int(size[1]))
        return self._openslide_region(location, level, size)

    def _openslide_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        import openslide

        try:
            rgba = np.asarray(self._osr.read_region((int(location[0]), int(location[1])), level,
                                                    (int(size[0]), int(size[1]))))
        except openslide.OpenSlideError as exc:
            raise data_error(self.path, f"cannot read region {location} level {level} ({exc})",
                             "The file may be truncated; re-download it") from None
        return _rgba_on_white(rgba)

    def _level0_tiles(self):
        if not self._tiles_decided:
            with self._tiles_lock:
                if not self._tiles_decided:
                    self._tiles, why = tiff_tiles.open_level0(
                        self.path, self.dimensions, lambda x, y, w, h: self._openslide_region((x, y), 0, (w, h)))
                    self.reader = "tifffile+imagecodecs, " + why if self._tiles is not None else f"openslide ({why})"
                    self._tiles_decided = True
        return self._tiles

    def reset_cache(self, cache_bytes: int = tiff_tiles.CACHE_BYTES) -> None:
        """Forget every decoded tile, as for a slide never read (timings that must decode again)."""
        import openslide

        self._osr.set_cache(openslide.OpenSlideCache(int(cache_bytes)))
        if self._tiles is not None:
            self._tiles.reset_cache(cache_bytes)

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        w, h = self.dimensions
        scale = max_size / max(w, h)
        return _rgba_on_white(np.asarray(self._osr.get_thumbnail((max(1, int(w * scale)), max(1, int(h * scale))))
                                         .convert("RGBA")))

    def close(self) -> None:
        self._osr.close()
        if self._tiles is not None:
            self._tiles.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Slide({self.path.name}, {self.dimensions[0]}x{self.dimensions[1]} px, "
                f"{self.level_count} level(s), mpp={self.mpp:.4f} from {self.mpp_source})")


def _rgba_on_white(rgba: np.ndarray) -> np.ndarray:
    if rgba.shape[-1] == 3:
        return rgba.astype(np.uint8)
    if rgba[..., 3].min() == 255:  # opaque (inside the scanned area): a view, no blending (half of a read's cost)
        return np.ascontiguousarray(rgba[..., :3])
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def open_slide(path: str | os.PathLike, mpp: float | None = None) -> Slide:
    """Open an .svs / pyramidal TIFF; ``mpp`` overrides (and is required when the file lacks it)."""
    return Slide(path, mpp)


# Tissue -------------------------------------------------------------------------------
@dataclass
class TissueMask:
    mask: np.ndarray        # bool (h, w) on a downsampled grid
    downsample: float       # level-0 pixels per mask pixel
    threshold: float        # saturation threshold used


def tissue_mask(slide: Slide, mask_um_per_px: float = 8.0, min_object_um2: float = 5000.0,
                min_saturation: float = 0.05) -> TissueMask:
    """Tissue = Otsu threshold on HSV saturation of a low-resolution view, cleaned up.

    H&E-stained tissue is saturated, glass is grey-white. The threshold never drops below
    ``min_saturation`` (an all-glass view has no tissue, not half of it); objects smaller than
    ``min_object_um2`` (dust, pen specks) and holes of that size are removed.
    """
    from scipy import ndimage as ndi
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_holes, remove_small_objects

    w, h = slide.dimensions
    downsample = max(1.0, mask_um_per_px / slide.mpp)
    view = slide.thumbnail(max_size=max(8, int(round(max(w, h) / downsample))))
    downsample = w / view.shape[1]
    saturation = rgb2hsv(view)[..., 1]
    try:
        threshold = max(float(threshold_otsu(saturation)), min_saturation)
    except ValueError:  # a constant image
        threshold = min_saturation
    mask = ndi.binary_closing(saturation > threshold, structure=np.ones((3, 3)), iterations=1)
    min_px = max(1, int(min_object_um2 / (downsample * slide.mpp) ** 2))
    mask = remove_small_objects(mask, max_size=min_px)
    mask = remove_small_holes(mask, max_size=min_px)
    return TissueMask(mask, downsample, threshold)


# Patch grid -----------------------------------------------------------------------------
@dataclass
class PatchGrid:
    """Tissue patches of one physical size on a regular grid, in level-0 pixels."""

    slide: Slide
    patch_um: float
    patch_px: int             # side in level-0 pixels (patch_um / mpp, rounded)
    size: int                 # output side in pixels after resizing
    coords: np.ndarray        # (n, 2) level-0 (x, y) of each patch's top-left corner
    cells: np.ndarray         # (n, 2) grid (row, col) of each patch
    grid_shape: tuple[int, int]
    tissue_fraction: np.ndarray
    tissue: TissueMask | None

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def effective_patch_um(self) -> float:
        return self.patch_px * self.slide.mpp

    def read(self, i: int) -> np.ndarray:
        x, y = self.coords[i]
        return read_patch(self.slide, int(x), int(y), self.patch_px, self.size)


def patch_grid(slide: Slide, patch_um: float = 50.0, size: int | None = None, tissue: TissueMask | None = None,
               min_tissue: float = 0.5, tissue_only: bool = True) -> PatchGrid:
    """Non-overlapping ``patch_um`` x ``patch_um`` patches covering the tissue.

    A patch is kept when at least ``min_tissue`` of it is tissue (``tissue_only=False``
    keeps every full patch). ``size`` is the output side (default: the native patch_px).
    """
    if patch_um <= 0:
        raise ValueError(f"patch_grid: patch_um must be positive, got {patch_um}")
    patch_px = int(round(patch_um / slide.mpp))
    if patch_px < 1:
        raise ValueError(f"patch_grid({slide.path.name}): {patch_um} um is below one pixel at mpp={slide.mpp}")
    w, h = slide.dimensions
    rows, cols = h // patch_px, w // patch_px
    if tissue_only and tissue is None:
        tissue = tissue_mask(slide)
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    rr, cc = rr.reshape(-1), cc.reshape(-1)
    fractions = (_window_fractions(tissue, cc * patch_px, rr * patch_px, patch_px) if tissue is not None
                 else np.ones(len(rr)))
    keep = fractions >= min_tissue if tissue_only else np.ones(len(rr), dtype=bool)
    coords = np.stack([cc[keep] * patch_px, rr[keep] * patch_px], axis=1)
    cells = np.stack([rr[keep], cc[keep]], axis=1)
    fractions = fractions[keep]
    return PatchGrid(slide, float(patch_um), patch_px, int(size or patch_px),
                     coords.astype(np.int64).reshape(-1, 2), cells.astype(np.int64).reshape(-1, 2),
                     (rows, cols), fractions.astype(np.float64), tissue)


def _window_fractions(tissue: TissueMask, x: np.ndarray, y: np.ndarray, side: int) -> np.ndarray:
    """Tissue fraction of many level-0 squares at once, from an integral image of the mask
    (a Python loop over a million grid cells of a large slide would take seconds)."""
    ds, (mh, mw) = tissue.downsample, tissue.mask.shape
    integral = np.zeros((mh + 1, mw + 1), dtype=np.int64)
    integral[1:, 1:] = tissue.mask.astype(np.int64).cumsum(0).cumsum(1)
    r0 = np.clip(np.floor(y / ds).astype(int), 0, mh)
    r1 = np.clip(np.ceil((y + side) / ds).astype(int), 0, mh)
    c0 = np.clip(np.floor(x / ds).astype(int), 0, mw)
    c1 = np.clip(np.ceil((x + side) / ds).astype(int), 0, mw)
    area = (r1 - r0) * (c1 - c0)
    inside = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return np.where(area > 0, inside / np.maximum(area, 1), 0.0)


def read_patch(slide: Slide, x: int, y: int, patch_px: int, size: int) -> np.ndarray:
    """A level-0 square (x, y, patch_px) resized to ``size``, read from the coarsest level that still
    has at least ``size`` pixels across it (cheaper than always reading level 0)."""
    wanted_downsample = patch_px / size
    level = slide.best_level_for_downsample(max(wanted_downsample, 1.0))
    ds = slide.level_downsamples[level]
    side = max(1, int(round(patch_px / ds)))
    region = slide.read_region((x, y), level, (side, side))
    return resize_images(region[None], size)[0]


def read_patches(grid: "PatchGrid", index) -> np.ndarray:
    """Patches ``index`` of ``grid`` as uint8 (k, size, size, 3), the same pixels as :func:`read_patch`:
    a run of horizontally adjacent cells of one grid row is read as one strip, so each tile under it
    is decoded once per run rather than once per patch (whole-slide maps read in raster order)."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    slide, patch_px, size = grid.slide, grid.patch_px, grid.size
    level = slide.best_level_for_downsample(max(patch_px / size, 1.0))
    ds = slide.level_downsamples[level]
    side = patch_px / ds
    if abs(side - round(side)) > 1e-9:  # patches not on whole level pixels: one read each, as read_patch
        return np.stack([grid.read(int(i)) for i in index]) if len(index) else np.zeros((0, size, size, 3), np.uint8)
    side = max(1, int(round(side)))
    out = np.empty((len(index), size, size, 3), dtype=np.uint8)
    start = 0
    while start < len(index):
        end = start + 1
        while (end < len(index) and end - start < 64 and grid.cells[index[end], 0] == grid.cells[index[start], 0]
               and grid.cells[index[end], 1] == grid.cells[index[end - 1], 1] + 1):
            end += 1
        x, y = grid.coords[index[start]]
        strip = slide.read_region((int(x), int(y)), level, (side * (end - start), side))
        patches = strip.reshape(side, end - start, side, 3).transpose(1, 0, 2, 3)  # (k, side, side, 3) view
        out[start:end] = resize_images(patches, size)
        start = end
    return out


def cut_centred_patches(slide_path: str | os.PathLike, centres, patch_um: float = 50.0, size: int = 100,
                        mpp: float | None = None) -> np.ndarray:
    """``patch_um`` squares centred on level-0 ``centres`` [(x, y), ...] of one slide, each resized to
    ``size`` px: uint8 (n, size, size, 3). ``mpp`` overrides (or supplies) the slide's microns per pixel."""
    with open_slide(slide_path, mpp=mpp) as slide:
        side = int(round(patch_um / slide.mpp))
        patches = [read_patch(slide, int(x) - side // 2, int(y) - side // 2, side, size) for x, y in centres]
    return np.stack(patches) if patches else np.zeros((0, size, size, 3), dtype=np.uint8)


def read_region_um(slide: Slide, x_um: float, y_um: float, width_um: float, height_um: float | None = None,
                   size: int | tuple[int, int] | None = None) -> np.ndarray:
    """A region given in microns from the slide origin; ``size`` (px) resizes it, default native."""
    from PIL import Image

    height_um = width_um if height_um is None else height_um
    x, y = int(round(x_um / slide.mpp_x)), int(round(y_um / slide.mpp_y))
    w_px, h_px = max(1, int(round(width_um / slide.mpp_x))), max(1, int(round(height_um / slide.mpp_y)))
    out_w, out_h = (size, size) if isinstance(size, int) else (size or (w_px, h_px))
    level = slide.best_level_for_downsample(max(min(w_px / out_w, h_px / out_h), 1.0))
    ds = slide.level_downsamples[level]
    region = slide.read_region((x, y), level, (max(1, int(round(w_px / ds))), max(1, int(round(h_px / ds)))))
    if region.shape[:2] != (out_h, out_w):
        region = np.asarray(Image.fromarray(region).resize((out_w, out_h), Image.Resampling.BILINEAR))
    return region


# Batched reading with prefetch ----------------------------------------------------------------
_DONE = object()


def iter_batches(grid: PatchGrid, batch_size: int = 32, prefetch: int = 2) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (uint8 (b, size, size, 3) patches, their indices into the grid), read ahead in a thread."""
    if batch_size < 1:
        raise ValueError(f"iter_batches: batch_size must be >= 1, got {batch_size}")
    batches: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def reader() -> None:
        try:
            for start in range(0, len(grid), batch_size):
                if stop.is_set():
                    return
                index = np.arange(start, min(start + batch_size, len(grid)))
                batches.put((read_patches(grid, index), index))
            batches.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            batches.put(exc)

    thread = threading.Thread(target=reader, name=f"wsi-prefetch-{grid.slide.path.name}", daemon=True)
    thread.start()
    try:
        while True:
            item = batches.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                batches.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


def predict_slide(grid: PatchGrid, predict: Callable[[np.ndarray], np.ndarray], batch_size: int = 32,
                  prefetch: int = 2) -> np.ndarray:
    """Apply ``predict`` (uint8 batch -> one value per patch) to every patch of the grid."""
    values = np.full(len(grid), np.nan, dtype=np.float64)
    for images, index in iter_batches(grid, batch_size, prefetch):
        out = np.asarray(predict(images), dtype=np.float64).reshape(-1)
        if len(out) != len(index):
            raise ValueError(f"predict_slide({grid.slide.path.name}): predict returned {len(out)} values "
                             f"for a batch of {len(index)} patches")
        values[index] = out
    return values


def slide_map(grid: PatchGrid, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """Per-patch values -> a (rows, cols) image of the slide; cells without a patch get ``fill``."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(grid):
        raise ValueError(f"slide_map: {len(values)} values for {len(grid)} patches")
    out = np.full(grid.grid_shape, fill, dtype=np.float64)
    if len(grid):
        out[grid.cells[:, 0], grid.cells[:, 1]] = values
    return out


def slide_map_rgb(grid: PatchGrid, values: np.ndarray, cmap: str = "viridis", vmin: float = 0.0,
                  vmax: float = 1.0) -> np.ndarray:
    """The slide map as an RGB uint8 image (off-tissue cells white), one pixel per patch."""
    from matplotlib import colormaps

    grid_values = slide_map(grid, values)
    rgba = colormaps[cmap]((np.nan_to_num(grid_values, nan=vmin) - vmin) / max(vmax - vmin, 1e-12))
    rgb = (rgba[..., :3] * 255).round().astype(np.uint8)
    rgb[np.isnan(grid_values)] = 255
    return rgb


def grid_overlay(grid: PatchGrid, max_size: int = 800, color=(20, 20, 20), tint_tissue: bool = True) -> np.ndarray:
    """A thumbnail with the tissue mask tinted green and every grid patch outlined (for figures)."""
    from PIL import Image, ImageDraw

    thumb = Image.fromarray(grid.slide.thumbnail(max_size))
    scale = thumb.width / grid.slide.dimensions[0]
    if tint_tissue and grid.tissue is not None:
        mask = Image.fromarray(grid.tissue.mask.astype(np.uint8) * 90).resize(thumb.size, Image.Resampling.NEAREST)
        thumb = Image.composite(Image.new("RGB", thumb.size, (0, 160, 60)), thumb, mask)
    draw = ImageDraw.Draw(thumb)
    side = grid.patch_px * scale
    for x, y in grid.coords:
        draw.rectangle([x * scale, y * scale, x * scale + side, y * scale + side], outline=color)
    return np.asarray(thumb)


__all__ = ["DataError", "Slide", "open_slide", "TissueMask", "tissue_mask", "PatchGrid", "patch_grid",
           "read_patch", "read_patches", "cut_centred_patches", "read_region_um",
           "iter_batches", "predict_slide", "slide_map", "slide_map_rgb", "grid_overlay"]
