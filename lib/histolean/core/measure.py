"""Peak memory and time of one call (e.g. a training step), measured side by side.

How memory is measured, and why:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
  what was allocated just before the call: the peak of the tensors the call adds
  (the caching allocator's reserve is not counted).
* CPU: torch has no allocator statistics on the CPU, and ``tracemalloc`` does not
  see its buffers. We read the process's resident-set high-water mark (``VmHWM``)
  after resetting it (writing ``5`` to ``/proc/self/clear_refs``, Linux >= 4.0)
  and subtract the resident set just before the call. This counts everything the
  call makes the OS provide: tensors, oneDNN scratch space and allocator slack.
  To keep it honest, glibc's ``malloc`` is set to return large blocks to the OS on
  free (fixed mmap threshold, ``malloc_trim`` before the call), so memory freed by
  earlier work cannot hide the call's own peak; :func:`measure_isolated` goes
  further and runs every configuration in a fresh Python process. :func:`calibration_step` (a call whose peak is known)
  checks the method.

Time: wall clock of each call (after ``torch.cuda.synchronize`` on CUDA). The
first measured call (after ``warmup`` unmeasured ones) gives the memory and
``cold_time_s``; further calls (``repeats``) give ``time_s``, their median.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from histolean.core import models
from histolean.core.arch import Spec

MIB = 2 ** 20
_RESULT_MARK = "HISTOLEAN_BENCH_RESULT "
_CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": str(256 * 1024), "MALLOC_TRIM_THRESHOLD_": str(256 * 1024)}


def _status_kib(field: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@functools.cache
def _glibc():
    """glibc, to make malloc hand large freed blocks back to the OS (None elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD: fixed, so big blocks are mmapped and unmapped on free
        libc.mallopt(-1, 256 * 1024)  # M_TRIM_THRESHOLD
        return libc
    except (OSError, AttributeError):
        return None


def _reset_rss_peak() -> bool:
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)  # return what earlier work freed, so it cannot hide this call's peak
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory(fn: Callable[[], Any], device: str | torch.device = "cpu") -> dict:
    """Run ``fn`` once; return ``peak_bytes`` it added above the memory in use before,
    the ``method`` used, ``time_s`` of the call and its ``result``."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        result = fn()
        torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        process_peak = torch.cuda.max_memory_allocated(device)
        return {"peak_bytes": int(process_peak - before), "method": "cuda_max_memory_allocated", "time_s": elapsed,
                "result": result, "process_peak_bytes": int(process_peak), "baseline_bytes": int(before)}
    if not Path("/proc/self/status").exists():
        raise RuntimeError("CPU peak memory needs Linux /proc (VmHWM); run on Linux or on CUDA")
    # reset first: the reset trims freed memory, so the baseline must be read after it
    reset = _reset_rss_peak()
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    process_peak = _status_kib("VmHWM")
    method = "rss_high_water_mark" if reset else "rss_high_water_mark_not_reset(upper bound unknown)"
    # process_peak_bytes: everything resident at the peak (libraries, model, the input ...), not only the call's
    return {"peak_bytes": max(0, process_peak - before) * 1024, "method": method, "time_s": elapsed,
            "result": result, "process_peak_bytes": process_peak * 1024, "baseline_bytes": before * 1024}


@contextlib.contextmanager
def cpu_budget(cores: int | None):
    """Confine the whole process (every thread it has, and threads started inside) to ``cores`` of the
    CPUs it may use, for the block; yields the CPU ids, or None where nothing was confined (``cores``
    None or not below the CPUs available, or no ``sched_setaffinity``: not Linux).

    A timing with a reader thread beside the model then pays for reading out of the same cores the
    model-only timing had, as a machine mapping one slide per core does."""
    tasks = Path("/proc/self/task")
    if not cores or not hasattr(os, "sched_setaffinity") or not tasks.is_dir():
        yield None
        return
    allowed = sorted(os.sched_getaffinity(0))
    if int(cores) >= len(allowed):
        yield None
        return
    chosen = set(allowed[:int(cores)])

    def set_all(cpus) -> None:
        for tid in tasks.iterdir():
            try:
                os.sched_setaffinity(int(tid.name), cpus)
            except (ProcessLookupError, PermissionError, OSError):  # a thread that ended meanwhile
                pass

    set_all(chosen)
    try:
        yield sorted(chosen)
    finally:
        set_all(set(allowed))


def time_per_call(fn: Callable[[], Any], repeats: int = 3, device: str | torch.device = "cpu") -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn``."""
    device = torch.device(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def compare_speed(calls: dict[str, Callable[[], Any]], *, reference: str | None = None, repeats: int = 5,
                  warmup: int = 1, device: str | torch.device = "cpu", items_per_call: int = 1,
                  setup: dict[str, Callable[[], Any]] | None = None, progress: bool = False) -> dict[str, dict]:
    """Time several calls side by side: interleaved, repeated, warm-up discarded.

    Each round calls every entry of ``calls`` once, in a rotated order, so a busy machine
    slows all of them alike; ``warmup`` rounds are run and thrown away first. For each name
    the result has ``times_s`` (seconds per call, round by round), ``median_s``, ``min_s``,
    ``max_s``, ``per_s`` (items per second from the median, with ``items_per_call`` items in one
    call) and, against ``reference`` (default: the first name), ``speedup`` = the median over rounds
    of reference time / this time in the same round, with ``speedup_min`` and ``speedup_max``.
    ``setup[name]``, when given, runs untimed before every call of ``name`` (a cache emptied or filled).
    Ratios from one run are what a benchmark reports; absolute times vary from run to run.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(calls)
    if not names:
        raise ValueError("compare_speed needs at least one call")
    setup = setup or {}
    if set(setup) - set(names):
        raise ValueError(f"setup for names that are not calls: {sorted(set(setup) - set(names))}")
    reference = names[0] if reference is None else reference
    if reference not in calls:
        raise ValueError(f"reference {reference!r} is not one of the calls {names}")
    times: dict[str, list[float]] = {n: [] for n in names}
    rounds = range(warmup + repeats)
    if progress:
        from tqdm.auto import tqdm
        rounds = tqdm(rounds, desc="timing", unit="round", leave=False)
    for r in rounds:
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if name in setup:
                setup[name]()
            [t] = time_per_call(calls[name], 1, device)
            if r >= warmup:
                times[name].append(t)
    out = {}
    for name in names:
        ts = times[name]
        ratios = [a / b for a, b in zip(times[reference], ts)]
        med = statistics.median(ts)
        out[name] = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "per_s": items_per_call / med,
                     "speedup": statistics.median(ratios), "speedup_min": min(ratios),
                     "speedup_max": max(ratios), "repeats": repeats, "warmup": warmup, "reference": reference,
                     "device": str(device), "times_s": ts}
    return out


def throughput(networks: dict[str, Spec | nn.Module], *, reference: str | None = None, batch_size: int = 16,
               repeats: int = 5, warmup: int = 1, input_sizes: dict[str, int] | None = None,
               device: str | torch.device = "cpu", seed: int = 0, progress: bool = False) -> dict[str, dict]:
    """Inference speed of several networks, measured side by side with :func:`compare_speed`.

    Each entry is a Spec (built with random weights: speed does not depend on their values; specs
    that differ only in input size share one network) or a module with ``input_sizes[name]``.
    Every round runs one ``batch_size`` forward pass of each network, interleaved; the result per
    name is :func:`compare_speed`'s (``per_s`` is patches per second, ``speedup`` is against
    ``reference``, default the first name) plus ``batch_size`` and ``input_size``.
    """
    if batch_size < 1:
        raise ValueError(f"throughput: batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    built: dict[Spec, nn.Module] = {}
    calls, sizes = {}, {}
    for name, net in networks.items():
        if isinstance(net, Spec):
            size, c_in = net.input_size, net.in_channels
            key = _same_network(net)
            if key not in built:
                built[key] = models.build(net, seed=seed).to(device).eval()
            module = built[key]
        elif isinstance(net, nn.Module):
            size = (input_sizes or {}).get(name)
            if size is None:
                raise ValueError(f"throughput: {name!r} is a module; give its input size in input_sizes[{name!r}]")
            module = net.to(device).eval()
            c_in = next(m.in_channels for m in module.modules() if isinstance(m, nn.Conv2d))
        else:
            raise TypeError(f"throughput: {name!r} must be a histolean.core.arch.Spec or a torch.nn.Module, "
                            f"got {type(net).__name__}")
        sizes[name] = int(size)
        calls[name] = _forward(module, torch.rand(batch_size, c_in, int(size), int(size), device=device))
    out = compare_speed(calls, reference=reference, repeats=repeats, warmup=warmup, device=device,
                        items_per_call=batch_size, progress=progress)
    return {name: {**res, "batch_size": batch_size, "input_size": sizes[name]} for name, res in out.items()}


def inference_speed(networks: dict[str, Spec | nn.Module], *, reference: str | None = None, batch_size: int = 16,
                    repeats: int = 5, warmup: int = 1, input_sizes: dict[str, int] | None = None,
                    device: str | torch.device = "cpu", seed: int = 0) -> dict[str, dict]:
    """Throughput at ``batch_size`` and latency at batch 1 of several networks, each timed side by side
    with ``reference`` (two :func:`throughput` measurements), as flat result-row fields per name:
    ``throughput_per_s``, ``batch_ms`` (+ ``_min``/``_max``), ``speedup`` (reference time / this time,
    >= 1 when faster; + ``_min``/``_max``), ``speed_batch``, ``speed_repeats``, ``speed_device``,
    ``latency_ms`` (+ ``_min``/``_max``) and ``latency_speedup``."""
    out: dict[str, dict] = {name: {} for name in networks}
    for batch, kind in ((batch_size, "throughput"), (1, "latency")):
        timed = throughput(networks, reference=reference, batch_size=batch, repeats=repeats, warmup=warmup,
                           input_sizes=input_sizes, device=device, seed=seed)
        for name, t in timed.items():
            if kind == "throughput":
                out[name].update({"throughput_per_s": t["per_s"], "batch_ms": t["median_s"] * 1e3,
                                  "batch_ms_min": t["min_s"] * 1e3, "batch_ms_max": t["max_s"] * 1e3,
                                  "speedup": t["speedup"], "speedup_min": t["speedup_min"],
                                  "speedup_max": t["speedup_max"], "speed_batch": batch, "speed_repeats": repeats,
                                  "speed_device": t["device"]})
            else:
                out[name].update({"latency_ms": t["median_s"] * 1e3, "latency_ms_min": t["min_s"] * 1e3,
                                  "latency_ms_max": t["max_s"] * 1e3, "latency_speedup": t["speedup"]})
    return out


def _same_network(spec: Spec) -> Spec:
    """Specs that build the same weights: global-pool networks do not depend on the input size."""
    import dataclasses

    return dataclasses.replace(spec, input_size=1 if spec.head.pool == "avg" else spec.input_size, variant="")


def _forward(module: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def call():
        with torch.inference_mode():
            return module(x)

    return call


def measure(fn: Callable[[], Any], repeats: int = 1, device: str | torch.device = "cpu", warmup: int = 0) -> dict:
    """Peak memory of the first call after ``warmup`` unmeasured calls, then the time of
    ``repeats - 1`` more calls. Without warm-up the peak includes one-time allocations
    (optimiser state, library initialisation): the first step of a training run."""
    for _ in range(warmup):
        fn()
    mem = peak_memory(fn, device)
    warm = time_per_call(fn, repeats - 1, device) if repeats > 1 else []
    return {"peak_bytes": mem["peak_bytes"], "peak_mib": mem["peak_bytes"] / MIB, "memory_method": mem["method"],
            "process_peak_mib": mem["process_peak_bytes"] / MIB, "baseline_mib": mem["baseline_bytes"] / MIB,
            "cold_time_s": mem["time_s"], "time_s": statistics.median(warm) if warm else mem["time_s"],
            "times_s": warm, "device": str(device), "warmup": warmup}


def measure_isolated(factory: str, kwargs: dict | None = None, *, repeats: int = 1, device: str = "cpu",
                     timeout_s: float = 600, memory_limit_bytes: int | None = None,
                     threads: int | None = None, warmup: int = 0) -> dict:
    """:func:`measure` the callable that ``factory(**kwargs)`` returns, in a fresh process.

    ``factory`` is an import path ``"package.module:function"``; it builds the model and
    inputs (not measured) and returns the call to measure. The child is killed when its
    resident set exceeds ``memory_limit_bytes`` (status ``over_memory_limit``) or when it
    runs past ``timeout_s`` (status ``timeout``); a crash gives status ``failed`` with the
    tail of its error output. Success gives status ``ok`` and :func:`measure`'s fields.
    """
    if ":" not in factory:
        raise ValueError(f"factory must look like 'package.module:function', got {factory!r}")
    spec = {"factory": factory, "kwargs": kwargs or {}, "repeats": repeats, "device": device, "threads": threads,
            "warmup": warmup}
    env = {**os.environ, **_CHILD_ENV}
    src = str(Path(__file__).resolve().parents[2])  # lib/
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    # output goes to files, not pipes: a chatty child must not block on a full pipe while we poll
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen([sys.executable, "-m", "histolean.core.measure", json.dumps(spec)],
                                stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f, text=True, env=env)
        status, peak_rss = _watch(proc, timeout_s, memory_limit_bytes)
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    base = {"factory": factory, "kwargs": kwargs or {}, "process_peak_rss_mib": peak_rss / MIB}
    if status:
        limit = f" of {memory_limit_bytes / MIB:.0f} MiB" if status == "over_memory_limit" else f" of {timeout_s} s"
        return {**base, "status": status, "error": f"{status}{limit}"}
    lines = [ln for ln in out.splitlines() if ln.startswith(_RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        return {**base, "status": "failed", "error": f"exit code {proc.returncode}: {err.strip()[-800:]}"}
    return {**base, "status": "ok", **json.loads(lines[-1][len(_RESULT_MARK):])}


def _watch(proc: subprocess.Popen, timeout_s: float, memory_limit_bytes: int | None) -> tuple[str | None, int]:
    """Poll the child's resident set until it exits; kill it past the memory or time limit."""
    start, peak_rss, status = time.monotonic(), 0, None
    while proc.poll() is None:
        try:
            rss = _status_kib("VmRSS", proc.pid) * 1024
            peak_rss = max(peak_rss, rss)
        except (OSError, KeyError):
            rss = 0
        if memory_limit_bytes is not None and rss > memory_limit_bytes:
            status = "over_memory_limit"
        elif time.monotonic() - start > timeout_s:
            status = "timeout"
        if status:
            proc.kill()
            break
        time.sleep(0.05)
    proc.wait()
    return status, peak_rss


def calibration_step(megabytes: int = 256, hold_s: float = 0.0) -> Callable[[], float]:
    """A call whose true peak is known: it fills a ``megabytes`` MiB tensor, keeps it
    ``hold_s`` seconds (long enough for the watchdog to see it), reads it and frees it."""
    n = megabytes * MIB // 4

    def step() -> float:
        t = torch.ones(n, dtype=torch.float32)
        time.sleep(hold_s)
        return float(t[:: max(1, n // 1000)].sum())

    return step


def _child() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    module, _, name = spec["factory"].partition(":")
    fn = getattr(importlib.import_module(module), name)(**spec["kwargs"])
    res = measure(fn, repeats=int(spec["repeats"]), device=spec["device"], warmup=int(spec.get("warmup", 0)))
    print(_RESULT_MARK + json.dumps(res), flush=True)


if __name__ == "__main__":
    _child()
