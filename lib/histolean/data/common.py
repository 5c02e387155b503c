"""What every loader shares: the two containers, image decoding, the dataset folder and its error.

A loader returns either a :class:`PatchSet` (classification patches with
their labels and the patient/slide/image id of each, for grouped splits) or a
list of :class:`InstanceSample` (an image with its instance label map).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

# re-exported: loaders and users import them from here (data.common / histolean.data)
from histolean.util.errors import DataError, data_error  # noqa: F401
from histolean.util.paths import data_root  # noqa: F401
from .registry import DATA_KINDS, how_to_get


def check_listed_images(label_file: str | os.PathLike, paths) -> None:
    """A label file must name only images that exist; the error names the file and a few missing ones."""
    missing = [Path(p) for p in paths if not Path(p).is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise data_error(label_file, f"names {len(missing)} image(s) that do not exist (e.g. {shown})",
                         "Restore the missing images or remove their entries from the label file")


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<name>``; raises a DataError saying how to get the data when it is absent."""
    folder = data_root(root) / name
    if not folder.is_dir():
        raise DataError(
            f"{folder}: dataset '{name}' not found (looked for this folder; the data root is "
            f"the root= argument, else $HISTOLEAN_DATA, else ./data). {how_to_get(name)}"
        )
    return folder


@dataclass
class PatchSet:
    """Classification patches: ``images`` uint8 (N, H, W, 3), ``labels`` int64 (N,).

    ``groups`` holds the patient / slide / image id of each patch (split by it,
    never by patch); ``data_kind`` is "real", "synthetic" or "user" (a user's own folder).
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    paths: list[str]
    dataset: str
    data_kind: str = "real"
    split: str = "all"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.labels) == len(self.groups) == len(self.paths) == n):
            raise ValueError(
                f"PatchSet({self.dataset}): images, labels, groups and paths differ in length "
                f"({n}, {len(self.labels)}, {len(self.groups)}, {len(self.paths)})"
            )
        if self.data_kind not in DATA_KINDS or self.data_kind == "none":  # "none" is for rows without data
            raise ValueError(f"PatchSet({self.dataset}): data_kind must be 'real', 'synthetic' or 'user', "
                             f"got {self.data_kind!r}")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.groups = np.asarray(self.groups, dtype=str)

    def __len__(self) -> int:
        return len(self.images)

    def class_counts(self) -> dict[int, int]:
        values, counts = np.unique(self.labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}

    def subset(self, index: Sequence[int] | np.ndarray) -> "PatchSet":
        index = np.asarray(index, dtype=np.int64)
        return PatchSet(
            self.images[index], self.labels[index], self.groups[index],
            [self.paths[i] for i in index], self.dataset, self.data_kind, self.split, list(self.notes),
        )


@dataclass
class InstanceSample:
    """One image with its instance label map (0 = background, 1..n = one id per nucleus).

    ``mpp`` is microns per pixel, or None when the source does not say;
    ``group`` is the patient / slide id for grouped splits.
    """

    image: np.ndarray
    instances: np.ndarray
    name: str
    path: str
    dataset: str
    group: str = ""
    mpp: float | None = None
    data_kind: str = "real"
    region_ids: list[str] = field(default_factory=list)

    @property
    def n_instances(self) -> int:
        return int(len(np.unique(self.instances[self.instances > 0])))


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to uint8 RGB (alpha dropped, palette/greyscale converted).

    A corrupt or truncated file raises a DataError naming it, not a Pillow traceback.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "RGBA":
                # The datasets here have alpha all 255; composite on white so a real
                # transparency would read as slide background, not black.
                background = Image.new("RGB", img.size, (255, 255, 255))
                background.paste(img, mask=img.getchannel("A"))
                img = background
            elif img.mode != "RGB":
                img = img.convert("RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise data_error(path, "image file does not exist", "Check the path or re-download the dataset") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise data_error(
            path, f"cannot decode the image (corrupt or truncated file: {exc})",
            "Re-download or delete this file",
        ) from None


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Decode a single-channel image (a mask) to uint8, with the same clear errors."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise data_error(path, "mask file does not exist", "Check the path or re-download the dataset") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise data_error(
            path, f"cannot decode the mask (corrupt or truncated file: {exc})", "Re-download or delete this file"
        ) from None


def resize_images(images: np.ndarray, size: int | None) -> np.ndarray:
    """Resize a uint8 (N, H, W, 3) stack (any strides) to (N, size, size, 3): bilinear with antialias,
    as training resizes (``torch.nn.functional.interpolate``), by torch's uint8 channels-last kernel:
    within 1 grey level of the float path and of PIL's BILINEAR, a fifth of PIL's time per image
    (measured, 100 -> 76 px: 21 against 110 us), which was half of a reduced model's slide reading."""
    if size is None or (images.shape[1] == size and images.shape[2] == size):
        return images
    if len(images) == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return y.permute(0, 2, 3, 1).numpy()


def stack_images(images: Iterable[np.ndarray], paths: Sequence[str]) -> np.ndarray:
    """Stack equally sized images; a size mismatch names the first odd file."""
    images = list(images)
    if not images:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    shape = images[0].shape
    for img, path in zip(images, paths):
        if img.shape != shape:
            raise data_error(path, f"image is {img.shape[1]}x{img.shape[0]}, the others are "
                             f"{shape[1]}x{shape[0]}", "Pass size= to resize all patches to one size")
    return np.stack(images)


def balanced_subset(labels: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of at most ``limit`` items, classes as balanced as the data allow, deterministic per seed.

    Without a limit, all indices in order.
    """
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    chosen: list[int] = []
    # Round-robin over classes so a small limit still sees every class.
    position = 0
    while len(chosen) < limit:
        took = False
        for c in classes:
            if position < len(pools[c]) and len(chosen) < limit:
                chosen.append(int(pools[c][position]))
                took = True
        if not took:
            break
        position += 1
    return np.sort(np.asarray(chosen, dtype=np.int64))


def warn(message: str) -> None:
    """A UserWarning attributed to the caller of the loader."""
    warnings.warn(message, stacklevel=3)


SPLIT_ALIASES = {"val": "valid", "validation": "valid", "training": "train", "testing": "test"}


def normalise_split(split: str | None, allowed: Sequence[str], where: str) -> str:
    split = "all" if split in (None, "", "all") else SPLIT_ALIASES.get(split, split)
    if split != "all" and split not in allowed:
        raise ValueError(f"{where}: unknown split {split!r}; use one of {list(allowed) + ['all']}")
    return split
