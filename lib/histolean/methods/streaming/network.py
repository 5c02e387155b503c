"""The paper's ImageNette network (Table 1), the benchmark's training step on it, and the checks
that compare streaming with conventional training (equivalence, saliency)."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .sources import ArraySource
from .trunk import StreamingTrunk


def imagenette_network(num_classes: int = 10, channels: Iterable[int] = (16, 32, 64, 128, 256),
                       streamed_blocks: int = 4, in_channels: int = 3) -> tuple[nn.Sequential, nn.Sequential]:
    """The paper's ImageNette network (Table 1), split into (trunk, head).

    Five blocks of 3x3 convolution (+ReLU) and 2x2 max pool; the last 10x10 max pool of
    the paper (global at its 320-px input) is a global max pool here so that any image size
    works; then a fully connected layer. The first ``streamed_blocks`` blocks form the trunk.
    """
    channels = list(channels)
    if len(channels) != 5 or not 0 <= streamed_blocks <= 5:
        raise ValueError("imagenette_network needs 5 channel counts and 0..5 streamed blocks")
    blocks, c_in = [], in_channels
    for i, c in enumerate(channels):
        conv = nn.Conv2d(c_in, c, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")  # He et al. 2015, as the paper
        nn.init.zeros_(conv.bias)
        pool = nn.MaxPool2d(2) if i < 4 else nn.AdaptiveMaxPool2d(1)
        blocks.append([conv, nn.ReLU(), pool])
        c_in = c
    trunk = nn.Sequential(*[m for blk in blocks[:streamed_blocks] for m in blk])
    head = nn.Sequential(*[m for blk in blocks[streamed_blocks:] for m in blk])
    if streamed_blocks == 5:
        trunk = nn.Sequential(*list(trunk)[:-1])  # the global pool always runs conventionally
        head = nn.Sequential(nn.AdaptiveMaxPool2d(1))
    head.append(nn.Flatten())
    head.append(nn.Linear(channels[-1], num_classes))
    return trunk, head


def check_equivalence(trunk: nn.Module, head: nn.Module, x: torch.Tensor, target: torch.Tensor,
                      tile_size: int) -> dict[str, float]:
    """Streamed vs conventional: max absolute and relative differences of the trunk output,
    the input gradient and the weight gradients (trunk and head) of a cross-entropy loss."""
    results = {}
    for mode in ("conventional", "streaming"):
        model_trunk = StreamingTrunk(trunk, tile_size) if mode == "streaming" else trunk
        trunk.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        xi = x.detach().clone().requires_grad_(True)
        feats = model_trunk(xi)
        loss = F.cross_entropy(head(feats), target)
        loss.backward()
        grads = [p.grad.detach().clone() for p in list(trunk.parameters()) + list(head.parameters())]
        results[mode] = (feats.detach(), xi.grad.detach(), grads, loss.detach())
    (f0, gx0, gw0, l0), (f1, gx1, gw1, l1) = results["conventional"], results["streaming"]

    def diffs(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        abs_diff = float((a - b).abs().max())
        return abs_diff, abs_diff / max(float(a.abs().max()), 1e-300)

    out = {}
    out["output_abs"], out["output_rel"] = diffs(f0, f1)
    out["input_grad_abs"], out["input_grad_rel"] = diffs(gx0, gx1)
    per_weight = [diffs(a, b) for a, b in zip(gw0, gw1)]
    out["weight_grad_abs"] = max(d[0] for d in per_weight)
    out["weight_grad_rel"] = max(d[1] for d in per_weight)
    out["loss_abs"] = abs(float(l0 - l1))
    return out


def saliency(model: nn.Module, x: torch.Tensor, target_class: int = 1) -> np.ndarray:
    """Saliency map (Simonyan et al. 2013): |d logit / d input|, max over colour channels,
    computed through the streaming backward (input gradients only)."""
    was_training = model.training
    model.eval()
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        x = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x)[:, target_class].sum(), x)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return g.abs().amax(1).cpu().numpy()


INPUT_PLACES = ("device", "cpu", "memmap")


def training_step(image_size: int, tile_size: int | None, *, channels: Sequence[int] = (8, 16, 32, 64, 128),
                  batch: int = 1, device: str = "cpu", seed: int = 0, skip_zero_gradient_tiles: bool = False,
                  input_on: str = "device") -> Callable[[], float]:
    """Workload for memory/time benchmarks: one SGD step of the ImageNette network with all
    five conv blocks streamed (``tile_size``) or conventional (``tile_size=None``) on a
    random ``image_size``^2 image. Model, image and optimiser are allocated here, before
    the step, so a benchmark can measure the step alone.

    ``input_on``: where the image lives - "device" (a float32 tensor on ``device``), "cpu" (a
    float32 CPU tensor; crops are copied to ``device``) or "memmap" (uint8 pixels in a file,
    mapped crop by crop; streaming only). The file is unlinked at once and read through its
    open descriptor, so nothing is left behind even if the process is killed.
    """
    if input_on not in INPUT_PLACES:
        raise ValueError(f"input_on must be one of {INPUT_PLACES}, got {input_on!r}")
    if input_on != "device" and not tile_size:
        raise ValueError("only a streamed step can read its input off the device (tile_size is None)")
    torch.manual_seed(seed)
    trunk, head = imagenette_network(2, channels, streamed_blocks=5)
    body = StreamingTrunk(trunk, tile_size, skip_zero_gradient_tiles=skip_zero_gradient_tiles) \
        if tile_size else trunk
    model = nn.Sequential(body, head).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if input_on == "memmap":
        x = _random_image_file(batch, image_size, seed)
    else:
        x = torch.rand(batch, 3, image_size, image_size, device=device if input_on == "device" else "cpu")
    y = torch.randint(0, 2, (batch,), device=device)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    step.input = x  # keeps the file descriptor of a memmap input open as long as the step lives
    return step


def _random_image_file(batch: int, size: int, seed: int) -> ArraySource:
    """Random uint8 (batch, size, size, 3) pixels written to an unlinked temporary file, as a memmap source.

    Written with plain writes in row blocks (never mapped while writing), so neither the
    image nor its pages count in this process's memory.
    """
    import os
    import tempfile

    rng = np.random.default_rng(seed)
    fd, path = tempfile.mkstemp(prefix="histolean_image_", suffix=".u8")
    os.unlink(path)  # the open descriptor keeps the data; nothing remains on disk after the process
    rows = max(1, (64 << 20) // (size * 3))
    with os.fdopen(os.dup(fd), "wb") as f:
        for _ in range(batch):
            for r in range(0, size, rows):
                f.write(rng.integers(0, 256, (min(rows, size - r), size, 3), dtype=np.uint8).tobytes())
    source = ArraySource(np.memmap(f"/proc/self/fd/{fd}", dtype=np.uint8, mode="r", shape=(batch, size, size, 3)))
    source.fd = fd
    return source
