"""Iterative magnitude pruning, layer-wise and network-wide (Mahbod et al. 2022, Algorithm 1).

Train to convergence, then ``log2(CR)`` rounds, each removing the smallest 50% of the weights
that are still there and retraining; after round ``k`` the compression ratio (all prunable
weights / remaining weights) is ``2**k``. *Network-wide* ranks all convolution and dense
weights of a model together; *layer-wise* ranks each layer's own. The masks are
``torch.nn.utils.prune``'s (``global_unstructured`` / ``l1_unstructured``: a pruned weight is
``weight_orig * weight_mask`` and stays zero while retraining); this module adds the schedule,
the accounting and the cost figures:

* :func:`sparsity` -- exact kept / total weights per layer and overall (from the masks);
* :func:`theoretical_speedup` -- dense FLOPs over sparsity-aware FLOPs (each layer's FLOPs times
  its density, the paper's Table 1); it does not depend on the input size of a fully
  convolutional net, since every layer's FLOPs scale with the input area alike;
* :func:`save_sparse` -- the model on disk with pruned weights in CSR storage (int32 indices);
* :func:`dense_copy` -- the pruned model as a plain dense module (zeros in place), whose measured
  CPU time shows what unstructured sparsity buys on ordinary hardware (nothing, by itself);
* :func:`iterative_prune` -- Algorithm 1 with each round's weights, masks and results saved
  atomically (``histolean.util.cache`` records), so a killed run continues at the next round.

A layer-wise CR above the weight count of the smallest layer would leave that layer with no
weight at all (the paper: layer-wise cannot go beyond CR = 2**7 for its U-Net, whose 3x3 head
has 144 weights); :func:`check_compression_ratio` says so before any training. ``keep_dense``
names layers the layer-wise schedule leaves whole (e.g. a tiny output head that would otherwise be
pruned to a handful of weights); network-wide ranking always covers every layer.

:data:`CONTROL` is the same schedule without pruning (each round only retrains): the dense control
trained for the same epochs as each pruned round.
"""

from __future__ import annotations

import copy
import io
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from histolean.util import atomic, cache
from histolean.core import flops

SCHEMES = ("network-wide", "layer-wise")
CONTROL = "dense control"   # iterative_prune's rounds without pruning: retraining only
PRUNABLE = (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every convolution and dense layer, in module order."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no convolution or dense layer to prune")
    return layers


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"pruning scheme must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def rounds_for(cr) -> int:
    """log2(CR) for a compression ratio that is a power of two (1, 2, 4, ..., 512, ...)."""
    if isinstance(cr, bool) or not isinstance(cr, (int, np.integer)) or cr < 1 or (int(cr) & (int(cr) - 1)):
        raise ValueError(f"compression ratio must be a power of two (1, 2, 4, ..., 512): each round halves the "
                         f"remaining weights; got {cr!r}")
    return int(cr).bit_length() - 1


def layerwise_layers(model: nn.Module, keep_dense=()) -> list[tuple[str, nn.Module]]:
    """The layers layer-wise pruning prunes: every prunable layer but those named in ``keep_dense``."""
    layers = prunable_layers(model)
    unknown = set(keep_dense) - {name for name, _ in layers}
    if unknown:
        raise ValueError(f"keep_dense names {sorted(unknown)}, which are not prunable layers of "
                         f"{type(model).__name__}")
    return [(name, m) for name, m in layers if name not in keep_dense]


def max_layerwise_cr(model: nn.Module, keep_dense=()) -> int:
    """The largest power-of-two CR that layer-wise pruning reaches with at least one weight in every layer
    it prunes (all but ``keep_dense``)."""
    smallest = min(m.weight.numel() for _, m in layerwise_layers(model, keep_dense))
    return 1 << (smallest.bit_length() - 1)


def check_compression_ratio(model: nn.Module, scheme: str, cr: int, keep_dense=()) -> int:
    """Validate a target CR for a scheme (or :data:`CONTROL`); returns the number of rounds. Layer-wise
    pruning past the smallest pruned layer's weight count is an error naming the layers it would empty."""
    if scheme != CONTROL:
        check_scheme(scheme)
    rounds = rounds_for(cr)
    if scheme == "layer-wise":
        emptied = sorted(((m.weight.numel(), name) for name, m in layerwise_layers(model, keep_dense)
                          if m.weight.numel() < cr))
        if emptied:
            shown = ", ".join(f"{n} ({k} weights)" for k, n in emptied[:4])
            raise ValueError(f"layer-wise pruning cannot reach CR {cr}: it would keep less than one weight in "
                             f"{len(emptied)} layer(s): {shown}. The largest layer-wise CR for this model is "
                             f"{max_layerwise_cr(model, keep_dense)}; use network-wide pruning beyond it")
    return rounds


def prune_round(model: nn.Module, scheme: str, amount: float = 0.5, keep_dense=()) -> None:
    """Remove the smallest ``amount`` of the weights still present: over the whole model
    (network-wide) or in every layer but ``keep_dense`` (layer-wise). Masks accumulate across rounds."""
    check_scheme(scheme)
    if scheme == "network-wide":
        params = [(m, "weight") for _, m in prunable_layers(model)]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    else:
        for _, m in layerwise_layers(model, keep_dense):
            prune.l1_unstructured(m, "weight", amount=amount)


def _kept(m: nn.Module) -> int:
    mask = getattr(m, "weight_mask", None)
    return int(mask.sum()) if mask is not None else m.weight.numel()


def sparsity(model: nn.Module) -> dict:
    """Exact accounting from the masks: ``layers`` (name, weights, kept, density) and the totals
    ``weights``, ``kept``, ``sparsity`` (fraction removed) and ``cr`` (weights / kept)."""
    layers = [{"layer": name, "weights": m.weight.numel(), "kept": _kept(m)} for name, m in prunable_layers(model)]
    for row in layers:
        row["density"] = row["kept"] / row["weights"]
    total, kept = sum(r["weights"] for r in layers), sum(r["kept"] for r in layers)
    return {"layers": layers, "weights": total, "kept": kept, "sparsity": 1 - kept / total,
            "cr": total / kept if kept else math.inf}


def sparse_flops(model: nn.Module, input_size: int) -> dict:
    """Dense and sparsity-aware FLOPs (each conv/dense layer's FLOPs x its weight density) at ``input_size``."""
    density = {r["layer"]: r["density"] for r in sparsity(model)["layers"]}
    costs = flops.layer_costs(model, input_size)
    dense = sum(c.flops for c in costs)
    sparse = sum(c.flops * density.get(c.name, 1.0) for c in costs)
    return {"dense_flops": dense, "sparse_flops": sparse, "input_size": input_size}


def theoretical_speedup(model: nn.Module, input_size: int = 64) -> float:
    """Dense FLOPs / sparsity-aware FLOPs: the speed-up of hardware that skips every zero weight."""
    f = sparse_flops(model, input_size)
    return f["dense_flops"] / f["sparse_flops"]


def clone(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on pruned modules (their ``weight`` is a computed tensor,
    which deepcopy refuses; the forward pre-hook recomputes it from orig x mask anyway)."""
    for _, m in prunable_layers(model):
        if hasattr(m, "weight_mask") and not m.weight.is_leaf:
            m.weight = m.weight.detach()
    return copy.deepcopy(model)


def dense_copy(model: nn.Module) -> nn.Module:
    """A copy with the masks folded into plain weights (``prune.remove``): zeros stay zeros."""
    twin = clone(model)
    for _, m in prunable_layers(twin):
        if prune.is_pruned(m) and hasattr(m, "weight_mask"):
            prune.remove(m, "weight")
    return twin


def _sparse_state(model: nn.Module) -> dict:
    dense = dense_copy(model)
    pruned = {name for name, m in prunable_layers(model) if hasattr(m, "weight_mask")}
    state = {}
    for key, value in dense.state_dict().items():
        layer = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and layer in pruned:
            with warnings.catch_warnings():  # CSR support is "beta": the warning says nothing about us
                warnings.simplefilter("ignore")
                csr = value.reshape(value.shape[0], -1).to_sparse_csr()
            state[key] = {"shape": list(value.shape), "crow": csr.crow_indices().to(torch.int32),
                          "col": csr.col_indices().to(torch.int32), "values": csr.values()}
        else:
            state[key] = value
    return state


def save_sparse(path: str | os.PathLike, model: nn.Module) -> int:
    """Write the model with its pruned weights in CSR form (float32 values, int32 indices); returns bytes."""
    with atomic.atomic_path(path) as tmp:
        torch.save({"format": "histolean.sparse/1", "state": _sparse_state(model)}, tmp)
    return Path(path).stat().st_size


def load_sparse(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load weights written by :func:`save_sparse` into a dense (unpruned) model of the same architecture."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"sparse model file {path} does not exist") from None
    except Exception as err:
        raise ValueError(f"sparse model file {path} cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(blob, dict) or blob.get("format") != "histolean.sparse/1":
        raise ValueError(f"{path} is not a histolean sparse model file (write it with pruning.save_sparse)")
    state = {}
    for key, value in blob["state"].items():
        if isinstance(value, dict):
            shape = value["shape"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                csr = torch.sparse_csr_tensor(value["crow"].long(), value["col"].long(), value["values"],
                                              size=(shape[0], int(np.prod(shape[1:]))), check_invariants=True)
                value = csr.to_dense().reshape(shape)
        state[key] = value
    model.load_state_dict(state)
    return model


def dense_bytes(model: nn.Module) -> int:
    """Size of ``torch.save`` of the dense state dict (masks folded in): the unpruned storage cost."""
    buf = io.BytesIO()
    torch.save(dense_copy(model).state_dict(), buf)
    return buf.tell()


# --------------------------------------------------------------------------- the schedule

def _ensure_reparametrised(model: nn.Module, state: Mapping) -> None:
    """Give every prunable layer that has a mask in ``state`` ``weight_orig`` / ``weight_mask`` (all-ones
    mask) so a pruned state dict loads into it (layers a schedule kept dense have none)."""
    for name, m in prunable_layers(model):
        if f"{name}.weight_mask" in state and not hasattr(m, "weight_mask"):
            prune.identity(m, "weight")


def _to_saved(value):
    """numpy arrays -> tensors, recursively (checkpoints are read with ``weights_only=True``)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {k: _to_saved(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_saved(v) for v in value]
    return value


def _from_saved(value):
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: _from_saved(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_saved(v) for v in value]
    return value


def save_round(path: str | os.PathLike, models: Mapping[str, nn.Module], result: dict, key: str) -> Path:
    """Atomically write the models' weights and masks with the round's result (plain data, arrays), as a
    ``histolean.util.cache`` record for ``key`` (the run's settings and code)."""
    return cache.save(path, key, {"states": {k: m.state_dict() for k, m in models.items()},
                                  "result": _to_saved(result)})


def load_round(path: str | os.PathLike, models: Mapping[str, nn.Module], key: str) -> dict | None:
    """Load a round saved by :func:`save_round` for ``key`` into ``models`` (in place) and return its result;
    None when there is none for this key. A record that cannot be read is moved aside with a
    ``CorruptRecordWarning`` naming the file (the round is then recomputed)."""
    blob = cache.load(path, key)
    if blob is None:
        return None
    if set(blob["states"]) != set(models):
        raise ValueError(f"pruning round {path} holds models {sorted(blob['states'])}, not {sorted(models)}")
    for name, model in models.items():
        state = blob["states"][name]
        _ensure_reparametrised(model, state)
        model.load_state_dict(state)
    return _from_saved(blob["result"])


def round_key(models: Mapping[str, nn.Module], scheme: str, input_size: int, run_key: str = "",
              keep_dense=()) -> str:
    """The cache key of a pruning round: the caller's ``run_key`` (its training settings and data), the
    scheme and the layers it keeps dense, the models' names and weight counts, and this module's code."""
    shape = {n: sparsity(m)["weights"] for n, m in models.items()}
    return cache.fingerprint({"run": run_key, "scheme": scheme, "input_size": input_size, "models": shape,
                              "keep_dense": sorted(keep_dense)}, code=[sys.modules[__name__]])


def iterative_prune(models: nn.Module | Mapping[str, nn.Module], scheme: str, cr: int, *,
                    retrain: Callable[[str, nn.Module, int], object] | None = None,
                    evaluate: Callable[[Mapping[str, nn.Module], int], dict] | None = None,
                    state_dir: str | os.PathLike | None = None, run_key: str = "", input_size: int = 64,
                    on_round: Callable[[dict], None] | None = None, keep_dense=()) -> list[dict]:
    """Algorithm 1 from trained ``models`` (one module, or several pruned side by side, each ranked on
    its own, e.g. the two branches) up to compression ratio ``cr``.

    Round ``k`` (CR ``2**k``) prunes half of each model's remaining weights by ``scheme``, calls
    ``retrain(name, model, cr)`` for each model, then ``evaluate(models, cr)`` (a dict of plain data
    and arrays). Its result -- ``{"round", "cr", "scheme", "sparsity": {name: ...},
    "speedup": {name: ...}, "evaluation": ...}`` -- is passed to ``on_round`` and returned. With a
    ``state_dir``, each round's models and result are saved atomically as ``<scheme>_cr<CR>.pt``
    (``histolean.util.cache`` records keyed by :func:`round_key`: ``run_key`` must name whatever the
    caller's ``retrain`` and ``evaluate`` depend on); rounds already saved there for the same key are
    loaded instead of recomputed (a killed run resumes), others are recomputed and replaced.

    ``scheme`` :data:`CONTROL` runs the same rounds without pruning (the dense control: same retraining,
    same seeds); ``keep_dense``: layers layer-wise pruning leaves whole.
    """
    models = {"model": models} if isinstance(models, nn.Module) else dict(models)
    rounds = max(check_compression_ratio(m, scheme, cr, keep_dense) for m in models.values())
    record_key = round_key(models, scheme, input_size, run_key, keep_dense)
    results = []
    for k in range(1, rounds + 1):
        ratio = 2 ** k
        path = Path(state_dir) / f"{scheme}_cr{ratio}.pt" if state_dir is not None else None
        result = load_round(path, models, record_key) if path is not None else None
        if result is not None:
            result["resumed"] = True
        else:
            for model in models.values():
                if scheme != CONTROL:
                    prune_round(model, scheme, keep_dense=keep_dense)
            if retrain is not None:
                for name, model in models.items():
                    retrain(name, model, ratio)
            result = {"round": k, "cr": ratio, "scheme": scheme,
                      "sparsity": {n: {key: v for key, v in sparsity(m).items()} for n, m in models.items()},
                      "speedup": {n: theoretical_speedup(m, input_size) for n, m in models.items()},
                      "evaluation": evaluate(models, ratio) if evaluate is not None else None}
            if path is not None:
                save_round(path, models, result, record_key)
            result["resumed"] = False
        results.append(result)
        if on_round is not None:
            on_round(result)
    return results


def speedup_table(model: nn.Module, crs=(2, 4, 8, 16, 32, 64, 128, 256, 512), input_size: int = 64,
                  keep_dense=()) -> list[dict]:
    """Table 1 for one model: theoretical speed-up of both schemes at each CR (pruning copies, no
    retraining: the ranking is by the given weights). Unreachable layer-wise CRs give None."""
    rows = []
    for scheme in SCHEMES:
        twin = clone(model)
        done = 0
        for cr in crs:
            try:
                rounds = check_compression_ratio(twin, scheme, cr, keep_dense)
            except ValueError:
                rows.append({"scheme": scheme, "cr": cr, "speedup": None, "sparsity": None})
                continue
            while done < rounds:
                prune_round(twin, scheme, keep_dense=keep_dense)
                done += 1
            rows.append({"scheme": scheme, "cr": cr, "speedup": theoretical_speedup(twin, input_size),
                         "sparsity": sparsity(twin)["sparsity"]})
    return rows
