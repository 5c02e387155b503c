"""The patch classifier a TIL map runs: a checkpoint loaded with what inference needs from it."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class TilModel:
    """A checkpoint written by ``checkpoints.save_model``, with what inference needs from it."""

    path: Path
    net: object               # torch nn.Module, eval mode
    info: dict
    input_size: int
    patch_um: float
    mean: np.ndarray          # per channel, on 0..1 pixel values
    std: np.ndarray
    digest: str               # sha256 of the checkpoint file: names its ONNX export, keys finished slides

    @property
    def name(self) -> str:
        return self.path.stem


def load_til_model(path: str | os.PathLike) -> TilModel:
    """Load a TIL patch classifier; anything but a two-class (or one-logit) image model is an error
    naming the file."""
    from histolean.core import checkpoints

    path = Path(path)
    net, info = checkpoints.load_model(path)  # damaged, foreign or mismatched files raise naming the path
    spec = info["spec"]
    if spec.num_classes not in (1, 2) or spec.in_channels != 3:
        raise ValueError(f"model checkpoint {path}: {spec.label} has {spec.num_classes} classes and "
                         f"{spec.in_channels} input channels; a TIL map needs a 2-class RGB patch classifier")
    input_size = int(info.get("input_size") or spec.input_size)
    patch_um = float(info.get("patch_um", 50.0))
    if not patch_um > 0:
        raise ValueError(f"model checkpoint {path}: patch_um must be positive, got {patch_um!r}")

    def channels(key: str, default: float) -> np.ndarray:
        value = np.broadcast_to(np.asarray(info.get(key, default), dtype=np.float32).reshape(-1), (3,)).copy()
        if key == "std" and not (value > 0).all():
            raise ValueError(f"model checkpoint {path}: std must be positive, got {value.tolist()}")
        return value

    from histolean.core.train import NORM_MEAN, NORM_STD  # what fit() trains with when a checkpoint does not say

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return TilModel(path, net, info, input_size, patch_um, channels("mean", NORM_MEAN), channels("std", NORM_STD),
                    digest)


def to_input(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 (b, h, w, 3) -> normalised float32 (b, 3, h, w), as ``train.ArrayDataset`` feeds training
    (``core.backends.to_input``, which every backend uses)."""
    from histolean.core import backends

    return backends.to_input(images, mean, std)


def positive_probability(logits: np.ndarray) -> np.ndarray:
    """P(TIL) from (b, 2) logits (softmax) or (b, 1) (sigmoid), in float64 (``core.backends``')."""
    from histolean.core import backends

    return backends.positive_probability(logits)
