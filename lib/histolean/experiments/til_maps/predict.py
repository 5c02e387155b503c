"""uint8 patches -> P(TIL) through one inference backend, and the torch thread count set where the work is.

Backends: eager ``torch``, ``torch_channels_last``, ``torch_compile`` and ``onnxruntime`` (the
network exported once per checkpoint, :mod:`histolean.core.export`). All turn logits into
probabilities with the same numpy code.

torch's intra-op thread count is process-wide, so no constructor here touches it: the code that
does the work sets it for as long as the work lasts, with :func:`torch_threads`.
"""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from histolean.experiments.til_maps.model import TilModel, positive_probability, to_input

BACKENDS = ("torch", "torch_channels_last", "torch_compile", "onnxruntime")
# fastest that works on the 2-core CPU here (notebooks/08_til_maps.ipynb measures all of them)
DEFAULT_BACKEND = "onnxruntime"


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's thread count set to ``threads`` inside the block, the previous count restored after it
    (None: left as it is)."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Predictor:
    """uint8 patches -> P(TIL), through one backend. ``logits(x)`` takes a prepared float batch.

    ``threads``: ONNX Runtime's threads for its session (its own setting, local to the session).
    The torch backends run with the process's thread count: wrap the calls in :func:`torch_threads`.
    """

    def __init__(self, model: TilModel, backend: str = DEFAULT_BACKEND, *, threads: int | None = None,
                 onnx_dir: str | os.PathLike | None = None):
        check_backend(backend)
        import torch

        self.model, self.backend, self.threads = model, backend, threads
        self._fixed_batch: int | None = None
        if backend == "onnxruntime":
            from histolean.core import export

            self._session = export.onnx_session(export_onnx(model, onnx_dir), threads)
            return
        net = model.net.eval()
        if backend == "torch_channels_last":  # on a copy: .to() converts in place, other backends share the net
            net = copy.deepcopy(net).to(memory_format=torch.channels_last)
        elif backend == "torch_compile":
            net = torch.compile(net, dynamic=False)
        self._net = net

    def logits(self, x: np.ndarray) -> np.ndarray:
        if self.backend == "onnxruntime":
            from histolean.core.export import INPUT_NAME

            return self._session.run(None, {INPUT_NAME: x})[0]
        import torch

        n = len(x)
        if self.backend == "torch_compile":
            # a compiled graph is specialised to one batch size: pad short batches instead of recompiling
            self._fixed_batch = self._fixed_batch or n
            if n < self._fixed_batch:
                x = np.concatenate([x, np.zeros((self._fixed_batch - n, *x.shape[1:]), x.dtype)])
        t = torch.from_numpy(x)
        if self.backend == "torch_channels_last":
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self._net(t).float().numpy()[:n]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return positive_probability(self.logits(to_input(images, self.model.mean, self.model.std)))


def onnx_file(model: TilModel, onnx_dir: str | os.PathLike | None = None) -> Path:
    """Where a checkpoint's ONNX export lives (next to it by default), named by its content."""
    folder = Path(onnx_dir) if onnx_dir is not None else model.path.parent
    return folder / f"{model.name}-{model.digest[:12]}.onnx"


def export_onnx(model: TilModel, onnx_dir: str | os.PathLike | None = None) -> Path:
    """The checkpoint's ONNX export, written once (before workers start, so that none exports it again)."""
    from histolean.core import export

    target = onnx_file(model, onnx_dir)
    if not target.is_file():
        export.to_onnx(model.net, model.input_size, target)
    return target
