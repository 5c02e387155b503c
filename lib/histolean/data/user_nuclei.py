"""A user's own nuclei: images with instance masks or QuPath GeoJSON, returned like ``load_monuseg``.

Layouts of ``PATH`` (optionally one level of split folders ``PATH/{train,valid,test}/`` above them):

* ``images/<name>.png|tif|jpg`` + ``masks/<name>.png|tif``: instance label images (0 = background,
  1..n one id per nucleus, 8/16/32-bit). A binary mask (values {0, 1} or {0, 255}) is labelled by its
  4-connected components (:func:`histolean.data.tnbc.instances_from_mask`; touching nuclei merge, a warning);
* ``images/<name>.*`` + ``annotations/<name>.geojson``: QuPath "Export objects as GeoJSON" (a
  FeatureCollection, a list of features or one feature); each Polygon (each part of a MultiPolygon;
  a cell's ``nucleusGeometry`` when present) is one nucleus, rasterised with MoNuSeg's rules
  (:func:`histolean.data.monuseg.rasterise`: clipped, smaller-wins overlaps).

Microns per pixel: the ``mpp`` argument, else ``PATH/dataset.json``, else unknown (None).
``group`` of a sample is its image name. :func:`check_nuclei` is ``histolean data check --kind nuclei``;
:func:`load_nuclei_folder` runs it first and stops with its message.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import SPLIT_ALIASES, InstanceSample, read_rgb
from .folder_check import IMAGE_SUFFIXES, FolderReport, decodes, header, read_info
from .monuseg import Annotation, Region, forms_polygon, rasterise
from .tnbc import instances_from_mask
from .user_patches import PREFIX, SPLITS, folder_path

MIN_IMAGES = 2           # per split: the nuclei notebook trains on some and scores others
GEOJSON_SUFFIXES = (".geojson", ".json")


@dataclass
class Pair:
    image: Path
    target: Path          # a mask image or a GeoJSON file
    split: str
    size: tuple[int, int] | None = None   # (w, h)
    mode: str | None = None
    nuclei: int = 0
    binary: bool = False


@dataclass
class NucleiListing:
    folder: Path
    layout: str
    pairs: list[Pair] = field(default_factory=list)
    mpp: float | None = None


def check_nuclei(path, *, decode: bool = True, mpp: float | None = None,
                 min_images: int = MIN_IMAGES) -> tuple[FolderReport, NucleiListing | None]:
    """Read the folder as the loader does (every mask / GeoJSON parsed); every problem into the report."""
    folder = folder_path(str(path))
    report = FolderReport(str(folder), "nuclei")
    if not folder.is_dir():
        report.block(folder, "is not a folder", "Pass a folder with images/ and masks/ (or annotations/)")
        return report, None
    split_dirs = {SPLIT_ALIASES.get(p.name, p.name): p for p in folder.iterdir() if p.is_dir()}
    split_dirs = {s: p for s, p in split_dirs.items() if s in SPLITS}
    roots = split_dirs or {"all": folder}
    listing = None
    for split, root in sorted(roots.items()):
        part = _list(root, split, report)
        if listing is None:
            listing = NucleiListing(folder, ("split folders, " if split_dirs else "") + part.layout)
        listing.pairs += part.pairs
    for pair in listing.pairs:
        _check_pair(pair, report, decode)
    try:
        listing.mpp = mpp or read_info(folder).get("mpp")
    except ValueError as exc:
        report.block(folder, str(exc), "Fix dataset.json")
    _describe(listing, report, min_images)
    return report, listing


def _list(root: Path, split: str, report: FolderReport) -> NucleiListing:
    images_dir, masks_dir, geo_dir = root / "images", root / "masks", root / "annotations"
    layout = ("images/ + masks/" if masks_dir.is_dir() else "images/ + annotations/ (GeoJSON)" if geo_dir.is_dir()
              else "no masks/ or annotations/") if images_dir.is_dir() else "no images/ folder"
    listing = NucleiListing(root, layout)
    if not images_dir.is_dir():
        report.block(images_dir, "folder does not exist", "Put the images in images/ and the masks in masks/ "
                     "(or QuPath GeoJSON in annotations/), matched by file name")
        return listing
    target_dir, suffixes = (masks_dir, IMAGE_SUFFIXES) if masks_dir.is_dir() else (geo_dir, GEOJSON_SUFFIXES)
    if not target_dir.is_dir():
        report.block(root, "has neither masks/ nor annotations/", "Add masks/<name>.png or annotations/<name>.geojson")
        return listing
    images = {p.stem: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    targets = {p.stem: p for p in sorted(target_dir.iterdir()) if p.suffix.lower() in suffixes}
    for stem, image in images.items():
        if stem in targets:
            listing.pairs.append(Pair(image, targets[stem], split))
        else:
            report.block(image, f"has no {target_dir.name}/{stem}{suffixes[0]}", "Add its annotation or remove it")
    for stem in sorted(set(targets) - set(images)):
        report.block(targets[stem], f"has no image images/{stem}.*", "Add the image or remove the annotation")
    if not images:
        report.block(images_dir, "holds no .png/.jpg/.tif images", "Add the images")
    return listing


def _check_pair(pair: Pair, report: FolderReport, decode: bool) -> None:
    head = header(pair.image)
    problem = head if isinstance(head, str) else (decodes(pair.image) if decode else None)
    if problem:
        report.block(pair.image, problem, "Re-export or delete this image")
        return
    pair.size, pair.mode = head
    try:
        instances, pair.binary = read_target(pair.target, pair.size)
    except ValueError as exc:
        report.block(pair.target, str(exc), "Re-export it or remove the pair")
        return
    pair.nuclei = int(len(np.unique(instances[instances > 0])))


def read_target(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """(int32 instance map of the image's size, whether it came from a binary mask); ValueError says why not."""
    if path.suffix.lower() in GEOJSON_SUFFIXES:
        return rasterise(read_geojson(path), (size[1], size[0]))[0], False
    mask = read_label_image(path)
    if (mask.shape[1], mask.shape[0]) != tuple(size):
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {size[0]}x{size[1]}; "
                         "the pair does not belong together")
    values = np.unique(mask)
    if set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}:
        return instances_from_mask(mask), True
    return mask.astype(np.int32), False


def read_label_image(path: Path) -> np.ndarray:
    """A single-channel label image as integers; colour, negative or fractional labels are refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mask = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot decode the mask (corrupt or truncated file: {exc})") from None
    if mask.ndim == 3:
        if not (mask[..., :3] == mask[..., :1]).all():
            raise ValueError("colour mask (channels differ): labels not in {0..N}; save one channel, 0 = "
                             "background and 1..N one id per nucleus (16-bit PNG for more than 255)")
        mask = mask[..., 0]
    if mask.dtype.kind == "b":
        mask = mask.astype(np.uint8)
    if mask.dtype.kind == "f":
        if not (np.isfinite(mask).all() and (mask == np.round(mask)).all()):
            raise ValueError("labels not in {0..N}: fractional values; save integer instance ids")
    if mask.min(initial=0) < 0:
        raise ValueError(f"labels not in {{0..N}}: negative value {mask.min()}; 0 is background, 1..N the nuclei")
    if mask.max(initial=0) > np.iinfo(np.int32).max:
        raise ValueError("labels not in {0..N}: ids beyond int32")
    return mask.astype(np.int64)


def read_geojson(path: Path) -> Annotation:
    """QuPath GeoJSON -> the polygons as MoNuSeg-style Regions (pixel coordinates x, y)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the GeoJSON ({exc})") from None
    kind = data.get("type") if isinstance(data, dict) else None
    features = (data.get("features") or []) if kind == "FeatureCollection" else [data] if kind == "Feature" \
        else data if isinstance(data, list) else None
    if features is None:
        raise ValueError("not a GeoJSON Feature, FeatureCollection or list of features (QuPath: File > Export "
                         "objects as GeoJSON)")
    regions = []
    for i, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise ValueError(f"feature {i} is not a JSON object")
        geometry = feature.get("nucleusGeometry") or feature.get("geometry") or {}
        kind, coords = geometry.get("type"), geometry.get("coordinates")
        polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
        for j, polygon in enumerate(polygons):
            try:
                xy = np.asarray(polygon[0], dtype=np.float64).reshape(-1, 2)
            except (TypeError, ValueError, IndexError):
                raise ValueError(f"feature {i}: polygon coordinates are not [[x, y], ...]") from None
            if forms_polygon(xy):
                regions.append(Region(str(feature.get("id", i)) + (f".{j}" if j else ""), xy))
    return Annotation(Path(path), None, regions)


def _describe(listing: NucleiListing, report: FolderReport, min_images: int) -> None:
    pairs = listing.pairs
    report.found.append(f"layout: {listing.layout}; {len(pairs)} image(s)")
    counts_ok = report.ok
    for split in sorted({p.split for p in pairs}):
        part = [p for p in pairs if p.split == split]
        report.found.append(f"{split}: {len(part)} image(s), {sum(p.nuclei for p in part)} nuclei")
        if counts_ok and len(part) < min_images:
            report.block(listing.folder / ("" if split == "all" else split), f"{len(part)} image(s) in {split}, "
                         f"fewer than the {min_images} the nuclei notebook needs", "Add images")
    report.found.append(f"image sizes: {dict(Counter(f'{w}x{h}' for w, h in (p.size for p in pairs if p.size)))}; "
                        f"modes: {dict(Counter(p.mode for p in pairs if p.mode))}")
    report.found.append(f"mpp {listing.mpp:g} um/px" if listing.mpp else "mpp unknown (no mpp= and no dataset.json)")
    binary = [p for p in pairs if p.binary]
    if binary:
        report.warn(binary[0].target, f"{len(binary)} binary mask(s): nuclei are their 4-connected components, "
                    "so touching nuclei merge into one", "Export instance label masks (one id per nucleus)")
    empty = [p for p in pairs if p.size and p.nuclei == 0 and p.target.exists()]
    if empty:
        report.warn(empty[0].target, f"{len(empty)} image(s) without any nucleus", "Check the annotation export")
    for mode, n in Counter(p.mode for p in pairs if p.mode and p.mode != "RGB").items():
        example = next(p.image for p in pairs if p.mode == mode)
        report.warn(example, f"{n} image(s) in mode {mode} (not RGB); converted to RGB on load",
                    "Export RGB images to be sure of the colours")


def load_nuclei_folder(path, split: str = "all", root=None, limit: int | None = None, seed: int = 0,
                       mpp: float | None = None) -> list[InstanceSample]:
    """The folder's images with instance maps (``data_kind="user"``), as ``load_monuseg`` returns them.

    ``split``: train / valid / test for a folder with split folders, else "all"; ``limit`` picks a seeded
    subset; ``root`` is accepted (and ignored) so the loader drops in where ``load_monuseg`` was.
    """
    del root
    report, listing = check_nuclei(path, decode=False, mpp=mpp)
    report.raise_or_warn()
    split = SPLIT_ALIASES.get(split, split)
    pairs = [p for p in listing.pairs if split == "all" or p.split == split]
    if not pairs:
        raise ValueError(f"{listing.folder}: no images in split {split!r} (found "
                         f"{sorted({p.split for p in listing.pairs})}). Pass one of those")
    if limit is not None and limit < len(pairs):
        pick = np.sort(np.random.default_rng(seed).choice(len(pairs), size=limit, replace=False))
        pairs = [pairs[i] for i in pick]
    spec = PREFIX + str(listing.folder)
    samples = []
    for pair in pairs:
        image = read_rgb(pair.image)
        instances, _ = read_target(pair.target, (image.shape[1], image.shape[0]))
        samples.append(InstanceSample(image, instances, pair.image.stem, str(pair.image), spec,
                                      group=pair.image.stem, mpp=listing.mpp, data_kind="user"))
    return samples
