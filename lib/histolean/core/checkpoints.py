"""Trained models as self-describing files: the spec, the weights and what inference needs.

The TIL benchmark writes them, the slide maps read them::

    save_model(path, net, spec, patch_um=50.0, mean=(...), std=(...), classes=("negative", "TIL"))
    net, info = load_model(path)          # info: spec, input_size, patch_um, mean, std, classes, ...

The file is a ``torch.save`` dict of tensors and plain Python (loaded with
``weights_only=True``), written atomically. A spec travels as plain data
(:func:`spec_to_dict`), so the network is rebuilt by ``models.build`` and no
pickled code is ever executed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

from histolean.core import arch, models
from histolean.util import atomic

FORMAT = "histolean.model/1"


def spec_to_dict(spec: arch.Spec) -> dict:
    return dataclasses.asdict(spec)


def spec_from_dict(d: dict) -> arch.Spec:
    stage = lambda s: arch.Stage(**{**s, "widths": tuple(s["widths"])}) if s is not None else None  # noqa: E731
    return arch.Spec(**{**d, "stem": stage(d.get("stem")), "stages": tuple(stage(s) for s in d["stages"]),
                        "head": arch.Head(**{**d["head"], "hidden": tuple(d["head"].get("hidden", ()))})})


def save_model(path: str | os.PathLike, net: nn.Module, spec: arch.Spec, **info) -> Path:
    """Atomically write ``net``'s weights with ``spec`` and inference facts (``patch_um``,
    ``mean``, ``std``, ``classes``, anything plain) to ``path``."""
    with atomic.atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "spec": spec_to_dict(spec), "state_dict": net.state_dict(),
                    "input_size": spec.input_size, **info}, tmp)
    return Path(path)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network saved by :func:`save_model`; return it (in eval mode) and its info.
    A missing, truncated or foreign file, or weights that do not fit the spec, is a
    ``ValueError``/``FileNotFoundError`` naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated or not a torch file
        raise ValueError(f"model checkpoint {path} cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a histolean model checkpoint (no format {FORMAT!r}); "
                         f"write it with histolean.core.checkpoints.save_model")
    try:
        spec = spec_from_dict(ckpt["spec"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"model checkpoint {path}: its spec is damaged ({err})") from None
    net = models.build(spec)
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"model checkpoint {path}: weights do not match its spec {spec.label} ({first})") from None
    info = {k: v for k, v in ckpt.items() if k not in ("state_dict", "format")}
    info["spec"] = spec
    return net.eval(), info
