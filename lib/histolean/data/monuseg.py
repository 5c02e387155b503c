"""MoNuSeg: ``.tif`` tiles + Aperio ImageScope ``.xml`` outlines -> instance label maps.

Layout: ``<root>/monuseg/<split>/images/<name>.tif`` and
``<root>/monuseg/<split>/annotations/<name>.xml`` (split = train, test).

Rasterisation rules (one pinned rasteriser, so every benchmark sees the same masks):

* each ``<Region>`` is one nucleus; its ``<Vertex X Y>`` list is a closed polygon in
  pixel coordinates (x = column, y = row);
* vertices are clipped to the image before rasterising (a few lie at -3 or 1002);
* a Region with fewer than 3 distinct vertices does not form a polygon and is skipped
  (one in TCGA-50-5931 has 2 vertices); every other Region becomes one instance;
* pixels are filled with :func:`skimage.draw.polygon` (pixel centres inside the polygon);
  a Region whose polygon covers no pixel centre (a sliver) gets the pixels on its outline
  (:func:`skimage.draw.polygon_perimeter`), so every polygon Region has an instance;
* **overlaps: the smaller Region wins** (Regions are painted from the largest area to the
  smallest), so a small nucleus drawn over a large one keeps its pixels;
* instance ids are 1..n in XML order of the kept Regions (``region_ids`` maps back).

Microns per pixel come from the root ``MicronsPerPixel`` attribute. When it is absent
(TCGA-NH-A8F7-01A-01-TS1 lacks it) ``mpp`` is None, unless ``default_mpp`` is given, in which
case that value is used and a warning names the file. The XML is parsed by defusedxml's SAX
parser: a DTD or entity declarations (billion laughs, external entities) are refused with a
clear error.

Rasterising a 1000 x 1000 tile takes ~0.4 s, so instance maps are cached on disk in
``$HISTOLEAN_CACHE`` (else ``~/.cache/histolean``) keyed by the XML's path, size, mtime
and the rasteriser version; the cache is skipped silently when it is not writable.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histolean.util import atomic
from .common import InstanceSample, data_error, dataset_dir, normalise_split, read_rgb, warn

SPLITS = ("train", "test")


@dataclass
class Region:
    region_id: str
    xy: np.ndarray  # (n, 2) float: x = column, y = row


@dataclass
class Annotation:
    path: Path
    mpp: float | None
    regions: list[Region]  # every Region in the file, degenerate ones included

    @property
    def polygon_regions(self) -> list[Region]:
        return [r for r in self.regions if forms_polygon(r.xy)]


def forms_polygon(xy: np.ndarray) -> bool:
    return len(np.unique(xy, axis=0)) >= 3 if len(xy) else False


def parse_annotation(path: str | os.PathLike) -> Annotation:
    """Parse an Aperio ImageScope XML with defusedxml; errors name the file and the problem.

    defusedxml's SAX parser refuses a DTD's entity declarations and external references,
    so a billion-laughs or external-entity file cannot expand. A streaming handler that keeps
    only Regions and Vertices is ~3x faster than building the element tree.
    """
    import xml.sax

    import defusedxml.sax
    from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

    path = Path(path)
    regions: list[tuple[str, list]] = []
    root_attrs: dict[str, str] = {}
    state = {"root": None, "vertices": None}

    class Handler(xml.sax.ContentHandler):
        def startElement(self, name, attrs):
            if name == "Vertex":
                if state["vertices"] is None:
                    raise ValueError("a <Vertex> outside any <Region>")
                state["vertices"].append((attrs.get("X"), attrs.get("Y")))
            elif name == "Region":
                state["vertices"] = []
                regions.append((str(attrs.get("Id")), state["vertices"]))
            if state["root"] is None:
                state["root"] = name
                root_attrs.update(attrs)

    try:
        with open(path, "rb") as f:
            defusedxml.sax.parse(f, Handler(), forbid_dtd=True)
    except FileNotFoundError:
        raise data_error(path, "annotation file does not exist",
                         "Each image needs <name>.xml in annotations/") from None
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden) as exc:
        raise data_error(path, f"XML declares a DTD or entities ({type(exc).__name__}); refused because "
                         "entity expansion can exhaust memory or read local files",
                         "Use the original ImageScope XML, which has no DTD") from None
    except xml.sax.SAXParseException as exc:
        raise data_error(path, f"malformed XML ({exc.getMessage()} at line {exc.getLineNumber()})",
                         "Re-download the annotation file") from None
    except ValueError as exc:
        raise data_error(path, f"unexpected structure ({exc})", "Is this an Aperio ImageScope XML?") from None
    if state["root"] != "Annotations":
        raise data_error(path, f"root element is <{state['root']}>, not <Annotations>",
                         "Is this an Aperio ImageScope XML?")
    mpp_text = root_attrs.get("MicronsPerPixel")
    try:
        mpp = float(mpp_text) if mpp_text not in (None, "") else None
    except ValueError:
        raise data_error(path, f"MicronsPerPixel={mpp_text!r} is not a number", "Fix or remove the attribute") from None
    parsed = []
    for region_id, vertices in regions:
        try:
            xy = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
            if not np.isfinite(xy).all():
                raise ValueError
        except (TypeError, ValueError):
            raise data_error(path, f"Region {region_id} has a vertex without numeric X/Y",
                             "Re-download the annotation file") from None
        parsed.append(Region(region_id, xy))
    return Annotation(path, mpp, parsed)


def rasterise(annotation: Annotation, shape: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """Instance label map (int32, 0 = background) of the polygon Regions; see the module rules."""
    from skimage.draw import polygon, polygon_perimeter

    h, w = shape
    kept = annotation.polygon_regions
    labels = np.zeros((h, w), dtype=np.int32)
    pixel_sets = []
    for region in kept:
        cols = np.clip(region.xy[:, 0], 0, w - 1)
        rows = np.clip(region.xy[:, 1], 0, h - 1)
        rr, cc = polygon(rows, cols, shape=(h, w))
        if len(rr) == 0:
            rr, cc = polygon_perimeter(np.round(rows).astype(int), np.round(cols).astype(int), shape=(h, w))
        pixel_sets.append((rr, cc))
    # Largest first, so the smaller of two overlapping Regions is painted last and wins.
    order = sorted(range(len(kept)), key=lambda i: -len(pixel_sets[i][0]))
    for i in order:
        rr, cc = pixel_sets[i]
        labels[rr, cc] = i + 1
    return labels, [r.region_id for r in kept]


RASTERISER_VERSION = "skimage-polygon/smaller-wins/v1"


def cache_dir() -> Path:
    env = os.environ.get("HISTOLEAN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "histolean"


def _cache_file(xml_path: Path, shape: tuple[int, int]) -> Path:
    stat = xml_path.stat()
    key = f"{xml_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{shape}|{RASTERISER_VERSION}"
    return cache_dir() / "monuseg" / (hashlib.sha1(key.encode()).hexdigest() + ".npz")


def instance_map(xml_path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, list[str], float | None]:
    """Rasterised instance map of an XML (through the disk cache), its Region ids and its mpp."""
    cached = _cache_file(xml_path, shape)
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                mpp = float(z["mpp"]) if np.isfinite(z["mpp"]) else None
                return z["instances"], [str(r) for r in z["region_ids"]], mpp
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is recomputed and rewritten
    annotation = parse_annotation(xml_path)
    instances, region_ids = rasterise(annotation, shape)
    try:
        with atomic.atomic_path(cached) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, instances=instances, region_ids=np.asarray(region_ids, dtype=str),
                                mpp=np.float64(annotation.mpp if annotation.mpp is not None else np.nan))
    except OSError:
        pass  # read-only home or cache: just slower
    return instances, region_ids, annotation.mpp


def annotation_summary(xml_path: Path) -> dict:
    """{"regions", "polygons", "mpp"} of an XML, cached on disk like the instance maps (for status)."""
    cached = _cache_file(xml_path, (0, 0)).with_suffix(".json")
    if cached.is_file():
        try:
            return json.loads(cached.read_text())
        except (OSError, ValueError):
            pass
    ann = parse_annotation(xml_path)
    summary = {"regions": len(ann.regions), "polygons": len(ann.polygon_regions), "mpp": ann.mpp}
    try:
        atomic.write_text(cached, json.dumps(summary))
    except OSError:
        pass
    return summary


@functools.lru_cache(maxsize=64)
def _load_pair(image_path: str, xml_path: str, mtimes: tuple[float, float]) -> tuple:
    # Also cached in memory: benchmarks reload the same tiles many times in one process.
    image = read_rgb(image_path)
    instances, region_ids, mpp = instance_map(Path(xml_path), image.shape[:2])
    image.setflags(write=False)
    instances.setflags(write=False)
    return image, instances, tuple(region_ids), mpp


def list_monuseg(split: str, root=None) -> list[tuple[Path, Path]]:
    """(image, annotation) path pairs of a split; an image without its XML is an error."""
    folder = dataset_dir("monuseg", root)
    pairs = []
    for s in (SPLITS if split == "all" else (split,)):
        image_dir = folder / s / "images"
        if not image_dir.is_dir():
            raise data_error(image_dir, "folder does not exist",
                             "Expected <split>/images/*.tif and <split>/annotations/*.xml")
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".tif", ".tiff", ".png"))
        if not images:
            raise data_error(image_dir, "holds no .tif images (empty folder)", "Re-download MoNuSeg")
        stems = {image.stem for image in images}
        annotations = folder / s / "annotations"
        for xml in sorted(annotations.glob("*.xml")) if annotations.is_dir() else []:
            if xml.stem not in stems:
                raise data_error(xml, f"annotation has no image {xml.stem}.tif in {image_dir}: the annotation folder "
                                 "does not match the image folder", "Restore the image or remove the annotation")
        for image in images:
            xml = annotations / (image.stem + ".xml")
            if not xml.is_file():
                raise data_error(xml, f"annotation for {image.name} is missing", "Restore it or remove the image")
            pairs.append((image, xml))
    return pairs


def load_monuseg(split: str, root=None, limit: int | None = None, seed: int = 0,
                 default_mpp: float | None = None) -> list[InstanceSample]:
    """MoNuSeg tiles with instance maps (train, test or all); ``limit`` picks a seeded subset.

    The arrays are shared with a cache and read-only: copy before modifying.
    """
    split = normalise_split(split, SPLITS, "load_monuseg")
    pairs = list_monuseg(split, root)
    if limit is not None and limit < len(pairs):
        pick = np.sort(np.random.default_rng(seed).choice(len(pairs), size=limit, replace=False))
        pairs = [pairs[i] for i in pick]
    samples = []
    for image_path, xml_path in pairs:
        mtimes = (image_path.stat().st_mtime, xml_path.stat().st_mtime)
        image, instances, region_ids, mpp = _load_pair(str(image_path), str(xml_path), mtimes)
        if image.shape[:2] != instances.shape:
            raise data_error(image_path, "image and instance map differ in size", "Re-download the pair")
        if mpp is None and default_mpp is not None:
            warn(f"{xml_path}: no MicronsPerPixel attribute; using default_mpp={default_mpp}")
            mpp = default_mpp
        samples.append(InstanceSample(image, instances, image_path.stem, str(image_path), "monuseg",
                                      group=image_path.stem[:12], mpp=mpp, region_ids=list(region_ids)))
    return samples
