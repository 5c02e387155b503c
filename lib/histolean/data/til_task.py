"""The TIL task of the NAR benchmark: TIL-positive vs TIL-negative patches covering 50 x 50 um.

Three sources, one result (:class:`TilTask`: train / valid / test :class:`PatchSet`):

* ``crc_windows`` (default): windows cut from CRCHistoPhenotypes' nucleus points at a physical
  size (``window_um`` at ``mpp``: 50 um = 91 px at 0.55 um/px). Label rule of Saltz et al. applied
  strictly: >= ``min_positive`` inflammatory centres -> TIL-positive (1), fewer -> TIL-negative (0),
  so a window with exactly one inflammatory nucleus is a negative (hard negatives, not dropped).
  Windows without any classified nucleus (background, fat, lumen) are dropped unless
  ``keep_empty``. Split **by image** (:func:`histolean.data.crc.image_split`, fixed ``split_seed``).
  Validation and test images give the fixed non-overlapping grid; training images give
  ``train_windows_per_image`` windows at random offsets (more, varied samples; still by image).
* ``til``: the Saltz et al. patch folders (``til/*_train_data``, ``*_val_data``, ``*_test_data``);
  without a test folder, the validation folder is also the test set (said in ``notes``).
* ``pcam``: PCam's three splits, centre-cropped to 50 um (96 px cover ~93 um at 0.972 um/px).

Every split must hold both classes (AUC is undefined otherwise): a clear error names the dataset
and split. Without the data folder (and ``allow_synthetic``) every split comes from the procedural
generator and ``data_kind`` is ``synthetic``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .common import DataError, PatchSet, balanced_subset, data_root
from .crc import CLASSES, DEFAULT_MPP, image_folds, image_order, image_split, list_crc, window_px
from .user_patches import PREFIX as FOLDER_PREFIX, load_patch_folder

DATASETS = ("crc_windows", "til", "pcam")
SPLITS = ("train", "valid", "test")
PCAM_MPP = 0.972  # PCam: 96 px patches at 10x (Veeling et al. 2018)
_FOLDERS = {"crc_windows": "crchistophenotypes", "til": "til", "pcam": "pcam"}


@dataclass
class TilTask:
    """The three splits of the task and how they were made."""

    dataset: str
    data_kind: str
    train: PatchSet
    valid: PatchSet
    test: PatchSet
    window_px: int
    description: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> PatchSet:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    def sizes(self) -> dict[str, dict]:
        """Per split: patches, positives, groups (images / slides)."""
        return {s: {"n": len(p), "positives": int(p.labels.sum()), "groups": int(len(np.unique(p.groups)))}
                for s, p in (("train", self.train), ("valid", self.valid), ("test", self.test))}

    def fingerprint(self) -> str:
        """Changes whenever any split's patches or labels change (resume keys on it)."""
        h = hashlib.sha1(repr(sorted(self.description.items())).encode())
        for part in (self.train, self.valid, self.test):
            h.update(np.ascontiguousarray(part.labels).tobytes())
            h.update("\n".join(part.paths).encode())
        return h.hexdigest()[:16]


def check_both_classes(patches: PatchSet, dataset: str, split: str) -> None:
    """A split with one class cannot train or score a classifier: say which and what to do."""
    counts = patches.class_counts()
    if len(patches) == 0 or len(counts) < 2:
        raise DataError(f"TIL task: dataset {dataset!r}, split {split!r} holds {len(patches)} patches with "
                        f"class counts {counts}: both classes (0 = TIL-negative, 1 = TIL-positive) are needed. "
                        "Use more data, another split_seed or another dataset")


def window_labels(points: dict[str, np.ndarray], x0: np.ndarray, y0: np.ndarray, side: int,
                  min_positive: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For windows [x0, x0+side) x [y0, y0+side): (label 0/1, inflammatory count, classified count).

    The strict rule: label 1 with >= ``min_positive`` inflammatory centres, else 0.
    """
    x0 = np.asarray(x0, dtype=np.float64)[:, None]
    y0 = np.asarray(y0, dtype=np.float64)[:, None]

    def count(xy: np.ndarray) -> np.ndarray:
        if len(xy) == 0:
            return np.zeros(len(x0), dtype=np.int64)
        inside = (xy[None, :, 0] >= x0) & (xy[None, :, 0] < x0 + side) & \
                 (xy[None, :, 1] >= y0) & (xy[None, :, 1] < y0 + side)
        return inside.sum(1)

    n_inf = count(points["inflammatory"])
    n_classified = sum(count(points[c]) for c in CLASSES)
    return (n_inf >= min_positive).astype(np.int64), n_inf, n_classified


def fold_assignment(names, per_image_labels: dict, cv_folds: int, fold, split_seed: int = 0) -> tuple[dict, dict]:
    """Images -> split for cross-validation fold ``fold`` (and the folds' images).

    Fold k tests on the images of fold k, chooses its epoch on fold k+1 (mod ``cv_folds``) and trains on
    the rest, so every image is a test image once. ``fold="final"``: the model the slide maps use,
    trained on every fold but fold 0, whose images choose its epoch (its "test" split repeats them: it is
    scored out of fold, by the k folds, not here).
    """
    folds_of = image_folds(names, per_image_labels, cv_folds, seed=split_seed)
    if fold == "final":
        test, valid = 0, 0
    elif isinstance(fold, int) and not isinstance(fold, bool) and 0 <= fold < cv_folds:
        test, valid = fold, (fold + 1) % cv_folds
    else:
        raise ValueError(f"load_til_task: fold must be 0..{cv_folds - 1} or 'final', got {fold!r}")
    assignment = {n: "valid" if f == valid else "test" if f == test else "train" for n, f in folds_of.items()}
    folds = {k: sorted((n for n, f in folds_of.items() if f == k), key=image_order)
             for k in range(cv_folds)}
    return assignment, folds


def _crc_windows(root, *, window_um: float, mpp: float, min_positive: int, train_windows_per_image: int,
                 split_fractions, split_seed: int, seed: int, keep_empty: bool, cv_folds: int | None = None,
                 fold=None) -> tuple[dict, dict]:
    side = window_px(window_um, mpp)
    images = list_crc(root)
    grid, per_image_labels = {}, {}
    for crc in images:
        h, w = crc.shape()
        if h < side or w < side:
            raise DataError(f"{crc.path}: image is {w}x{h} px, smaller than one {window_um:g} um window "
                            f"({side} px at {mpp} um/px). Check mpp or remove the image")
        ys, xs = np.meshgrid(np.arange(0, h - side + 1, side), np.arange(0, w - side + 1, side), indexing="ij")
        labels, n_inf, n_cls = window_labels(crc.points, xs.ravel(), ys.ravel(), side, min_positive)
        keep = np.ones(len(labels), bool) if keep_empty else n_cls > 0
        grid[crc.name] = (xs.ravel()[keep], ys.ravel()[keep], labels[keep], n_inf[keep])
        per_image_labels[crc.name] = labels[keep]
    if cv_folds:
        assignment, folds = fold_assignment([c.name for c in images], per_image_labels, cv_folds, fold, split_seed)
    else:
        assignment = image_split([c.name for c in images], per_image_labels, fractions=tuple(split_fractions),
                                 seed=split_seed)
    windows = {s: [] for s in SPLITS}  # split -> (crc, x0, y0, label, n_inf)
    for index, crc in enumerate(images):
        split = assignment[crc.name]
        if split == "train":
            rng = np.random.default_rng([seed, index])
            h, w = crc.shape()
            n = train_windows_per_image
            xs, ys = rng.integers(0, w - side + 1, n), rng.integers(0, h - side + 1, n)
            labels, n_inf, n_cls = window_labels(crc.points, xs, ys, side, min_positive)
            keep = np.ones(n, bool) if keep_empty else n_cls > 0
            rows = zip(xs[keep], ys[keep], labels[keep], n_inf[keep])
        else:
            rows = zip(*grid[crc.name])
        windows[split] += [(crc, int(x), int(y), int(lab), int(k)) for x, y, lab, k in rows]
    out = {}
    for split, items in windows.items():
        cache: dict[str, np.ndarray] = {}
        imgs, labels, groups, paths = [], [], [], []
        for crc, x, y, lab, _ in items:
            if crc.name not in cache:
                cache[crc.name] = crc.image()
            imgs.append(cache[crc.name][y:y + side, x:x + side])
            labels.append(lab)
            groups.append(crc.name)
            paths.append(f"{crc.path}#x{x}_y{y}_s{side}")
        stacked = np.stack(imgs) if imgs else np.zeros((0, side, side, 3), np.uint8)
        out[split] = PatchSet(stacked, np.asarray(labels, np.int64), np.asarray(groups), paths, "crc_windows",
                              "real", split)
        out[split].notes.append(f"{split}: {sum(k == 1 for *_, k in items)} windows with exactly one "
                                "inflammatory nucleus labelled TIL-negative")
    if fold == "final":  # no test images of its own: scored out of fold (see fold_assignment)
        out["test"] = PatchSet(out["valid"].images, out["valid"].labels, out["valid"].groups, out["valid"].paths,
                               "crc_windows", "real", "test", ["the final model's test split repeats its validation "
                                                               "images: it is scored by the folds, not here"])
    described = {"window_um": window_um, "mpp": mpp, "window_px": side, "min_positive": min_positive,
                 "rule": f">= {min_positive} inflammatory centres -> TIL-positive, fewer -> TIL-negative",
                 "empty_windows": "kept" if keep_empty else "dropped",
                 "train_windows": f"{train_windows_per_image} random offsets per training image",
                 "eval_windows": "fixed non-overlapping grid", "split": "by image",
                 **({"cv_folds": cv_folds, "fold": fold, "folds": folds} if cv_folds else
                    {"split_fractions": list(split_fractions)}), "split_seed": split_seed,
                 "images": {s: sorted({n for n, v in assignment.items() if v == s}, key=image_order)
                            for s in SPLITS}}
    return out, described


def _centre_crop(patches: PatchSet, side: int) -> PatchSet:
    h = patches.images.shape[1]
    if side >= h:
        return patches
    top = (h - side) // 2
    patches.images = np.ascontiguousarray(patches.images[:, top:top + side, top:top + side])
    return patches


def can_cross_validate(dataset: str, root=None) -> bool:
    """Cross-validation by image needs the real CRCHistoPhenotypes images (the other sources keep their own
    splits, and the procedural stand-in has no images to fold)."""
    return dataset == "crc_windows" and (data_root(root) / _FOLDERS[dataset]).is_dir()


def load_til_task(dataset: str = "crc_windows", root=None, *, window_um: float = 50.0, mpp: float | None = None,
                  min_positive: int = 2, train_windows_per_image: int = 40, split_fractions=(0.5, 0.2, 0.3),
                  split_seed: int = 0, seed: int = 0, keep_empty: bool = False, n_train: int | None = None,
                  n_eval: int | None = None, allow_synthetic: bool = True, cv_folds: int | None = None,
                  fold: int | str | None = None) -> TilTask:
    """Build the TIL task from ``dataset`` (``crc_windows``, ``til`` or ``pcam``); see the module doc.

    ``n_train`` / ``n_eval`` cap the training and the validation/test patches (class-balanced draw
    with ``seed``; None = all). Images keep their native pixel size (``window_px``); models
    resize them to their own input size. ``mpp``: microns per pixel of CRCHistoPhenotypes (None: its
    published 0.55) or of a user's folder (None: the folder's ``dataset.json``, else unknown).
    ``cv_folds`` / ``fold`` (``crc_windows`` only): fold ``fold`` of a cross-validation by image instead
    of one split by ``split_fractions`` (:func:`fold_assignment`; ``fold="final"``: the slide maps' model).
    """
    if cv_folds and dataset != "crc_windows":
        raise ValueError(f"load_til_task: cross-validation by image (cv_folds={cv_folds}) is built for "
                         f"crc_windows; {dataset!r} keeps its own split (set cv_folds to null)")
    if str(dataset).startswith(FOLDER_PREFIX):  # a user's own patches
        return _folder_til_task(dataset, window_um=window_um, mpp=mpp, n_train=n_train, n_eval=n_eval,
                                split_fractions=split_fractions, split_seed=split_seed, seed=seed)
    mpp = DEFAULT_MPP if mpp is None else mpp
    if dataset not in DATASETS:
        raise ValueError(f"load_til_task: unknown dataset {dataset!r}; use one of {DATASETS} or 'folder:PATH'")
    if not (isinstance(min_positive, int) and min_positive >= 1):
        raise ValueError(f"load_til_task: min_positive must be an integer >= 1, got {min_positive!r}")
    if not (window_um > 0 and mpp > 0):
        raise ValueError(f"load_til_task: window_um and mpp must be positive, got {window_um}, {mpp}")
    if len(split_fractions) != 3 or min(split_fractions) <= 0 or abs(sum(split_fractions) - 1) > 1e-6:
        raise ValueError(f"load_til_task: split_fractions must be three positive numbers summing to 1 "
                         f"(train, valid, test), got {split_fractions!r}")
    folder = data_root(root) / _FOLDERS[dataset]
    if cv_folds and not folder.is_dir():
        raise DataError(f"load_til_task: cross-validation by image needs the CRCHistoPhenotypes images, not found "
                        f"at {folder}; set cv_folds to null to run one split on the procedural stand-in")
    notes: list[str] = []
    if not folder.is_dir() and allow_synthetic:
        splits, described, side = _synthetic(dataset, folder, window_um, mpp, n_train, n_eval, seed)
        notes.append(f"{folder} not found: procedural H&E patches (data_kind synthetic)")
    elif dataset == "crc_windows":
        splits, described = _crc_windows(root, window_um=window_um, mpp=mpp, min_positive=min_positive,
                                         train_windows_per_image=train_windows_per_image,
                                         split_fractions=split_fractions, split_seed=split_seed, seed=seed,
                                         keep_empty=keep_empty, cv_folds=cv_folds, fold=fold)
        side = described["window_px"]
    elif dataset == "til":
        splits, described, side = _til_folders(root, notes)
    else:
        from .pcam import load_pcam

        side = window_px(window_um, PCAM_MPP)
        splits = {s: _centre_crop(load_pcam(s, root, limit=n_train if s == "train" else n_eval, seed=seed), side)
                  for s in SPLITS}
        described = {"window_um": window_um, "mpp": PCAM_MPP, "window_px": side,
                     "rule": "PCam labels (tumour in the centre 32 x 32 px); centre crop to the window",
                     "split": "PCam's own splits"}
    for s, cap in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        if cap is not None and len(splits[s]) > cap:
            splits[s] = splits[s].subset(balanced_subset(splits[s].labels, cap, seed))
            described[f"n_{s}_cap"] = cap
    for s in SPLITS:
        check_both_classes(splits[s], dataset, s)
    kinds = {p.data_kind for p in splits.values()}
    return TilTask(dataset, "synthetic" if "synthetic" in kinds else "real", splits["train"], splits["valid"],
                   splits["test"], side, described, notes + [n for p in splits.values() for n in p.notes])


def _til_folders(root, notes: list[str]) -> tuple[dict, dict, int]:
    from .til import list_til, load_til

    available = list_til(root)
    splits = {s: load_til(s, root) for s in ("train", "valid") if s in available}
    if "train" not in splits or "valid" not in splits:
        raise DataError(f"{data_root(root) / 'til'}: TIL task needs *_train_data and *_val_data folders, "
                        f"found splits {sorted(available)}")
    if "test" in available:
        splits["test"] = load_til("test", root)
    else:
        splits["test"] = splits["valid"]
        notes.append("til: no *_test_data folder, so the validation folder is also the test set")
    side = splits["train"].images.shape[1]
    return splits, {"window_um": 50.0, "window_px": side, "rule": "the folders' label.txt",
                    "split": "the folders' own (by slide where the source did so)"}, side


def _synthetic(dataset, folder, window_um, mpp, n_train, n_eval, seed) -> tuple[dict, dict, int]:
    from . import synthetic

    print(f"histolean.data: {dataset} not found at {folder}; using the procedural H&E generator "
          f"(data_kind=synthetic)")
    side = window_px(window_um, mpp)
    sizes = {"train": n_train or 256, "valid": n_eval or 128, "test": n_eval or 128}
    splits = {}
    for offset, s in enumerate(SPLITS):
        patches = synthetic.synthetic_patches(sizes[s], size=side, seed=seed * 10 + offset, dataset=dataset)
        patches.split = s
        splits[s] = patches
    return splits, {"window_um": window_um, "window_px": side, "rule": "generator labels", "split": "generated"}, side


def _folder_til_task(spec: str, *, window_um: float, mpp: float | None, n_train, n_eval, split_fractions,
                     split_seed: int, seed: int) -> TilTask:
    """``load_til_task("folder:PATH", ...)``: the folder's patches (data.user_patches) as a TilTask."""
    splits, described = load_patch_folder(spec, mpp=mpp, patch_um=window_um, seed=seed, split_seed=split_seed,
                                          split_fractions=split_fractions,
                                          limits={"train": n_train, "valid": n_eval, "test": n_eval})
    name = FOLDER_PREFIX + described["folder"]
    for split, patches in splits.items():
        check_both_classes(patches, name, split)
    described.update({f"n_{s}_cap": cap for s, cap in (("train", n_train), ("valid", n_eval)) if cap is not None})
    return TilTask(name, "user", splits["train"], splits["valid"], splits["test"], described["window_px"],
                   described, list(described["notes"]))
