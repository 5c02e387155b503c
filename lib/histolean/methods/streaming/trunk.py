"""The streaming trunk: forward assembled tile by tile without a graph, backward recomputing each tile.

The input may live off the compute device (a CPU tensor, or a :mod:`.sources` source over a
memory-mapped array or a slide): only one crop at a time is moved to the trunk's device.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .geometry import Geometry, Tile, tile_grid
from .locality import _check_modes, _trace, _walk
from .sources import TileSource


class _Stream(torch.autograd.Function):
    """Output assembled tile by tile without a graph; backward recomputes each tile."""

    @staticmethod
    def forward(ctx, streamer: StreamingTrunk, x, *params: torch.Tensor):
        ctx.streamer = streamer
        if isinstance(x, TileSource):
            ctx.source = x  # read again, crop by crop, in backward
        else:
            ctx.source = None
            ctx.save_for_backward(x)
        return streamer._assemble(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x = ctx.source if ctx.source is not None else ctx.saved_tensors[0]
        need_x = ctx.source is None and ctx.needs_input_grad[1]
        grad_x, grad_params = ctx.streamer._backward_tiles(x, grad_out, need_x, ctx.needs_input_grad[2:])
        return (None, grad_x, *grad_params)


class StreamingTrunk(nn.Module):
    """Behaves like ``layers`` under autograd, with the memory of one tile.

    ``tile_size``: side, in input pixels, of the stride-aligned part of the image a
    step is responsible for; the crop actually processed adds the receptive-field
    context on each side (``crop_size``). ``mixed_precision``: autocast tiles on CUDA
    (no-op on CPU). ``skip_zero_gradient_tiles``: skip the recomputation of tiles whose
    output gradient is exactly zero (exact; a global max-pool head leaves most tiles at
    zero). Batches are streamed one image at a time and accumulated.

    The input ``x`` of ``forward`` is an (N, C, H, W) tensor on any device or a
    :class:`~histolean.methods.streaming.sources.TileSource` (memory-mapped array, slide region); crops
    are moved to the device of the trunk's parameters one at a time, so the image itself
    can stay on the CPU or on disk.

    Results equal the conventional ones up to floating-point rounding. One consequence:
    where a max pool sees an exact tie (flat regions of 8-bit images), rounding can pick
    a different, equally valid element, moving that input gradient to a neighbour pixel.
    """

    def __init__(self, layers: nn.Module | Sequence[nn.Module], tile_size: int, *,
                 mixed_precision: bool = True, skip_zero_gradient_tiles: bool = True):
        super().__init__()
        self.layers = layers if isinstance(layers, nn.Module) else nn.Sequential(*layers)
        if not isinstance(tile_size, int) or tile_size < 1:
            raise ValueError(f"tile_size must be a positive int, got {tile_size!r}")
        self.tile_size = tile_size
        self.mixed_precision = mixed_precision
        self.skip_zero_gradient_tiles = skip_zero_gradient_tiles
        # the traced graph is kept outside nn.Module bookkeeping (no duplicate parameters)
        object.__setattr__(self, "_graph", _trace(self.layers))
        ah, aw, _ = _walk(self._graph, self.layers, None)  # rejects non-local layers now, not mid-training
        self.geometry = Geometry(ah, aw)
        tile_grid(self.geometry, (tile_size, tile_size), (1, 1), tile_size)  # validates tile_size
        self.tiles_processed = 0  # tile computations (forward + recomputation), for benchmarks

    @property
    def crop_size(self) -> tuple[int, int]:
        """Largest input crop a step processes (tile plus context), per axis."""
        out = []
        for a in (self.geometry.h, self.geometry.w):
            left = a.stride * math.ceil(a.pad / a.stride)
            out.append(left + self.tile_size - a.stride - a.pad + a.field)
        return out[0], out[1]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        _, _, hw = _walk(self._graph, self.layers, (height, width))
        return hw

    def tiles(self, height: int, width: int) -> list[Tile]:
        return tile_grid(self.geometry, (height, width), self.output_size(height, width), self.tile_size)

    def extra_repr(self) -> str:
        return (f"tile_size={self.tile_size}, output_stride={self.geometry.output_stride}, "
                f"receptive_field={self.geometry.receptive_field}")

    def forward(self, x) -> torch.Tensor:
        if len(x.shape) != 4:
            raise ValueError(f"StreamingTrunk expects an (N, C, H, W) tensor or a TileSource, got shape "
                             f"{tuple(x.shape)}")
        _check_modes(self.layers)
        params = [p for p in self.layers.parameters() if p.requires_grad]
        if torch.is_grad_enabled() and (x.requires_grad or params):
            return _Stream.apply(self, x, *params)
        with torch.no_grad():
            return self._assemble(x)

    def compute_device(self, x) -> torch.device:
        """Where the tiles run: the trunk's parameters' device (the input's when it has none)."""
        for t in self.layers.parameters():
            return t.device
        for t in self.layers.buffers():
            return t.device
        return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")

    def _crop(self, x, b: int, t: Tile, device: torch.device) -> torch.Tensor:
        if isinstance(x, TileSource):
            return x.read(b, t.crop[0], t.crop[1]).to(device)
        return x[b:b + 1, :, t.crop[0], t.crop[1]].to(device)

    def _autocast(self, device: torch.device):
        return torch.autocast("cuda", enabled=self.mixed_precision and device.type == "cuda")

    def _assemble(self, x) -> torch.Tensor:
        device = self.compute_device(x)
        tiles = self.tiles(x.shape[2], x.shape[3])
        out = None
        for b in range(x.shape[0]):
            for t in tiles:
                with self._autocast(device):
                    y = self.layers(self._crop(x, b, t, device))
                self.tiles_processed += 1
                if out is None:  # in the input's dtype: tiles may run in float16 under autocast
                    h, w = self.output_size(x.shape[2], x.shape[3])
                    out = y.new_empty((x.shape[0], y.shape[1], h, w), dtype=x.dtype)
                out[b:b + 1, :, t.out[0], t.out[1]] = y[:, :, t.keep[0], t.keep[1]]
        return out

    def _backward_tiles(self, x, grad_out, need_x: bool, need_params: Sequence[bool]):
        device = self.compute_device(x)
        params = [p for p in self.layers.parameters() if p.requires_grad]
        wanted = [p for p, need in zip(params, need_params) if need]
        grad_x = torch.zeros_like(x) if need_x else None  # where the input lives
        sums = [torch.zeros_like(p) for p in wanted]
        for b in range(x.shape[0]):
            for t in self.tiles(x.shape[2], x.shape[3]):
                g = grad_out[b:b + 1, :, t.out[0], t.out[1]]
                if self.skip_zero_gradient_tiles and not torch.any(g):
                    continue
                with torch.enable_grad():
                    crop = self._crop(x, b, t, device).detach().requires_grad_(need_x)
                    with self._autocast(device):
                        y = self.layers(crop)[:, :, t.keep[0], t.keep[1]]
                    inputs = ([crop] if need_x else []) + wanted
                    grads = torch.autograd.grad(y, inputs, g.to(y.dtype), allow_unused=True)
                self.tiles_processed += 1
                if need_x:
                    grad_x[b:b + 1, :, t.crop[0], t.crop[1]] += grads[0].to(grad_x.device)
                    grads = grads[1:]
                for acc, gr in zip(sums, grads):
                    if gr is not None:
                        acc += gr
        it = iter(sums)
        return grad_x, [next(it) if need else None for need in need_params]
