"""uint8 patches -> P(TIL) through one inference backend of :mod:`histolean.core.backends`, and the
choice of that backend for a slide set ("auto": the fastest whose float32 check passes, measured once).

Backends are ``core.backends``' labels (``torch``, ``torch_channels_last``, ``torch_bf16``,
``torch_compile``, ``onnxruntime``, ``openvino:fp32``, ``openvino:bf16``; a plain ``openvino`` picks
its precision by the CPU) plus ``auto``. This module only adapts a checkpoint (its input size and
normalisation) to them and turns logits into P(TIL); every predictor sets torch's thread count for
the length of its own calls, so nothing here touches the process's setting.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from histolean.core import backends
# torch's thread count set for a block and restored after (one helper for the library)
from histolean.core.backends import torch_threads  # noqa: F401 (re-exported: the workers set it)
from histolean.experiments.til_maps.model import TilModel

AUTO = "auto"
# the labels --backend takes: every backend by name (openvino at the CPU's precision), its precisions, and auto
BACKENDS = (AUTO, *backends.BACKENDS, "openvino:fp32", "openvino:bf16")
# measured on the slides' own patches, once per machine and checkpoint (cached under the output folder)
DEFAULT_BACKEND = AUTO


def check_backend(backend: str) -> None:
    if backend == AUTO:
        return
    try:
        backends.parse_label(backend)
    except ValueError:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}") from None


class Predictor:
    """uint8 patches -> P(TIL) on one backend label (not ``auto``: resolve it with :func:`choose` first).

    ``label``, ``backend`` and ``precision`` name it in rows; ``check`` is the float32 check that
    allowed it (set by :func:`choose`, None for a predictor built directly); ``engine``: the
    ``core.backends`` predictor (uint8 patches -> logits). ``threads``: torch's
    threads during each call, or the runtime's session threads.
    """

    def __init__(self, model: TilModel, backend: str = "torch", *, threads: int | None = None,
                 onnx_dir: str | os.PathLike | None = None, check: dict | None = None):
        check_backend(backend)
        if backend == AUTO:
            raise ValueError("backend 'auto' is a choice to make first: til_maps.choose(model, patches, ...)")
        self.model, self.threads, self.check = model, threads, check
        self.engine = backends.make_predictor(model.net, backend, threads=threads, input_size=model.input_size,
                                                mean=model.mean, std=model.std,
                                                export_dir=onnx_dir if onnx_dir is not None else model.path.parent)
        self.backend, self.precision, self.label = self.engine.backend, self.engine.precision, self.engine.label

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.engine.logits(x)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return backends.positive_probability(self.engine(images))

    def inference(self) -> dict:
        """What rows and outputs record about how the probabilities were computed."""
        return inference_record(self.label, self.precision, self.check)


def inference_record(label: str, precision: str, check: dict | None) -> dict:
    keep = ("max_prob_diff", "label_agreement", "n", "passed", "auc_diff")
    return {"backend": label, "precision": precision,
            "check": None if check is None else {k: check[k] for k in keep if k in check}}


def choose(model: TilModel, patches: np.ndarray, *, backend: str = AUTO, threads: int | None = None,
           cache_dir: str | os.PathLike | None = None, onnx_dir: str | os.PathLike | None = None,
           batch_size: int = 16, candidates=None) -> dict:
    """The backend to map with: ``backends.choose_backend`` on ``patches`` (held-out real patches of a
    slide): the fastest label whose check against eager float32 passes, cached in ``cache_dir`` per
    checkpoint and machine. An explicit ``backend`` is checked but not timed. Returns the choice
    (``label``, ``precision``, ``checks``, ...)."""
    check_backend(backend)
    patches = np.asarray(patches)
    if not len(patches):
        raise ValueError("choosing a backend needs at least one tissue patch")
    kwargs = dict(threads=threads, input_size=model.input_size, mean=model.mean, std=model.std,
                  export_dir=onnx_dir if onnx_dir is not None else model.path.parent)
    return backends.choose_backend(model.net, patches[:batch_size], candidates=candidates, check_batch=patches,
                                   cache_dir=cache_dir, key=f"til_maps-{model.name}-{model.digest[:12]}",
                                   override=None if backend == AUTO else backend, **kwargs)


def predictor_for(model: TilModel, choice: dict, *, threads: int | None = None,
                  onnx_dir: str | os.PathLike | None = None) -> Predictor:
    """The predictor a :func:`choose` choice names, carrying the check that allowed it."""
    return Predictor(model, choice["label"], threads=threads, onnx_dir=onnx_dir,
                     check=choice["checks"].get(choice["label"]))


def onnx_file(model: TilModel, onnx_dir: str | os.PathLike | None = None) -> Path:
    """Where the checkpoint's ONNX export lives (``core.export.cached_onnx``: named by the network's content)."""
    from histolean.core import export

    return export.cached_onnx(model.net, model.input_size, onnx_dir if onnx_dir is not None else model.path.parent)
