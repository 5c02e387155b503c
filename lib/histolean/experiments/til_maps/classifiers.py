"""The TIL classifiers a slide map runs: the TIL benchmark's checkpoints, or short-trained stand-ins.

::

    paths, source = classifiers.models_for_maps(output_dir, input_size=64, epochs=2)
    # or, step by step:
    found = classifiers.find_checkpoints(output_dir / "models" / "til_nar_resrep")  # {"original": ..., "reduced": ...}
    if not found:
        found = classifiers.train_stand_ins(output_dir / "models" / "til_maps", input_size=64, epochs=2)

The benchmark ``til_nar_resrep`` saves one checkpoint per variant with ``method`` original /
ir / nar (/ resrep) and its validation ``auc``. The original is its ResNet50V2 (``ORIGINAL_MODEL``
in the model registry); the best reduced model is the reduced variant of the same network with
the highest AUC (fewer GFLOPs break ties).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from histolean.core import arch

ORIGINAL_MODEL = arch.model_entry("resnet50v2", "torch").name   # the paper's TIL network
BENCHMARK_MODELS = Path("models") / "til_nar_resrep"   # where the TIL benchmark saves them, under the output dir
STAND_IN_MODELS = Path("models") / "til_maps"
STAND_IN_SOURCE = "trained here (short stand-ins: no til_nar_resrep checkpoints)"
BENCHMARK_SOURCE = "til_nar_resrep checkpoints"


def find_checkpoints(folder: str | os.PathLike) -> dict[str, Path]:
    """{"original": path, "reduced": path} from a folder of TIL checkpoints; {} when either is missing.
    Files that cannot be read are skipped (the benchmark may still be writing)."""
    import torch

    folder = Path(folder)
    originals, reduced = [], []
    for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        try:
            ckpt = torch.load(path, map_location="meta", weights_only=True)
        except Exception:  # a damaged or foreign file is not a candidate
            continue
        if not isinstance(ckpt, dict):
            continue
        auc = ckpt.get("auc")
        auc = float(auc) if isinstance(auc, (int, float)) and np.isfinite(auc) else float("-inf")
        gflops = float(ckpt.get("gflops") or np.inf)
        model = str(ckpt.get("model", ""))
        if ckpt.get("method") == "original":
            originals.append((model != ORIGINAL_MODEL, -auc, path, model))
        elif ckpt.get("method"):
            reduced.append((-auc, gflops, path, model))
    if not originals:
        return {}
    original = min(originals)
    reduced = [r for r in reduced if r[-1] == original[-1]]  # a reduction of that same network
    return {"original": original[2], "reduced": min(reduced)[2]} if reduced else {}


def train_stand_ins(folder: str | os.PathLike, *, input_size: int = 64, epochs: int = 2, n_train: int = 384,
                    n_valid: int = 128, batch_size: int = 32, lr: float = 1e-3, phi: int = 2, root=None,
                    seed: int = 0, progress: bool = False) -> dict[str, Path]:
    """Train a ResNet50V2 (``input_size`` per 50 um patch) and its NAR ``phi`` reduction for a few epochs
    on the real CRCHistoPhenotypes TIL windows; save both with ``checkpoints.save_model``.

    These are stand-ins for the TIL benchmark's models at a much reduced scale (input, epochs,
    patches): what they show is the mapping pipeline, not the paper's AUC.
    """
    from histolean.core import checkpoints, flops, models, train
    from histolean.data import crc
    from histolean.methods import nar

    folder = Path(folder)
    original = arch.spec(ORIGINAL_MODEL, num_classes=2, input_size=input_size)
    variants = {"original": ("original", {}, original), "reduced": ("nar", {"phi": phi}, nar.reduce(original, phi))}
    sets = {split: crc.load_til_windows(split, root=root, limit=n, seed=seed, window_um=50.0)
            for split, n in (("train", n_train), ("valid", n_valid))}
    out = {}
    for role, (method, setting, spec) in variants.items():
        net = models.build(spec, seed=seed)
        size = spec.input_size
        t0 = time.perf_counter()
        train.fit(net, train.make_loader(sets["train"].images, sets["train"].labels, batch_size, shuffle=True,
                                         augment=True, seed=seed, size=size),
                  epochs=epochs, lr=lr, seed=seed, progress=progress, desc=f"{role} {spec.label}")
        train_s = time.perf_counter() - t0
        valid = train.evaluate(net, train.make_loader(sets["valid"].images, sets["valid"].labels, 64, size=size))
        out[role] = checkpoints.save_model(
            folder / f"{ORIGINAL_MODEL}-{method}{''.join(f'-{k}{v}' for k, v in setting.items())}.pt", net.cpu(),
            spec, patch_um=50.0, mean=train.NORM_MEAN, std=train.NORM_STD, classes=["TIL-negative", "TIL-positive"],
            dataset="til_windows", model=ORIGINAL_MODEL, method=method, setting=setting, auc=valid["auc"],
            accuracy=valid["accuracy"], gflops=flops.gflops(spec), params=flops.count_params(spec),
            trained_here=True, train_time_s=train_s,
            scale={"input_size": size, "epochs": epochs, "n_train": len(sets["train"].labels),
                   "n_valid": len(sets["valid"].labels)})
    return out


def models_for_maps(output_dir: str | os.PathLike, **stand_in_settings) -> tuple[dict[str, Path], str]:
    """The original and the best reduced checkpoint the TIL benchmark wrote under ``output_dir``, or, when
    it has not run there, stand-ins trained now (:func:`train_stand_ins` with ``stand_in_settings``) under
    ``output_dir/models/til_maps``; with the source in words (``BENCHMARK_SOURCE`` / ``STAND_IN_SOURCE``)."""
    output_dir = Path(output_dir)
    found = find_checkpoints(output_dir / BENCHMARK_MODELS)
    if found:
        return found, BENCHMARK_SOURCE
    return train_stand_ins(output_dir / STAND_IN_MODELS, **stand_in_settings), STAND_IN_SOURCE
