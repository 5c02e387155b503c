"""Tile geometry: what input interval each output position of a chain of local layers reads,
and the tiles that cover a trunk's output exactly once (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass


class NonLocalLayerError(ValueError):
    """A layer in the streamed trunk needs more than a local neighbourhood of its input."""


# ---------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Axis:
    """Along one axis, output ``j`` reads input ``[j*stride - pad, j*stride - pad + field - 1]``."""

    stride: int = 1
    pad: int = 0
    field: int = 1

    def then(self, nxt: Axis) -> Axis:
        """This mapping followed by ``nxt``."""
        return Axis(self.stride * nxt.stride, nxt.pad * self.stride + self.pad,
                    (nxt.field - 1) * self.stride + self.field)

    def merge(self, other: Axis, where: str) -> Axis:
        """Two branches that are added or concatenated: the union of their input intervals."""
        if self.stride != other.stride:
            raise NonLocalLayerError(f"{where}: merges branches with output strides {self.stride} and "
                                     f"{other.stride}; streaming needs equal strides on every branch")
        pad = max(self.pad, other.pad)
        right = max(self.field - self.pad, other.field - other.pad)
        return Axis(self.stride, pad, pad + right)

    @property
    def overlap(self) -> tuple[int, int]:
        """Input context a tile needs beyond its own ``stride``-aligned span, (before, after)."""
        return self.pad, max(0, self.field - self.stride - self.pad)


@dataclass(frozen=True)
class Geometry:
    """Receptive-field geometry of a trunk along height and width."""

    h: Axis
    w: Axis

    @property
    def output_stride(self) -> tuple[int, int]:
        return self.h.stride, self.w.stride

    @property
    def receptive_field(self) -> tuple[int, int]:
        return self.h.field, self.w.field


@dataclass(frozen=True)
class _Window:
    """One sliding-window layer along one axis, as torch defines it."""

    kernel: int
    stride: int
    pad: int
    dilation: int = 1
    ceil_mode: bool = False

    def axis(self) -> Axis:
        return Axis(self.stride, self.pad, self.dilation * (self.kernel - 1) + 1)

    def out_len(self, n: int) -> int:
        span = n + 2 * self.pad - self.dilation * (self.kernel - 1) - 1
        if not self.ceil_mode:
            return span // self.stride + 1
        out = -(-span // self.stride) + 1
        if (out - 1) * self.stride >= n + self.pad:  # torch: the last window must start inside
            out -= 1
        return out


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class Tile:
    """One streaming step: ``out`` region of the trunk output, computed from the ``crop``
    region of the input; ``keep`` is where ``out`` sits inside the crop's own output."""

    out: tuple[slice, slice]
    crop: tuple[slice, slice]
    keep: tuple[slice, slice]


def _axis_tiles(axis: Axis, n_in: int, n_out: int, tile: int) -> list[tuple[slice, slice, slice]]:
    per_tile = tile // axis.stride
    left = axis.stride * math.ceil(axis.pad / axis.stride)  # context, widened to the stride grid
    spans = []
    for j0 in range(0, n_out, per_tile):
        j1 = min(j0 + per_tile, n_out)
        start = max(0, j0 * axis.stride - left)
        stop = n_in if j1 == n_out else min(n_in, (j1 - 1) * axis.stride - axis.pad + axis.field)
        first = j0 - start // axis.stride
        spans.append((slice(j0, j1), slice(start, stop), slice(first, first + j1 - j0)))
    return spans


def tile_grid(geometry: Geometry, in_hw: tuple[int, int], out_hw: tuple[int, int], tile_size: int) -> list[Tile]:
    """The tiles that cover the output exactly once, row by row."""
    for axis, name in ((geometry.h, "height"), (geometry.w, "width")):
        if tile_size < axis.stride or tile_size % axis.stride:
            raise ValueError(f"tile_size={tile_size} must be a positive multiple of the trunk's output "
                             f"stride along {name} ({axis.stride}), e.g. "
                             f"{max(axis.stride, tile_size // axis.stride * axis.stride)}")
    rows = _axis_tiles(geometry.h, in_hw[0], out_hw[0], tile_size)
    cols = _axis_tiles(geometry.w, in_hw[1], out_hw[1], tile_size)
    return [Tile((ro, co), (rc, cc), (rk, ck)) for ro, rc, rk in rows for co, cc, ck in cols]
