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

SOURCES: dict[str, dict[str, str]] = {
    "pcam": {
        "title": "PatchCamelyon (Veeling et al. 2018)",
        "source": "https://github.com/basveeling/pcam ; files on Zenodo doi:10.5281/zenodo.2546921",
        "licence": "CC0 1.0",
        "layout": "camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5[.gz], or <split>/<label>/*.jpg|png|tif",
        "fetch": "yes",
    },
    "idc": {
        "title": "IDC breast histopathology patches (Janowczyk & Madabhushi 2016)",
        "source": "http://andrewjanowczyk.com/wp-static/IDC_regular_ps50_idx5.zip "
                  "(also Kaggle paultimothymooney/breast-histopathology-images)",
        "licence": "no explicit licence from the authors (cite Cruz-Roa 2014, Janowczyk 2016); Kaggle copy CC0 1.0",
        "layout": "<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<0|1>.png [+ labels.csv with a split column]",
        "fetch": "yes",
    },
    "monuseg": {
        "title": "MoNuSeg 2018 (Kumar et al. 2017, 2019)",
        "source": "https://monuseg.grand-challenge.org/Data/ (Google Drive links after sign-in)",
        "licence": "CC BY-NC-SA 4.0",
        "layout": "<train|test>/images/<name>.tif + <train|test>/annotations/<name>.xml",
        "fetch": "no (manual download from the challenge page)",
    },
    "tnbc": {
        "title": "TNBC nuclei segmentation (Naylor et al. 2019)",
        "source": "https://zenodo.org/record/1175282 (TNBC_NucleiSegmentation.zip)",
        "licence": "CC BY 4.0 (as reported on Zenodo)",
        "layout": "Slide_XX/XX_N.png + GT_XX/XX_N.png",
        "fetch": "yes",
    },
    "crchistophenotypes": {
        "title": "CRCHistoPhenotypes (Sirinukunwattana et al. 2016)",
        "source": "https://warwick.ac.uk/fac/cross_fac/tia/data/crchistolabelednucleihe/",
        "licence": "research use only; cite Sirinukunwattana et al., IEEE TMI 2016",
        "layout": "imgN/imgN.bmp + imgN/imgN_{detection,epithelial,fibroblast,inflammatory,others}.mat",
        "fetch": "yes",
    },
    "til": {
        "title": "TIL patches (Saltz et al. 2018, u24_lymphocyte)",
        "source": "https://github.com/SBU-BMI/u24_lymphocyte (data/training_data_cnn/); full maps: "
                  "https://doi.org/10.7937/K9/TCIA.2018.Y75F9W1 (TCIA TIL-WSI-TCGA)",
        "licence": "BSD-3-Clause (repository); pixels from TCGA open access",
        "layout": "<name>_{train,val,test}_data/*.png + label.txt ('<file> <0|1> <slide> <x> <y>')",
        "fetch": "no (clone the repository)",
    },
    "wsi": {
        "title": "whole-slide images (OpenSlide test data, TCGA)",
        "source": "https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/",
        "licence": "CMU-1 files: CC0 1.0; TCGA slides: NIH GDC open-access policy",
        "layout": "*.svs, *.tif, *.tiff, *.ndpi, *.mrxs readable by OpenSlide",
        "fetch": "yes (CMU-1-Small-Region.svs)",
    },
}


def how_to_get(name: str) -> str:
    src = SOURCES.get(name)
    if src is None:
        return f"Unknown dataset '{name}'; known: {sorted(SOURCES)}."
    fetch = "run `histolean data fetch " + name + "`" if src["fetch"].startswith("yes") else src["fetch"]
    return (f"{src['title']}: get it from {src['source']} (licence: {src['licence']}); expected layout "
            f"{src['layout']}; {fetch}. Without it, benchmarks fall back to the procedural generator "
            f"(data_kind=synthetic).")


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
            counts[split] = {d.name: sum(1 for f in d.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif"))
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


_COUNTERS = {"pcam": _status_pcam, "idc": _status_idc, "monuseg": _status_monuseg, "tnbc": _status_tnbc,
             "crchistophenotypes": _status_crc, "til": _status_til, "wsi": _status_wsi}


def dataset_status(root=None) -> list[DatasetStatus]:
    """One status per known dataset: found (where, counts per split and class) or how to get it."""
    base = data_root(root)
    out = []
    for name, count in _COUNTERS.items():
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
