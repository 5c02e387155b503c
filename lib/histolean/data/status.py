"""``histolean data status``: what is on disk, how much of it, and how to get what is missing.

Counting reads file names and small label files only, except MoNuSeg (its XML Regions
that form a polygon: the number of instances the loader will produce) and TNBC (the
4-connected components of each mask).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .common import DataError, data_root
from .registry import folders, how_to_get

@dataclass
class DatasetStatus:
    name: str
    found: bool
    path: Path | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    looked_for: Path | None = None
    how_to_get: str = ""


def _count_image_folders(folder: Path, splits) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for split in splits:
        split_dir = folder / split
        if split_dir.is_dir():
            images = (".jpg", ".jpeg", ".png", ".tif")
            counts[split] = {d.name: sum(1 for f in d.iterdir() if f.suffix.lower() in images)
                             for d in sorted(split_dir.iterdir()) if d.is_dir()}
    return counts


def _status_pcam(folder: Path, st: DatasetStatus) -> None:
    from .pcam import SPLITS, _h5_path

    st.counts = _count_image_folders(folder, SPLITS)
    if st.counts:
        st.notes.append("image folders (labels in the folder name)")
    for split in SPLITS:
        if split not in st.counts and _h5_path(folder, split, "y") is not None:
            import h5py
            import numpy as np

            y_path = _h5_path(folder, split, "y")
            if y_path.suffix == ".gz":
                st.notes.append(f"{y_path.name} still gzipped (decompressed on first load)")
                continue
            with h5py.File(y_path, "r") as f:
                values, n = np.unique(np.asarray(f["y"]).reshape(-1), return_counts=True)
            st.counts[split] = {str(int(v)): int(c) for v, c in zip(values, n)}
            st.notes.append(f"{split}: original HDF5")


def _status_idc(folder: Path, st: DatasetStatus) -> None:
    from .idc import list_idc

    rows = list_idc(folder.parent)
    counts: dict[str, Counter] = defaultdict(Counter)
    patients: dict[str, set] = defaultdict(set)
    for r in rows:
        counts[r["split"]][str(r["label"])] += 1
        patients[r["split"]].add(r["patient"])
    st.counts = {s: dict(sorted(c.items())) for s, c in sorted(counts.items())}
    st.notes.append("patients per split: " + ", ".join(f"{s} {len(p)}" for s, p in sorted(patients.items())))
    shared = set.intersection(*patients.values()) if len(patients) > 1 else set()
    if shared:
        st.notes.append(f"WARNING: {len(shared)} patient(s) in more than one split")


def _status_monuseg(folder: Path, st: DatasetStatus) -> None:
    from .monuseg import annotation_summary, list_monuseg

    for split in ("train", "test"):
        if not (folder / split).is_dir():
            continue
        pairs = list_monuseg(split, folder.parent)
        nuclei, skipped, no_mpp = 0, 0, []
        for _, xml in pairs:
            summary = annotation_summary(xml)
            nuclei += summary["polygons"]
            skipped += summary["regions"] - summary["polygons"]
            if summary["mpp"] is None:
                no_mpp.append(xml.stem)
        st.counts[split] = {"images": len(pairs), "nuclei": nuclei}
        if skipped:
            st.notes.append(f"{split}: {skipped} Region(s) with < 3 distinct vertices skipped")
        if no_mpp:
            st.notes.append(f"{split}: no MicronsPerPixel in {', '.join(no_mpp)} (mpp=None; pass default_mpp=)")


def _status_tnbc(folder: Path, st: DatasetStatus) -> None:
    from .common import read_gray
    from .tnbc import instances_from_mask, list_tnbc

    pairs = list_tnbc(folder.parent)
    nuclei = sum(int(instances_from_mask(read_gray(m)).max()) for _, m in pairs)
    st.counts["all"] = {"images": len(pairs), "nuclei": nuclei,
                        "slides": len({p.parent.name for p, _ in pairs})}
    st.notes.append("nuclei = 4-connected components of the binary masks")


def _status_crc(folder: Path, st: DatasetStatus) -> None:
    from .crc import CLASSES, list_crc, til_windows

    images = list_crc(folder.parent)
    st.counts["all"] = {"images": len(images),
                        "detections": sum(len(c.points["detection"]) for c in images),
                        **{c: sum(len(i.points[c]) for i in images) for c in CLASSES}}
    windows = Counter(w["derived_label"] for c in images for w in til_windows(c))
    st.counts["til_windows_100px"] = dict(sorted(windows.items()))


def _status_til(folder: Path, st: DatasetStatus) -> None:
    from .til import list_til

    for split, rows in sorted(list_til(folder.parent).items()):
        st.counts[split] = dict(sorted(Counter(str(r["label"]) for r in rows).items()))
        st.notes.append(f"{split}: slides {sorted({r['slide'].split('.')[0] for r in rows})}")


def _status_wsi(folder: Path, st: DatasetStatus) -> None:
    import openslide

    slides = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".svs", ".tif", ".tiff", ".ndpi", ".mrxs"))
    st.counts["all"] = {"slides": len(slides)}
    for p in slides:
        try:
            with openslide.OpenSlide(str(p)) as s:
                mpp = s.properties.get("openslide.mpp-x")
                st.notes.append(f"{p.name}: {s.dimensions[0]}x{s.dimensions[1]} px, {s.level_count} level(s), "
                                + (f"mpp {float(mpp):.4f}" if mpp else "NO mpp (open with mpp=)"))
        except openslide.OpenSlideError as exc:
            st.notes.append(f"{p.name}: OpenSlide cannot open it ({exc})")


def _no_counts(folder: Path, st: DatasetStatus) -> None:
    st.notes.append("found; no counter for this dataset yet")


_COUNTERS = {"pcam": _status_pcam, "idc": _status_idc, "monuseg": _status_monuseg, "tnbc": _status_tnbc,
             "crchistophenotypes": _status_crc, "til": _status_til, "wsi": _status_wsi}


def dataset_status(root=None, names=None) -> list[DatasetStatus]:
    """One status per known dataset (or per dataset folder of ``names``): found (where, counts per split
    and class) or how to get it."""
    base = data_root(root)
    out = []
    for name in folders():
        if names is not None and name not in names:
            continue
        count = _COUNTERS.get(name, _no_counts)
        folder = base / name
        if not folder.is_dir():
            out.append(DatasetStatus(name, False, looked_for=folder, how_to_get=how_to_get(name)))
            continue
        st = DatasetStatus(name, True, path=folder)
        try:
            count(folder, st)
        except DataError as exc:
            st.notes.append(f"ERROR: {exc}")
        if (folder / "PROVENANCE.md").is_file():
            st.notes.append("provenance: PROVENANCE.md")
        out.append(st)
    return out


def format_status(statuses: list[DatasetStatus]) -> str:
    """A readable table: one block per dataset, counts per split and class."""
    lines = []
    for st in statuses:
        if not st.found:
            lines.append(f"[missing] {st.name}")
            lines.append(f"    looked for: {st.looked_for}")
            lines.append(f"    how to get: {st.how_to_get}")
            continue
        lines.append(f"[found]   {st.name}  ({st.path})")
        width = max((len(s) for s in st.counts), default=0)
        for split, classes in st.counts.items():
            cells = "  ".join(f"{k}={v}" for k, v in classes.items())
            lines.append(f"    {split:<{width}}  {cells}   (total {sum(classes.values())})"
                         if all(k.isdigit() for k in classes) else f"    {split:<{width}}  {cells}")
        lines.extend(f"    - {note}" for note in st.notes)
    return "\n".join(lines)
