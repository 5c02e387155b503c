"""The same streaming training step through lightstream (the maintained reference on PyPI),
for ``streaming_memory.py`` to measure side by side with histolean's. Needs the optional
``bench`` extra (``pip install -e '.[bench]'``: lightstream + lightning)."""

from __future__ import annotations

import tempfile
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from histolean import streaming


def lightstream_training_step(image_size: int, tile_size: int, *, channels: Sequence[int] = (8, 16, 32, 64, 128),
                              batch: int = 1, device: str = "cpu", seed: int = 0) -> Callable[[], float]:
    """One SGD step of the ImageNette network with all five conv blocks streamed by lightstream:
    its forward gives the trunk output without a graph; the head's gradient is then pushed back
    through ``backward_streaming``. Everything but the step is built here, as in
    ``histolean.methods.streaming.training_step``."""
    from lightstream.modules.streaming import StreamingModule

    torch.manual_seed(seed)
    trunk, head = streaming.imagenette_network(2, channels, streamed_blocks=5)
    # lightstream writes a tile cache next to its working directory: keep it out of the project
    cache = tempfile.mkdtemp(prefix="lightstream_cache_")
    body = StreamingModule(trunk.to(device), tile_size, tile_cache_path=f"{cache}/tile_cache", verbose=False)
    head = head.to(device)
    params = list(trunk.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    x = torch.rand(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, 2, (batch,), device=device)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        out = body(x).detach().requires_grad_(True)
        loss = F.cross_entropy(head(out), y)
        loss.backward()
        body.backward_streaming(x, out.grad)
        opt.step()
        return float(loss.detach())

    return step
