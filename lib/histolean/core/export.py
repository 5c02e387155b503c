"""A trained torch network as an ONNX file, run by ONNX Runtime.

::

    path = export.to_onnx(net, input_size=181, path="model.onnx")   # batch size stays free
    session = export.onnx_session(path, threads=2)
    logits = session.run(None, {"image": x})[0]                     # x: float32 (b, 3, s, s)

The file is written atomically and checked against the torch network on a probe
batch before it is kept, so a file on disk always gives the torch logits.
:func:`cached_onnx` exports once per network: the file is named by a fingerprint of the
weights, structure and input size, so a changed network gets a new file. OpenVINO reads the
same file (:func:`openvino_model`): one export, checked once, serves both runtimes.

ONNX Runtime's constant-folding pass is switched off: on trained pre-activation ResNets here
it moved logits by up to 1e-2 (about 1e-6 without it, at the same speed within the noise of
this machine); every other graph optimisation stays on.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from histolean.util import atomic

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
OPSET = 17


def to_onnx(net: nn.Module, input_size: int, path: str | os.PathLike, *, opset: int = OPSET,
            atol: float = 1e-4, rtol: float = 1e-5, any_size: bool = False) -> Path:
    """Export ``net`` (eval mode, 3-channel ``input_size`` squares, any batch) to ``path``; with
    ``any_size`` the height and width stay free too (a network with global pooling: one file serves it at
    every input size, checked at ``input_size`` and at a second size).

    The TorchScript exporter is used: it handles these CNNs in about a second, where the
    torch.export one takes far longer. Outputs differing from torch by more than
    ``atol + rtol * max|output|`` on a probe batch are an error (nothing is written then): the
    relative part because an untrained network (the cost benchmarks time those) can have logits in
    the thousands, where float32 summation order alone moves the last digits.
    """
    path = Path(path)
    net = net.eval()
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(2, 3, int(input_size), int(input_size), generator=generator)
    axes = {0: "batch", 2: "height", 3: "width"} if any_size else {0: "batch"}
    with atomic.atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and constant-folding notes
        torch.onnx.export(net, (probe,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: {0: "batch"}}, opset_version=opset,
                          dynamo=False)
        session = onnx_session(tmp, threads=1)
        probes = [probe] + ([torch.randn(2, 3, int(input_size) + SECOND_SIZE, int(input_size) + SECOND_SIZE,
                                         generator=generator)] if any_size else [])
        for x in probes:
            with torch.no_grad():
                expected = net(x).numpy()
            got = session.run(None, {INPUT_NAME: x.numpy()})[0]
            err = float(np.abs(got - expected).max())
            limit = atol + rtol * float(np.abs(expected).max())
            if not err <= limit:
                raise ValueError(f"ONNX export to {path}: onnxruntime output differs from torch by {err:.2e} "
                                 f"(> {limit:.2g}) at {x.shape[-1]} px; use the torch backend for this network")
    return path


SECOND_SIZE = 32   # px added to the input side for the check of a network exported for any size


def takes_any_size(net: nn.Module, input_size: int) -> bool:
    """Does ``net`` give outputs of the same shape at ``input_size`` and at a larger side (global pooling,
    no size-bound layer)? Then one ONNX file serves it at every input size."""
    sizes = (int(input_size), int(input_size) + SECOND_SIZE)
    try:
        with torch.no_grad():
            shapes = {tuple(net.eval()(torch.zeros(1, 3, s, s)).shape) for s in sizes}
    except (RuntimeError, ValueError):
        return False
    return len(shapes) == 1


EXACT_DISABLED_OPTIMIZERS = ("ConstantFolding",)


def onnx_session(path: str | os.PathLike, threads: int | None = None, exact: bool = True):
    """An onnxruntime CPU session; ``threads`` caps its intra-op threads (default: all cores);
    ``exact`` leaves out the optimisations that change results (see the module notes)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # only errors: the CPU provider's notes are noise here
    # idle threads sleep instead of spinning: spinning steals the cores from the slide reader and
    # from anything timed next to it (eager torch ran several times slower beside a spinning session)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(EXACT_DISABLED_OPTIMIZERS) if exact else None)
    except Exception as err:  # onnxruntime raises its own exception types for a damaged file
        raise ValueError(f"ONNX model {path} cannot be loaded by onnxruntime ({err}); export it again") from None


def network_fingerprint(net: nn.Module, input_size: int | None) -> str:
    """A short hash of ``net``'s structure (its repr), every state tensor (name, dtype, shape, values)
    and the input size (None: any size): equal for the same trained network, different after any change."""
    size = "any" if input_size is None else int(input_size)
    h = hashlib.sha256(f"{net!r}|{size}|opset{OPSET}".encode())
    for name, tensor in net.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def default_export_dir() -> Path:
    """Where exports go when the caller names no folder (shared by processes: names are fingerprints)."""
    return Path(tempfile.gettempdir()) / "histolean-exports"


def cached_onnx(net: nn.Module, input_size: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """``net``'s ONNX file in ``cache_dir`` (default :func:`default_export_dir`), exported only when no
    file with its fingerprint is there (written atomically: a killed export leaves none). A network that
    takes any input size (:func:`takes_any_size`) is exported once for every size: input-reduced variants
    of one network (the same weights at smaller inputs) share its file; the runtimes fix the size at load."""
    folder = Path(cache_dir) if cache_dir is not None else default_export_dir()
    any_size = folder / f"net-{network_fingerprint(net, None)}.onnx"
    if any_size.is_file():
        return any_size
    path = folder / f"net-{network_fingerprint(net, input_size)}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    if takes_any_size(net, input_size):
        return to_onnx(net, input_size, any_size, any_size=True)
    return to_onnx(net, input_size, path)


OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


@functools.cache
def _openvino_core():
    """One OpenVINO Core for the process, never unloaded. The CPU plugin installs its own signal stack
    (sigaltstack) on the thread that loads it and unmaps it when unloaded; unloaded from another thread
    (a Dask worker dropping the last model), it leaves the loading thread's stack pointing at unmapped
    memory, and the next signal there (a SIGCHLD once torch's DataLoader handles it) kills the process
    with SIGSEGV. A plugin that stays loaded keeps that stack valid."""
    import openvino as ov

    return ov.Core()


def openvino_model(path: str | os.PathLike, precision: str = "fp32", threads: int | None = None,
                   batch_size: int | None = None, input_size: int | None = None, perf_count: bool = False):
    """An OpenVINO CPU model compiled from an ONNX file, computing in ``precision`` ("fp32" or "bf16",
    OpenVINO's ``INFERENCE_PRECISION_HINT``) with ``threads`` threads (default: all cores), for
    ``batch_size`` images a call of ``input_size`` squares (static shapes let OpenVINO plan its kernels
    once; None: as the file has it). ``perf_count``: keep per-operator times (OpenVINO's profiling).

    One stream, latency hint: a call uses all its threads on one batch, as the other backends do;
    threads are not pinned to cores, which on a shared machine would fight other processes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"OpenVINO precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
    config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if perf_count:
        config["PERF_COUNT"] = True
    core = _openvino_core()
    try:
        model = core.read_model(str(path))
        if batch_size or input_size:
            shape = model.input(0).get_partial_shape()
            if batch_size:
                shape[0] = int(batch_size)
            if input_size:
                shape[2] = shape[3] = int(input_size)
            model.reshape(shape)
        return core.compile_model(model, "CPU", config)
    except Exception as err:  # OpenVINO raises its own exception types for a damaged file
        raise ValueError(f"ONNX model {path} cannot be compiled by OpenVINO ({err}); export it again") from None
