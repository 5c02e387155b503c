"""CRCHistoPhenotypes: nucleus centres with classes, and TIL windows of a physical size.

Layout: ``<root>/crchistophenotypes/imgN/imgN.bmp`` + ``imgN_<class>.mat`` for class in
detection, epithelial, fibroblast, inflammatory, others. Each .mat holds ``detection``,
an (n, 2) array of MATLAB **1-based (x, y)**; we return 0-based (x = column, y = row).

TIL windows (the TIL benchmark, after Saltz et al.: a 50 x 50 um patch with >= 2
lymphocytes is TIL-positive): a non-overlapping grid of windows of ``window_um`` at
``mpp`` (default 55 um at 0.55 um/px = 100 px, the 5 x 5 grid that tiles the 500-px
images exactly and reproduces ``til_windows_100px.csv``). The grid follows each image's
real size; windows that would run past its right or bottom edge are dropped. A window is
``til_positive`` with >= ``min_positive`` inflammatory centres, ``til_negative`` with
none and >= 1 other classified nucleus, ``ambiguous_1_inflammatory`` with 1, and
``no_nuclei`` with no classified nucleus. Only centres inside [x0, x0+w) x [y0, y0+h)
count. The images carry no patient ids: splits are by image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import PatchSet, balanced_subset, data_error, dataset_dir, normalise_split, read_rgb, resize_images
from .registry import DATASETS

CLASSES = ("epithelial", "fibroblast", "inflammatory", "others")
SPLITS = ("train", "valid", "test")
DEFAULT_MPP = DATASETS["crchistophenotypes"].mpp


@dataclass
class CrcImage:
    name: str
    path: Path
    points: dict[str, np.ndarray]  # class (and "detection") -> (n, 2) 0-based (x, y)

    def image(self) -> np.ndarray:
        return read_rgb(self.path)

    def shape(self) -> tuple[int, int]:
        """(height, width) of the image, read from the file header (no pixels decoded)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.path) as img:
                width, height = img.size
        except FileNotFoundError:
            raise data_error(self.path, "image file does not exist", "Restore it from the dataset zip") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise data_error(self.path, f"cannot read the image header (corrupt or truncated file: {exc})",
                             "Re-download or delete this file") from None
        return height, width


def read_points(mat_path: str | Path) -> np.ndarray:
    """Nucleus centres of one .mat file as 0-based float (x, y), shape (n, 2)."""
    import scipy.io

    mat_path = Path(mat_path)
    try:
        mat = scipy.io.loadmat(mat_path, mat_dtype=True)
    except FileNotFoundError:
        raise data_error(mat_path, "point file does not exist", "Restore it from the dataset zip") from None
    except (ValueError, TypeError, OSError, EOFError, IndexError, NotImplementedError,
            scipy.io.matlab.MatReadError) as exc:  # scipy raises all of these on damaged files
        raise data_error(mat_path, f"cannot read the MATLAB file ({type(exc).__name__}: {exc})",
                         "Re-download the dataset") from None
    if "detection" not in mat:
        raise data_error(mat_path, f"has no 'detection' variable (has {[k for k in mat if not k.startswith('__')]})",
                         "Is this a CRCHistoPhenotypes .mat file?")
    points = np.asarray(mat["detection"], dtype=np.float64).reshape(-1, 2)  # absent class: shape (0, 0)
    return points - 1.0


def list_crc(root=None) -> list[CrcImage]:
    """Every image with its points. Accepts ``imgN/`` folders holding all five .mat files
    (the layout in the shared subset) and the official zip's ``Detection/imgN`` +
    ``Classification/imgN`` split of the same image's files."""
    folder = dataset_dir("crchistophenotypes", root)
    dirs: dict[str, list[Path]] = {}
    for parent in (folder, folder / "Detection", folder / "Classification"):
        for d in parent.glob("img*"):
            if d.is_dir() and d.name[3:].isdigit():
                dirs.setdefault(d.name, []).append(d)
    images = []
    for name in sorted(dirs, key=image_order):
        candidates = dirs[name]
        bmp = next((d / f"{name}.bmp" for d in candidates if (d / f"{name}.bmp").is_file()), None)
        if bmp is None:
            raise data_error(candidates[0] / f"{name}.bmp", "image is missing", "Each imgN/ folder needs imgN.bmp")
        points = {}
        for cls in ("detection",) + CLASSES:
            mat = next((d / f"{name}_{cls}.mat" for d in candidates if (d / f"{name}_{cls}.mat").is_file()), None)
            points[cls] = read_points(mat) if mat is not None else np.zeros((0, 2))
        images.append(CrcImage(name, bmp, points))
    if not images:
        raise data_error(folder, "holds no imgN/ folders (empty folder)",
                         "Run `histolean data fetch crchistophenotypes`")
    return images


def window_px(window_um: float, mpp: float) -> int:
    return int(round(window_um / mpp))


def til_windows(crc: CrcImage, shape: tuple[int, int] | None = None, window_um: float = 55.0,
                mpp: float = DEFAULT_MPP, min_positive: int = 2) -> list[dict]:
    """One dict per grid window: x0, y0, width, height, per-class counts, derived_label.

    The grid starts at the image's top-left corner (0, 0) and steps by the window side;
    ``shape`` is the image's (height, width), by default read from the image file. Only
    windows lying wholly inside the image are returned: a last row or column of windows
    that would run past the right or bottom edge is dropped (its pixels are not used).
    """
    side = window_px(window_um, mpp)
    h, w = crc.shape() if shape is None else shape
    rows = []
    for y0 in range(0, h - side + 1, side):
        for x0 in range(0, w - side + 1, side):
            counts = {}
            for cls in ("detection",) + CLASSES:
                xy = crc.points[cls]
                inside = (xy[:, 0] >= x0) & (xy[:, 0] < x0 + side) & (xy[:, 1] >= y0) & (xy[:, 1] < y0 + side)
                counts[cls] = int(inside.sum())
            n_inf = counts["inflammatory"]
            n_classified = sum(counts[c] for c in CLASSES)
            if n_inf >= min_positive:
                label = "til_positive"
            elif n_inf == 1:
                label = "ambiguous_1_inflammatory"
            elif n_classified > 0:
                label = "til_negative"
            else:
                label = "no_nuclei"
            rows.append({"image_id": crc.name, "x0": x0, "y0": y0, "width": side, "height": side,
                         "n_detection": counts["detection"], **{f"n_{c}": counts[c] for c in CLASSES},
                         "derived_label": label})
    return rows


def image_order(name: str) -> tuple:
    """Sort key of an image (or group) name: ``imgN`` by its number (img2 before img10), any name whose
    characters after the third are digits likewise, every other name after those, alphabetically."""
    return (0, int(name[3:]), "") if name[3:].isdigit() else (1, 0, name)


def image_split(names, labels_per_image: dict[str, np.ndarray], fractions=(0.6, 0.2, 0.2), seed: int = 0,
                tries: int = 200) -> dict[str, str]:
    """Images -> train/valid/test, by image (no image in two splits).

    Class balance differs a lot between images, so of ``tries`` seeded shuffles the one
    whose splits' positive fractions are closest to the overall fraction is kept
    (every split must hold both classes). Deterministic for a seed.
    """
    names = sorted(names, key=image_order)
    n = len(names)
    n_valid, n_test = max(1, round(fractions[1] * n)), max(1, round(fractions[2] * n))

    def cut(order):
        return {"valid": order[:n_valid], "test": order[n_valid:n_valid + n_test], "train": order[n_valid + n_test:]}

    best = _most_balanced(names, labels_per_image, cut, seed, tries)
    if best is None:
        raise ValueError(f"image_split: no split of {n} images gives both classes in every split")
    return {names[i]: split for split, idx in best.items() for i in idx}


def image_folds(names, labels_per_image: dict[str, np.ndarray], n_folds: int = 5, seed: int = 0,
                tries: int = 200) -> dict[str, int]:
    """Images -> cross-validation fold 0..n_folds-1, by image (each image in one fold).

    As :func:`image_split`: of ``tries`` seeded shuffles, the one whose folds' positive fractions are
    closest to the overall fraction is kept, and every fold must hold both classes. Deterministic for a seed.
    A clear error when there are fewer images than folds or no assignment gives every fold both classes.
    """
    names = sorted(names, key=image_order)
    if not (isinstance(n_folds, int) and n_folds >= 2):
        raise ValueError(f"image_folds: n_folds must be an integer >= 2, got {n_folds!r}")
    if len(names) < n_folds:
        raise ValueError(f"image_folds: {len(names)} image(s) cannot make {n_folds} folds by image; "
                         f"cross-validation needs at least one image per fold (use fewer folds or more images)")
    best = _most_balanced(names, labels_per_image, lambda order: dict(enumerate(np.array_split(order, n_folds))),
                          seed, tries)
    if best is None:
        raise ValueError(f"image_folds: no assignment of {len(names)} images to {n_folds} folds gives both classes "
                         "(TIL-positive and -negative windows) in every fold; use fewer folds or more images")
    return {names[i]: fold for fold, idx in best.items() for i in idx}


def _most_balanced(names, labels_per_image: dict[str, np.ndarray], partition, seed: int, tries: int) -> dict | None:
    """Of ``tries`` seeded shuffles of the images cut by ``partition`` (shuffled indices -> {part: indices}),
    the one whose parts' positive fractions are closest to the overall one, every part holding both
    classes; None when no shuffle gives that."""
    overall = np.concatenate([labels_per_image[k] for k in names]).mean()
    rng = np.random.default_rng(seed)
    best, best_score = None, np.inf
    for _ in range(tries):
        parts = partition(rng.permutation(len(names)))
        score = 0.0
        for idx in parts.values():
            labels = np.concatenate([labels_per_image[names[i]] for i in idx] or [np.zeros(0)])
            if len(np.unique(labels)) < 2:
                score = np.inf
                break
            score = max(score, abs(labels.mean() - overall))
        if score < best_score:
            best, best_score = parts, score
    return best


def load_til_windows(split: str, root=None, limit: int | None = None, seed: int = 0, size: int | None = None,
                     window_um: float = 55.0, mpp: float = DEFAULT_MPP, min_positive: int = 2,
                     split_seed: int = 0) -> PatchSet:
    """TIL-positive (1) / TIL-negative (0) windows cut from CRCHistoPhenotypes; groups = image id.

    Ambiguous (1 inflammatory) and nucleus-free windows are dropped. The split is by image
    (:func:`image_split` with ``split_seed``, fixed so that ``seed`` only changes the subset).
    """
    split = normalise_split(split, SPLITS, "load_til_windows")
    crcs = list_crc(root)
    windows = {c.name: [w for w in til_windows(c, window_um=window_um, mpp=mpp, min_positive=min_positive)
                        if w["derived_label"] in ("til_positive", "til_negative")] for c in crcs}
    labels_per_image = {k: np.asarray([w["derived_label"] == "til_positive" for w in v], dtype=np.int64)
                        for k, v in windows.items()}
    assignment = image_split([c.name for c in crcs], labels_per_image, seed=split_seed)
    chosen_windows = [(c, w) for c in crcs for w in windows[c.name] if split == "all" or assignment[c.name] == split]
    labels = np.asarray([w["derived_label"] == "til_positive" for _, w in chosen_windows], dtype=np.int64)
    keep = balanced_subset(labels, limit, seed)
    cache: dict[str, np.ndarray] = {}
    images, paths, groups = [], [], []
    for i in keep:
        crc, w = chosen_windows[i]
        if crc.name not in cache:
            cache[crc.name] = crc.image()
        images.append(cache[crc.name][w["y0"]:w["y0"] + w["height"], w["x0"]:w["x0"] + w["width"]])
        paths.append(f"{crc.path}#x{w['x0']}_y{w['y0']}")
        groups.append(crc.name)
    stacked = np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)
    return PatchSet(resize_images(stacked, size), labels[keep], np.asarray(groups), paths, "til_windows", "real", split)
