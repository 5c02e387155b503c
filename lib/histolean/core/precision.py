"""Numerical precision as one setting: what this machine supports, what "auto" picks, the autocast to run.

::

    used = precision.resolve("auto", "cpu")        # "bf16" on a CPU with AVX-512 bf16 / AMX, else "fp32"
    with precision.autocast(used, "cpu"):
        logits = net(x)

Requested precisions: ``"auto"``, ``"fp32"``, ``"bf16"`` (``"f32"``, ``"float32"``, ``"bfloat16"`` are
read as the same). Resolved precisions, the ones results record: ``"fp32"``, ``"bf16"`` and, on CUDA,
``"fp16_amp"`` (the float16 mixed precision with gradient scaling that training has always used there).

bf16 on the CPU runs on its matrix units only where the CPU has them (``avx512_bf16`` or ``amx_bf16``);
elsewhere torch emulates it, slower than float32, so "auto" stays in float32 there. oneDNN's bf16
convolutions are fastest in channels_last, hence :func:`uses_channels_last`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
from pathlib import Path

import torch

REQUESTED = ("auto", "fp32", "bf16")
RESOLVED = ("fp32", "bf16", "fp16_amp")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_ALIASES = {"auto": "auto", "fp32": "fp32", "f32": "fp32", "float32": "fp32",
            "bf16": "bf16", "bfloat16": "bf16"}


def normalize(precision: str) -> str:
    """``"auto"``, ``"fp32"`` or ``"bf16"`` from any accepted spelling; anything else is an error."""
    key = str(precision).lower()
    if key not in _ALIASES:
        raise ValueError(f"precision must be one of {', '.join(REQUESTED)}, got {precision!r}")
    return _ALIASES[key]


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; ("", empty) where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor(), frozenset()
    model, flags = "", frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "model name" and not model:
            model = value.strip()
        elif name == "flags" and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return model or platform.processor(), flags


def cpu_model() -> str:
    return _cpuinfo()[0]


def cpu_flags() -> frozenset[str]:
    return _cpuinfo()[1]


def cpu_supports_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX-512 bf16 or AMX). The one capability test:
    tests simulate another CPU by replacing this function."""
    flags = cpu_flags()
    if flags:
        return any(f in flags for f in BF16_CPU_FLAGS) and torch.backends.mkldnn.is_available()
    try:  # no /proc/cpuinfo (not Linux): ask oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_supports_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve(precision: str = "auto", device: str | torch.device = "cpu", *, amp: bool = True) -> str:
    """The precision to run: ``"fp32"``, ``"bf16"`` or (CUDA only) ``"fp16_amp"``.

    CPU: "auto" is bf16 where :func:`cpu_supports_bf16`, else fp32; an explicit "bf16" is honoured
    everywhere (emulated, and slow, on a CPU without bf16 units). CUDA: "auto" keeps the float16 mixed
    precision (``fp16_amp``; fp32 when ``amp`` is False), "bf16" needs a GPU that has it.
    """
    requested = normalize(precision)
    kind = torch.device(device).type
    if requested == "fp32":
        return "fp32"
    if kind == "cuda":
        if requested == "bf16":
            if not cuda_supports_bf16():
                raise ValueError("precision 'bf16' was asked for, but this GPU has no bf16 support; "
                                 "use 'auto' or 'fp32'")
            return "bf16"
        return "fp16_amp" if amp else "fp32"
    if kind != "cpu":
        return "fp32"
    if requested == "bf16":
        return "bf16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast(resolved: str, device_type: str = "cpu"):
    """The autocast context of a resolved precision (a no-op context for fp32)."""
    if resolved == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if resolved == "fp16_amp":
        return torch.autocast(device_type, dtype=torch.float16)
    if resolved == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"resolved precision must be one of {', '.join(RESOLVED)}, got {resolved!r}")


def uses_channels_last(resolved: str, device_type: str = "cpu") -> bool:
    """bf16 on the CPU runs in channels_last (oneDNN's fast layout for it)."""
    return resolved == "bf16" and device_type == "cpu"


def library_versions() -> dict[str, str]:
    """Versions of the inference libraries that decide speed (absent ones are left out)."""
    import importlib.metadata as md

    out = {"torch": torch.__version__}
    for dist in ("onnxruntime", "openvino"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def machine(threads: int | None = None) -> dict:
    """What a speed measurement depends on: CPU model, a hash of its flags, cores, threads, libraries.
    A cached backend choice is keyed by it, so another machine (or thread count) measures again."""
    return {"cpu": cpu_model(), "cpu_flags": hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:12],
            "bf16": cpu_supports_bf16(), "cores": os.cpu_count(),
            "threads": int(threads) if threads else torch.get_num_threads(), "versions": library_versions()}


def bf16_cpu_hazard(model: torch.nn.Module, sample: torch.Tensor) -> str | None:
    """The first strided, padded convolution of ``model`` that sees a 1-pixel-wide map at ``sample``'s size,
    or None.

    oneDNN's bf16 backward of such a convolution (a 3x3 stride-2 conv on a 1x1 map, as ResNet50V2's last
    stages meet below 64 px inputs) returns NaN weight gradients now and then (torch 2.13, channels_last:
    6 of 30 tries; measured in this repository). "auto" trains those networks in float32.
    """
    seen: list[str] = []

    def hook(name):
        def check(module, inputs, _output):
            if not seen and min(inputs[0].shape[-2:]) == 1:
                seen.append(name)
        return check

    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)
             and max(m.stride) > 1 and (m.padding == "same" or any(p > 0 for p in m.padding if isinstance(p, int)))]
    handles = [m.register_forward_hook(hook(n)) for n, m in convs]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(sample[:1].float())
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return seen[0] if seen else None
