"""Streaming SGD (Pinckaers, van Ginneken & Litjens 2020): train a CNN on images
far larger than memory while holding the activations of only one tile.

``StreamingTrunk(layers, tile_size)`` wraps the local, convolutional first part
of a network. Its forward pass assembles the trunk's output tile by tile under
``no_grad``; its backward pass recomputes each tile with gradients enabled
(gradient checkpointing), feeds it its slice of the output gradient and sums
the weight and input gradients. A plain ``loss.backward()`` through the head
that follows therefore gives the same gradients as the unstreamed network.

How the tiles are cut (the geometry). Along each axis, output index ``j`` of a
chain of local layers reads the input interval
``[j * stride - pad, j * stride - pad + field - 1]`` (composition of every
layer's kernel, stride, padding and dilation; branches are merged by taking the
union of their intervals). The output is cut into tiles of ``tile_size //
stride`` positions; each tile's input *crop* is that interval, widened on the
left to a multiple of the output stride so that every strided layer samples the
same grid as on the full image, and clipped to the image. Output positions
whose interval lies inside the crop are exact; so are those at the image
border, where the layers' zero padding is the real one. Tiles that share
context overlap only in the input, never in the output, so summing the tiles'
gradients is exact, not an approximation.

The package, one idea per module:

* :mod:`.geometry` - ``Axis``, ``Geometry``, ``Tile``, ``tile_grid``: intervals and tiles;
* :mod:`.locality` - which layers may be streamed, ``trunk_geometry`` by tracing;
* :mod:`.trunk` - ``StreamingTrunk``, the tiled forward/backward;
* :mod:`.sources` - inputs kept off the compute device and read tile by tile (a CPU tensor,
  a memory-mapped array, a slide region);
* :mod:`.probes` - the paper's probing method (``probe_geometry``, ``probe_border_effect``);
* :mod:`.network` - the paper's ImageNette network, the benchmark's ``training_step``,
  ``check_equivalence`` and ``saliency``;
* :mod:`.memory` - a step's peak memory in a fresh process, the whole process's peak and the
  input's share of it, and the conventional step projected to sizes that cannot run.

Mosaics of labelled patches are in :mod:`histolean.data.mosaics`; the figures (saliency
overlay, mosaics, memory curves) in :mod:`histolean.study.plots`.
"""

from __future__ import annotations

from histolean.core.models import FrozenBatchNorm2d, freeze_batchnorm  # re-exported: part of the streaming API
from .geometry import Axis, Geometry, NonLocalLayerError, Tile, tile_grid
from .locality import trunk_geometry
from .memory import measure_step, project_conventional
from .network import check_equivalence, imagenette_network, saliency, training_step
from .probes import probe_border_effect, probe_geometry
from .sources import ArraySource, RegionSource, TileSource, slide_source
from .trunk import StreamingTrunk

__all__ = [
    "Axis", "Geometry", "Tile", "StreamingTrunk", "NonLocalLayerError",
    "trunk_geometry", "tile_grid", "probe_geometry", "probe_border_effect",
    "freeze_batchnorm", "FrozenBatchNorm2d", "imagenette_network", "check_equivalence", "training_step",
    "saliency", "measure_step", "project_conventional", "ArraySource", "RegionSource", "TileSource", "slide_source",
]
