"""Inputs that stay off the compute device and are read one crop at a time.

A :class:`StreamingTrunk` accepts, besides a tensor on the compute device:

* a tensor elsewhere (e.g. on the CPU while the trunk runs on CUDA): each crop is copied to
  the trunk's device, the input gradient (when asked for) is accumulated where the input is;
* an :class:`ArraySource` over a numpy array or a memory-mapped file (``np.memmap``): an
  ``np.memmap`` is mapped afresh for every crop and unmapped after it, so the pages read
  never accumulate in the process (its resident set stays that of one crop);
* a :class:`RegionSource` over any region reader, e.g. :func:`slide_source` over an
  OpenSlide / TIFF slide (one image, read at one pyramid level).

Memory is then bounded by the tile, the trunk's output and the model, not by the image.
Sources give no input gradient (saliency needs a tensor input).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

NORM_MEAN = NORM_STD = 0.5  # uint8 pixels -> (v / 255 - 0.5) / 0.5, as histolean.core.train's loaders


def _to_tensor(crop: np.ndarray, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    """(h, w, C) or (C, h, w) pixels -> (1, C, h, w) float tensor; uint8 is normalised like the loaders."""
    t = torch.from_numpy(np.ascontiguousarray(crop))
    if channels_last:
        t = t.permute(2, 0, 1)
    if crop.dtype == np.uint8:
        return ((t.to(dtype) / 255.0 - NORM_MEAN) / NORM_STD)[None]
    return t.to(dtype)[None]


class TileSource:
    """An (N, C, H, W) batch of images the trunk reads crop by crop (subclasses define ``read``)."""

    shape: tuple[int, int, int, int]
    dtype: torch.dtype = torch.float32
    requires_grad = False

    def dim(self) -> int:
        return 4

    def read(self, b: int, rows: slice, cols: slice) -> torch.Tensor:
        """Image ``b``'s crop ``rows x cols`` as a (1, C, h, w) CPU tensor of ``dtype``."""
        raise NotImplementedError

    def to_tensor(self) -> torch.Tensor:
        """The whole batch as one tensor (for tests and small images)."""
        n, _, h, w = self.shape
        return torch.cat([self.read(b, slice(0, h), slice(0, w)) for b in range(n)])


class ArraySource(TileSource):
    """Images in a numpy array or an ``np.memmap``: (N, H, W, C) (``channels_last``, the image
    convention) or (N, C, H, W); a single image may drop N. uint8 pixels are normalised as the
    loaders do; float pixels are used as they are."""

    def __init__(self, array: np.ndarray, *, channels_last: bool = True, dtype: torch.dtype = torch.float32):
        if isinstance(array, torch.Tensor):
            raise TypeError("ArraySource takes numpy arrays; pass a tensor to the trunk directly")
        array = array if isinstance(array, np.ndarray) else np.asarray(array)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4:
            raise ValueError(f"ArraySource needs (N, H, W, C) or (N, C, H, W) images, got shape {array.shape}")
        self.channels_last, self.dtype = channels_last, dtype
        n, a, b, c = array.shape
        self.shape = (n, c, a, b) if channels_last else (n, a, b, c)
        # a memmap is re-opened per crop (unmapped afterwards): its pages never pile up in the process
        base = array.base if isinstance(array, np.memmap) else None
        self._file = None
        if isinstance(array, np.memmap) and base is not None and type(base).__name__ == "mmap":
            self._file = (array.filename, array.dtype, array.offset, array.shape, "F" if np.isfortran(array) else "C")
            self._array = None
        else:
            self._array = array

    def read(self, b: int, rows: slice, cols: slice) -> torch.Tensor:
        if self._file is not None:
            filename, dtype, offset, shape, order = self._file
            mapped = np.memmap(filename, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)
            crop = self._crop(mapped, b, rows, cols).copy()
            del mapped  # the last reference: unmapped now (the crop is a copy)
        else:
            crop = self._crop(self._array, b, rows, cols)
        return _to_tensor(crop, self.dtype, self.channels_last)

    def _crop(self, array, b, rows, cols):
        return array[b, rows, cols] if self.channels_last else array[b, :, rows, cols]


class RegionSource(TileSource):
    """One image read through ``read_region(x, y, width, height) -> (height, width, C) array``."""

    def __init__(self, read_region: Callable[[int, int, int, int], np.ndarray], height: int, width: int,
                 channels: int = 3, *, dtype: torch.dtype = torch.float32):
        self.read_region, self.dtype = read_region, dtype
        self.shape = (1, channels, int(height), int(width))

    def read(self, b: int, rows: slice, cols: slice) -> torch.Tensor:
        if b != 0:
            raise IndexError(f"a RegionSource holds one image, asked for image {b}")
        crop = np.asarray(self.read_region(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start))
        return _to_tensor(crop, self.dtype, channels_last=True)


def slide_source(slide, level: int = 0, location: tuple[int, int] = (0, 0), size: tuple[int, int] | None = None,
                 ) -> RegionSource:
    """A region of a whole-slide image (``histolean.data.wsi.Slide`` or a path OpenSlide opens) at ``level``.

    ``location``: top-left corner in level-0 pixels; ``size``: (width, height) in pixels of
    ``level`` (default: the rest of the level). Pixels are RGB, read tile by tile.
    """
    from histolean.data import wsi  # slides only when asked for

    slide = slide if isinstance(slide, wsi.Slide) else wsi.open_slide(slide)
    if not 0 <= level < slide.level_count:
        raise ValueError(f"level {level} does not exist in {slide}: it has {slide.level_count} levels")
    down = slide.level_downsamples[level]
    full_w, full_h = slide.level_dimensions[level]
    x0, y0 = location
    width, height = size or (full_w - int(x0 / down), full_h - int(y0 / down))

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        return slide.read_region((int(x0 + x * down), int(y0 + y * down)), level, (w, h))

    return RegionSource(read, height, width, 3)
