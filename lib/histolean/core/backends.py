"""Inference backends by name, the float32 check a reduced precision must pass, and the choice by measurement.

::

    predict = backends.make_predictor(net, "openvino", precision="auto", threads=2, input_size=181)
    logits = predict(patches_uint8)          # (b, h, w, 3) uint8, or a normalised float (b, 3, h, w)
    check = backends.check_against_fp32(net, "openvino", "bf16", held_out, labels=y)   # record it
    choice = backends.choose_backend(net, batch, check_batch=held_out, cache_dir=d, key="nar_cost")
    predict = backends.predictor_for(net, choice, input_size=181)   # the fastest backend whose check passed

Backends (:data:`BACKENDS`): ``torch`` (eager float32), ``torch_channels_last``, ``torch_bf16`` (bf16
autocast, channels_last), ``torch_compile`` (inductor, one batch size), ``onnxruntime`` (float32) and
``openvino`` with a precision of its own (``fp32`` or ``bf16``: OpenVINO's ``INFERENCE_PRECISION_HINT``;
"auto" picks by :func:`histolean.core.precision.cpu_supports_bf16`). A backend and its precision are
named together by a *label*: the backend's name, or ``"openvino:bf16"``; labels are what ``--backend``
takes and what rows record (with ``backend`` and ``precision`` separately).

Every predictor returns float32 logits. A uint8 batch (b, h, w, 3) is normalised as
``train.ArrayDataset`` does for training (``(x / 255 - mean) / std``, the ``mean``/``std`` parameters,
default 0.5); a float batch (b, 3, h, w) is taken as already normalised. Resizing is the caller's.
ONNX Runtime and OpenVINO run the network's ONNX export, made once per network and kept on disk
under its fingerprint (:func:`histolean.core.export.cached_onnx`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import inspect
import os
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from histolean.core import export, metrics, precision as precisions
from histolean.core.train import NORM_MEAN, NORM_STD
from histolean.util import cache

BACKENDS = ("torch", "torch_channels_last", "torch_bf16", "torch_compile", "onnxruntime", "openvino")
# backends that compute in one precision only; the others (openvino) take fp32 or bf16
FIXED_PRECISION = {"torch": "fp32", "torch_channels_last": "fp32", "torch_bf16": "bf16", "torch_compile": "fp32",
                   "onnxruntime": "fp32"}
REFERENCE = "torch"
# the check a backend must pass against eager float32 before it is used (issue 19)
MAX_PROB_DIFF = 0.03
MIN_AGREEMENT = 0.98


# Names ---------------------------------------------------------------------------------------------
def resolve_precision(backend: str, precision: str = "auto") -> str:
    """The precision ``backend`` runs in for a requested ``precision`` ("auto", "fp32", "bf16")."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    requested = precisions.normalize(precision)
    fixed = FIXED_PRECISION.get(backend)
    if fixed is not None:
        if requested not in ("auto", fixed):
            other = "torch_bf16 or openvino:bf16" if requested == "bf16" else "torch or openvino:fp32"
            raise ValueError(f"backend {backend!r} computes in {fixed} only, not {requested}; use {other}")
        return fixed
    return precisions.resolve(requested, "cpu")


def label(backend: str, precision: str = "auto") -> str:
    """The name of a backend with its precision: ``"torch_bf16"``, ``"openvino:bf16"``."""
    used = resolve_precision(backend, precision)
    return backend if backend in FIXED_PRECISION else f"{backend}:{used}"


def parse_label(text: str) -> tuple[str, str]:
    """``"openvino:bf16"`` -> ("openvino", "bf16"); ``"openvino"`` -> ("openvino", "auto"); checked."""
    backend, _, precision = str(text).partition(":")
    precision = precision or "auto"
    resolve_precision(backend, precision)
    return backend, precisions.normalize(precision)


def available(include_compile: bool = False) -> list[str]:
    """Labels of the backends usable on this machine: bf16 ones only where the CPU has bf16 units,
    runtimes only where installed; ``torch_compile`` (minutes of compiling per network) on request."""
    bf16 = precisions.cpu_supports_bf16()
    out = ["torch", "torch_channels_last"] + (["torch_bf16"] if bf16 else [])
    if include_compile:
        out.append("torch_compile")
    if importlib.util.find_spec("onnxruntime") is not None:
        out.append("onnxruntime")
    if importlib.util.find_spec("openvino") is not None:
        out += ["openvino:fp32"] + (["openvino:bf16"] if bf16 else [])
    return out


def runnable(labels, include_compile: bool = False) -> list[str]:
    """Those of ``labels`` this machine runs (:func:`available`), in their order; ``openvino`` and
    ``openvino:auto`` count as the precision the CPU gives them."""
    here = set(available(include_compile))
    return [b for b in labels if label(*parse_label(b)) in here]


# Predictors ----------------------------------------------------------------------------------------
def to_input(batch, mean=NORM_MEAN, std=NORM_STD) -> np.ndarray:
    """uint8 (b, h, w, 3) -> normalised float32 (b, 3, h, w); a float batch (b, c, h, w) passes unchanged."""
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    batch = np.asarray(batch)
    if batch.dtype == np.uint8:
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"a uint8 batch must be (b, h, w, 3), got {batch.shape}")
        mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        std = np.asarray(std, dtype=np.float32).reshape(-1)
        x = (batch.astype(np.float32) / 255.0 - mean) / std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
    if batch.ndim != 4:
        raise ValueError(f"a float batch must be (b, c, h, w), got {batch.shape}")
    return np.ascontiguousarray(batch, dtype=np.float32)


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to ``threads`` for one call (no change, no cost, when equal)."""
    before = torch.get_num_threads()
    if not threads or int(threads) == before:
        yield
        return
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Predictor:
    """One network on one backend: ``predict(batch) -> float32 logits`` (see the module notes for inputs).

    ``backend``, ``precision`` (resolved: "fp32" or "bf16") and ``label`` name it in rows.
    ``torch_compile`` and ``openvino`` run one batch size (``batch_size``, default the first batch's):
    other batches are cut into pieces of that size and the last one padded, so nothing is compiled twice.
    """

    def __init__(self, module: nn.Module, backend: str = REFERENCE, precision: str = "auto", *,
                 threads: int | None = None, input_size: int | None = None, mean=NORM_MEAN, std=NORM_STD,
                 export_dir: str | os.PathLike | None = None, batch_size: int | None = None):
        self.precision = resolve_precision(backend, precision)
        self.backend, self.threads = backend, threads
        self.label = label(backend, self.precision)
        self.mean, self.std = mean, std
        self.batch_size = int(batch_size) if batch_size else None
        self.input_size = int(input_size) if input_size else _spec_input_size(module)
        net = module.eval()
        self.export_path: Path | None = None
        if backend in ("onnxruntime", "openvino"):
            if self.input_size is None:
                raise ValueError(f"backend {backend!r} exports the network: give its input_size")
            self.export_path = export.cached_onnx(net, self.input_size, export_dir)
            if backend == "onnxruntime":
                self._session = export.onnx_session(self.export_path, threads)
            else:  # compiled for one batch size, known at the first call unless given
                self._compiled = None
                if self.batch_size:
                    self._compile_openvino()
            return
        if backend in ("torch_channels_last", "torch_bf16"):  # on a copy: .to() converts in place
            net = copy.deepcopy(net).to(memory_format=torch.channels_last)
        elif backend == "torch_compile":
            net = torch.compile(net, dynamic=False)
        self._net = net
        self._device = next((p.device for p in module.parameters()), torch.device("cpu"))

    def __call__(self, batch) -> np.ndarray:
        return self.logits(to_input(batch, self.mean, self.std))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of a prepared (normalised float32, b x c x h x w) batch."""
        if self.backend in ("torch_compile", "openvino"):
            return self._fixed_batches(x)
        return self._run(x)

    def _fixed_batches(self, x: np.ndarray) -> np.ndarray:
        size = self.batch_size = self.batch_size or max(len(x), 1)
        out = []
        for start in range(0, max(len(x), 1), size):   # an empty batch: one padded call, nothing kept
            part = x[start:start + size]
            n = len(part)
            if n < size:
                part = np.concatenate([part, np.zeros((size - n, *part.shape[1:]), part.dtype)])
            out.append(self._run(part)[:n])
        return np.concatenate(out)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.backend == "onnxruntime":
            return self._session.run(None, {export.INPUT_NAME: x})[0]
        if self.backend == "openvino":
            if self._compiled is None:
                self._compile_openvino()
            return np.asarray(self._compiled(x)[0], dtype=np.float32)
        t = torch.from_numpy(x).to(self._device)
        if self.backend in ("torch_channels_last", "torch_bf16"):
            t = t.contiguous(memory_format=torch.channels_last)
        with torch_threads(self.threads), torch.inference_mode(), precisions.autocast(self.precision,
                                                                                        self._device.type):
            return self._net(t).float().cpu().numpy()

    def _compile_openvino(self) -> None:
        self._compiled = export.openvino_model(self.export_path, self.precision, self.threads, self.batch_size,
                                               self.input_size)

    def __repr__(self) -> str:
        return f"Predictor({self.label}, threads={self.threads}, input_size={self.input_size})"


def _spec_input_size(module: nn.Module) -> int | None:
    spec = getattr(module, "spec", None)
    return int(spec.input_size) if spec is not None and getattr(spec, "input_size", None) else None


def make_predictor(module: nn.Module, backend: str = REFERENCE, precision: str = "auto", threads: int | None = None,
                   input_size: int | None = None, **kwargs) -> Predictor:
    """``module`` on ``backend`` (a name of :data:`BACKENDS` or a label such as ``"openvino:bf16"``):
    a callable ``predict(batch) -> logits``. ``precision``: "auto" (bf16 where the backend has it and
    the CPU computes it, else fp32), "fp32" or "bf16". ``input_size`` (default: the network's spec) is
    needed by the exporting backends; ``mean``, ``std``, ``export_dir`` and ``batch_size`` go to
    :class:`Predictor`."""
    if ":" in str(backend):
        backend, label_precision = parse_label(backend)
        if precisions.normalize(precision) not in ("auto", label_precision):
            raise ValueError(f"backend label {backend}:{label_precision} and precision {precision!r} disagree")
        precision = label_precision
    return Predictor(module, backend, precision, threads=threads, input_size=input_size, **kwargs)


def predictor_for(module: nn.Module, choice: dict, **kwargs) -> Predictor:
    """The predictor that :func:`choose_backend`'s ``choice`` names."""
    return make_predictor(module, choice["backend"], choice["precision"], **kwargs)


# The float32 check ---------------------------------------------------------------------------------
def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """(b, k) class probabilities in float64: softmax of k >= 2 logits, [1 - p, p] from one logit."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 2 and logits.shape[1] > 1:
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    p = 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
    return np.stack([1.0 - p, p], axis=1)


def positive_probability(logits: np.ndarray) -> np.ndarray:
    """P(class 1) in float64: softmax of two logits, sigmoid of one (what slide maps and AUCs use)."""
    return class_probabilities(logits)[:, 1]


def _predict_all(predict: Callable, batch, chunk: int) -> np.ndarray:
    return np.concatenate([np.asarray(predict(batch[i:i + chunk]), dtype=np.float32)
                           for i in range(0, len(batch), chunk)])


def check_against_fp32(module: nn.Module, backend: str | Callable, precision: str = "auto", batch=None,
                       labels=None, *, reference: np.ndarray | None = None, chunk: int = 32,
                       max_prob_diff: float = MAX_PROB_DIFF, min_agreement: float = MIN_AGREEMENT,
                       **predictor_kwargs) -> dict:
    """Predictions of ``backend`` against eager float32 torch on ``batch`` (held-out real patches).

    ``backend``: a name or label (built by :func:`make_predictor` with ``precision`` and
    ``predictor_kwargs``) or any callable ``batch -> logits``. ``reference``: eager float32 logits of
    ``batch`` when already computed. Returns ``max_prob_diff`` (largest class-probability difference),
    ``label_agreement`` (share of equal argmax labels), with ``labels`` ``auc_fp32``, ``auc`` and
    ``auc_diff`` (binary tasks), and ``passed``: ``max_prob_diff <= 0.03`` and agreement >= 0.98.
    Record the dict beside the results it licenses.
    """
    if batch is None or len(batch) == 0:
        raise ValueError("check_against_fp32 needs a non-empty batch of patches")
    kwargs = {k: v for k, v in predictor_kwargs.items() if k in inspect.signature(Predictor).parameters}
    if callable(backend) and not isinstance(backend, str):
        predict = backend
        name = getattr(backend, "label", getattr(backend, "__name__", type(backend).__name__))
        used = getattr(backend, "precision", precisions.normalize(precision))
    else:
        predict = make_predictor(module, backend, precision, **kwargs)
        name, used = predict.label, predict.precision
    if reference is None:
        reference = _predict_all(make_predictor(module, REFERENCE, "fp32", **kwargs), batch, chunk)
    got = _predict_all(predict, batch, chunk)
    if got.shape != np.shape(reference):
        raise ValueError(f"backend {name}: logits of shape {got.shape}, float32 gave {np.shape(reference)}")
    p_ref, p_got = class_probabilities(reference), class_probabilities(got)
    diff = float(np.abs(p_got - p_ref).max())
    agreement = float(np.mean(p_got.argmax(1) == p_ref.argmax(1)))
    out = {"label": name, "precision": used, "n": int(len(batch)), "max_prob_diff": diff,
           "label_agreement": agreement, "max_prob_diff_limit": max_prob_diff, "min_agreement": min_agreement}
    if labels is not None and p_ref.shape[1] == 2 and len(np.unique(labels)) == 2:
        auc_ref, auc_got = metrics.auc(labels, p_ref[:, 1]), metrics.auc(labels, p_got[:, 1])
        auc_ref, auc_got = float(auc_ref), float(auc_got)
        out.update(auc_fp32=auc_ref, auc=auc_got, auc_diff=auc_got - auc_ref)
    out["passed"] = bool(np.isfinite(diff) and diff <= max_prob_diff and agreement >= min_agreement)
    return out


# The choice by measurement -------------------------------------------------------------------------
def _record_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / f"backend-choice-{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)}.json"


def choose_backend(module: nn.Module, example_batch, candidates: Iterable[str] | None = None, check_batch=None,
                   cache_dir: str | os.PathLike | None = None, key: str = "default", *, check_labels=None,
                   threads: int | None = None, input_size: int | None = None, repeats: int = 3, warmup: int = 1,
                   override: str | None = None, predictors: dict[str, Callable] | None = None,
                   timer: Callable | None = None, **predictor_kwargs) -> dict:
    """The fastest backend on this machine whose float32 check passes, measured once per ``key``
    (a benchmark) and machine.

    Each candidate label (default :func:`available`) is built, checked against eager float32 on
    ``check_batch`` (default ``example_batch``; held-out real patches are what the check is for), and
    the passing ones are timed on ``example_batch`` side by side (:func:`histolean.core.measure.
    compare_speed`: interleaved rounds, median). With ``cache_dir`` the choice is stored in
    ``backend-choice-<key>.json`` under a key of the machine (:func:`histolean.core.precision.machine`),
    the candidates, the batch shape and this module's code, and reused while they stay the same.
    ``override`` (a label, from ``--backend``) is checked but neither timed nor cached.
    ``predictors`` (label -> callable) and ``timer`` replace the built predictors and the timer (tests).

    Returns ``backend``, ``precision``, ``label``, ``chosen_by`` ("measurement" or "override"),
    ``per_s`` and ``speedup`` (against eager torch or the first candidate) per timed label, ``checks``
    (label -> :func:`check_against_fp32`'s dict), ``failed`` (label -> why it could not run),
    ``machine``, ``key`` and ``from_cache``.
    """
    check_batch = example_batch if check_batch is None else check_batch
    kwargs = dict(threads=threads, input_size=input_size, **predictor_kwargs)
    if override is not None:
        backend, precision = parse_label(override)
        predict = (predictors or {}).get(override) or make_predictor(module, backend, precision, **kwargs)
        check = check_against_fp32(module, predict, precision, check_batch, check_labels, **kwargs)
        return {"backend": backend, "precision": resolve_precision(backend, precision), "label": check["label"],
                "chosen_by": "override", "checks": {check["label"]: check}, "per_s": {}, "speedup": {},
                "failed": {}, "machine": precisions.machine(threads), "key": key, "from_cache": False}
    labels = list(candidates) if candidates is not None else available()
    for text in labels:
        parse_label(text)
    shape = list(np.shape(example_batch))
    fingerprint = cache.fingerprint({"key": key, "machine": precisions.machine(threads), "candidates": labels,
                                     "batch": shape, "dtype": str(np.asarray(example_batch).dtype),
                                     "repeats": repeats}, code=[choose_backend, check_against_fp32, Predictor])
    path = _record_path(cache_dir, key) if cache_dir is not None else None
    if path is not None:
        stored = cache.load(path, fingerprint)
        if stored is not None:
            return {**stored, "from_cache": True}
    choice = _measure_choice(module, example_batch, labels, check_batch, check_labels, kwargs, repeats, warmup,
                             predictors or {}, timer)
    choice["key"] = key
    if path is not None:
        cache.save(path, fingerprint, choice)
    return {**choice, "from_cache": False}


def _measure_choice(module, example_batch, labels, check_batch, check_labels, kwargs, repeats, warmup,
                    predictors, timer) -> dict:
    from histolean.core import measure

    timer = timer or measure.compare_speed
    # fixed-batch backends are built for the timed batch, not for the check's pieces
    kwargs = {"batch_size": len(example_batch), **kwargs}
    # the reference is always eager float32, even where a test injects the candidates
    reference = _predict_all(make_predictor(module, REFERENCE, "fp32", **kwargs), check_batch, 32)
    built, checks, failed = {}, {}, {}
    for text in labels:
        try:
            predict = predictors.get(text) or make_predictor(module, text, **kwargs)
            check = check_against_fp32(module, predict, parse_label(text)[1], check_batch, check_labels,
                                       reference=reference, **kwargs)
        except Exception as err:  # a runtime missing or failing on this network: recorded, not chosen
            failed[text] = f"{type(err).__name__}: {err}"
            continue
        checks[text] = check
        if check["passed"]:
            built[text] = predict
        else:
            failed[text] = (f"float32 check failed: max probability difference {check['max_prob_diff']:.3g}, "
                            f"label agreement {check['label_agreement']:.3f}")
    if not built:
        raise RuntimeError(f"no backend could run and pass the float32 check: {failed}")
    calls = {text: (lambda p=predict: p(example_batch)) for text, predict in built.items()}
    ref = REFERENCE if REFERENCE in calls else next(iter(calls))
    timing = timer(calls, reference=ref, repeats=repeats, warmup=warmup, items_per_call=len(example_batch))
    best = max(timing, key=lambda text: timing[text]["per_s"])
    backend, precision = parse_label(best)
    return {"backend": backend, "precision": resolve_precision(backend, precision), "label": best,
            "chosen_by": "measurement", "per_s": {t: float(r["per_s"]) for t, r in timing.items()},
            "speedup": {t: float(r["speedup"]) for t, r in timing.items()}, "reference": ref,
            "checks": checks, "failed": failed, "machine": precisions.machine(kwargs.get("threads"))}


# Speed on a deployment backend, beside eager float32 -----------------------------------------------

def _recording(fn: Callable, log: list) -> Callable:
    """``fn`` that appends the seconds of each of its calls to ``log``: per-round times for paired ratios."""
    def call():
        t0 = time.perf_counter()
        fn()
        log.append(time.perf_counter() - t0)
    return call


def time_on_backends(networks: dict, label: str, *, batch_size: int, repeats: int, warmup: int = 1,
                     threads: int | None = None, export_dir=None, seed: int = 0,
                     reference: str = "original") -> dict[str, dict]:
    """Every network of ``networks`` (variant name -> (module, input size)) on backend ``label`` and in
    eager float32, all timed in ONE interleaved :func:`histolean.core.measure.compare_speed` run.

    Per variant: ``per_s`` (with ``per_s_min``/``per_s_max`` over rounds) and ``per_s_eager_fp32``
    (patches/s, median round), ``speedup`` on ``label``
    and ``speedup_eager_fp32`` against ``reference`` on the same backend (the median over rounds of the
    paired ratio reference time / variant time, with ``_min`` and ``_max``). Where ``label`` is eager
    torch itself each network is timed once and both columns are the same numbers.
    """
    from histolean.core import measure

    rng = np.random.default_rng(seed)
    labels = [label] if label == REFERENCE else [label, REFERENCE]
    calls, logs = {}, {}
    for name, (module, size) in networks.items():
        x = rng.standard_normal((batch_size, 3, int(size), int(size))).astype(np.float32)  # already normalised
        for text in labels:
            predict = make_predictor(module, text, threads=threads, input_size=int(size),
                                     export_dir=export_dir, batch_size=batch_size)
            log = logs[(name, text)] = []
            calls[f"{name}@{text}"] = _recording(lambda p=predict, x=x: p(x), log)
    timing = measure.compare_speed(calls, repeats=repeats, warmup=warmup, items_per_call=batch_size)

    def paired(name: str, text: str) -> dict:
        ref, own = logs[(reference, text)][warmup:], logs[(name, text)][warmup:]
        ratios = [a / b for a, b in zip(ref, own)]
        return {"speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios)}

    out = {}
    for name in networks:
        on, eager = paired(name, label), paired(name, REFERENCE)
        on_t, eager_t = timing[f"{name}@{label}"], timing[f"{name}@{REFERENCE}"]
        out[name] = {"per_s": on_t["per_s"], "per_s_min": batch_size / on_t["max_s"],
                     "per_s_max": batch_size / on_t["min_s"], "per_s_eager_fp32": eager_t["per_s"],
                     **on, "speedup_eager_fp32": eager["speedup"], "speedup_eager_fp32_min": eager["speedup_min"],
                     "speedup_eager_fp32_max": eager["speedup_max"],
                     "batch_size": batch_size, "repeats": repeats, "warmup": warmup}
    return out


def operator_profile(module: nn.Module, label: str, *, input_size: int, batch_size: int, repeats: int = 10,
                     warmup: int = 2, threads: int | None = None, export_dir=None) -> list[dict]:
    """Where an OpenVINO backend spends its time on ``module``: milliseconds per batch by operator type
    (OpenVINO's executed node types, e.g. Convolution, Reorder, Eltwise, MaxPool), mean over ``repeats``
    profiled calls after ``warmup``, with each type's share and node count; largest first."""
    backend, precision = parse_label(label)
    if backend != "openvino":
        raise ValueError(f"operator_profile: OpenVINO labels only (openvino:fp32, openvino:bf16), got {label!r}")
    path = export.cached_onnx(module.eval(), input_size, export_dir)
    compiled = export.openvino_model(path, resolve_precision(backend, precision), threads, batch_size, input_size,
                                     perf_count=True)
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((batch_size, 3, input_size, input_size)).astype(np.float32)
    for _ in range(warmup):
        request.infer({0: x})
    ms: dict[str, float] = {}
    nodes: dict[str, int] = {}
    for _ in range(repeats):
        request.infer({0: x})
        for info in request.profiling_info:
            if str(info.status).endswith("EXECUTED"):   # not NOT_RUN or OPTIMIZED_OUT
                ms[info.node_type] = ms.get(info.node_type, 0.0) + info.real_time.total_seconds() * 1e3 / repeats
                nodes[info.node_type] = nodes.get(info.node_type, 0) + 1
    total = sum(ms.values()) or 1.0
    return [{"operator": op, "ms_per_batch": t, "share": t / total, "nodes": nodes[op] // repeats}
            for op, t in sorted(ms.items(), key=lambda kv: -kv[1])]
