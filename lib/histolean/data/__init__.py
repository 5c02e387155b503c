"""Loaders for the real pathology formats, a procedural H&E generator, status and downloads.

The data root is the ``root=`` argument, else ``$HISTOLEAN_DATA``, else ``./data``; each
dataset lives in ``<root>/<name>``::

    from histolean import data
    train = data.load_pcam("train", limit=512)          # PatchSet: images, labels, groups, ...
    tiles = data.load_monuseg("test")                   # list[InstanceSample]
    patches = data.load_patches("idc", "train", size=64) # falls back to the generator if missing
    print(data.format_status(data.dataset_status()))

Modules: ``registry`` (one record per dataset: folder, source, licence, size, downloads),
``common`` (containers, image decoding), ``pcam``, ``idc``, ``monuseg``, ``tnbc``, ``crc``
(CRCHistoPhenotypes and TIL windows), ``til``, ``synthetic``, ``status``, ``download``; a user's own
folders (``dataset="folder:PATH"``, data_kind "user"): ``user_patches``, ``user_nuclei``, ``folder_check``.
Whole slides are in :mod:`histolean.data.wsi`; the error type is :class:`histolean.util.errors.DataError`.
"""

from __future__ import annotations

import warnings

from .common import (
    DataError, InstanceSample, PatchSet, balanced_subset, data_root, read_gray, read_rgb, resize_images,
)
from .crc import image_folds, image_split, list_crc, load_til_windows, read_points, til_windows
from .download import download_file, fetch
from .idc import list_idc, load_idc, pad_to_patch, patient_split
from .monuseg import load_monuseg, parse_annotation, rasterise
from .pcam import load_image_folder, load_pcam
from .registry import DATA_KINDS, DATASETS, Dataset, how_to_get
from .status import DatasetStatus, dataset_status, format_status
from .synthetic import (
    SyntheticSlide, synthetic_patch, synthetic_patches, synthetic_slide, synthetic_tile, synthetic_tiles,
)
from .til import cut_til_patches, load_til
from .tnbc import instances_from_mask, load_tnbc
from .user_nuclei import check_nuclei, load_nuclei_folder
from .user_patches import PREFIX as FOLDER_PREFIX, check_patches, load_patch_folder

_PATCH_LOADERS = {"pcam": load_pcam, "idc": load_idc, "til": load_til, "til_windows": load_til_windows}
SYNTHETIC_DEFAULT_N = 256


def load_patches(dataset: str, split: str, *, root=None, limit: int | None = None, size: int | None = None,
                 seed: int = 0, allow_synthetic: bool = True, mpp: float | None = None,
                 patch_um: float | None = None) -> PatchSet:
    """Patches of ``dataset`` (pcam, idc, til, til_windows, or a user's ``folder:PATH``); the benchmarks'
    single entry point. ``mpp`` and ``patch_um`` apply to a folder only (see ``user_patches``; ``patch_um``
    None: the patches whole).

    When the dataset folder is missing and ``allow_synthetic`` is true, prints and warns
    which folder was looked for and returns procedural patches (``data_kind="synthetic"``,
    ``limit`` of them or 256, at ``size`` or the dataset's native size). Other errors
    (corrupt files, bad label files) are always raised.
    """
    if dataset.startswith(FOLDER_PREFIX):   # checked first: a blocking problem stops here with its message
        sets, _ = load_patch_folder(dataset, mpp=mpp, patch_um=patch_um, size=size, limits={split: limit},
                                    seed=seed, splits=(split,))
        return sets[split]
    if dataset not in _PATCH_LOADERS:
        raise ValueError(f"load_patches: unknown dataset {dataset!r}; use one of {sorted(_PATCH_LOADERS)} or "
                         "'folder:PATH' (MoNuSeg and TNBC: load_monuseg / load_tnbc)")
    record = DATASETS[dataset]
    folder = data_root(root) / record.folder
    if folder.is_dir() or not allow_synthetic:
        return _PATCH_LOADERS[dataset](split, root=root, limit=limit, seed=seed, size=size)
    message = (f"histolean.data: {dataset} not found at {folder}; using the procedural H&E generator "
               f"(data_kind=synthetic). {how_to_get(dataset)}")
    print(message)
    warnings.warn(message, stacklevel=2)
    split_offset = {"train": 0, "valid": 1, "val": 1, "test": 2}.get(split, 3)
    patches = synthetic_patches(limit or SYNTHETIC_DEFAULT_N, size=size or record.patch_px,
                                seed=seed * 10 + split_offset, dataset=dataset)
    patches.split = split
    return patches


__all__ = [
    "DataError", "PatchSet", "InstanceSample", "DatasetStatus", "SyntheticSlide", "data_root", "read_rgb",
    "read_gray", "resize_images", "balanced_subset", "load_patches", "load_pcam", "load_image_folder", "load_idc",
    "list_idc", "patient_split", "pad_to_patch", "load_monuseg", "parse_annotation", "rasterise", "load_tnbc",
    "instances_from_mask", "list_crc", "read_points", "til_windows", "image_split", "image_folds",
    "load_til_windows", "load_til",
    "cut_til_patches", "synthetic_patch", "synthetic_patches", "synthetic_tile", "synthetic_tiles", "synthetic_slide",
    "FOLDER_PREFIX", "check_patches", "load_patch_folder", "check_nuclei", "load_nuclei_folder",
    "DATA_KINDS", "DATASETS", "Dataset", "dataset_status", "format_status", "how_to_get", "fetch", "download_file",
]
