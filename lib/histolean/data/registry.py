"""One record per dataset: where it lives, where it comes from, its licence, its size, how to get it.

A leaf (no loaders, no I/O): the loaders, ``histolean data status`` and ``histolean data fetch``
all read the same :data:`DATASETS`, so a dataset's facts are written once. Checksums: PCam md5s
as published in the basveeling/pcam README; the CMU-1-Small-Region sha256 was computed from a
byte-exact copy (git blob 1125dcd0...). Where none is published, the fetch prints the sha256 of
the download for the record.
"""

from __future__ import annotations

from dataclasses import dataclass

# what a result row was computed on; user: a user's own folder (dataset "folder:PATH");
# none: a cost-only row that touches no data
DATA_KINDS = ("real", "synthetic", "user", "none")


@dataclass(frozen=True)
class RemoteFile:
    """One file of an official download; ``unpack`` archives are extracted into the dataset folder."""

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    unpack: bool = False


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    folder: str                 # under the data root; a derived set names the folder it is cut from
    source: str                 # official source (URL, DOI)
    licence: str
    layout: str                 # the files the loader expects in the folder
    obtain: str = ""            # how to get it when `histolean data fetch` cannot
    files: tuple[RemoteFile, ...] = ()   # what `histolean data fetch` downloads
    download_note: str = ""     # size, missing checksums, known upstream changes
    patch_px: int | None = None  # native side of a classification patch
    mpp: float | None = None    # microns per pixel of the images, when the source states it
    full_items: int | None = None   # patches (or images) of the complete set: tells a subset from it

    @property
    def fetchable(self) -> bool:
        return bool(self.files)

    @property
    def derived(self) -> bool:
        """Cut from another dataset's folder (no folder, status or download of its own)."""
        return self.folder != self.name


_PCAM_MD5 = {  # basveeling/pcam README
    "camelyonpatch_level_2_split_train_x.h5.gz": "1571f514728f59376b705fc836ff4b63",
    "camelyonpatch_level_2_split_train_y.h5.gz": "35c2d7259d906cfc8143347bb8e05be7",
    "camelyonpatch_level_2_split_valid_x.h5.gz": "d8c2d60d490dbd479f8199bdfa0cf6ec",
    "camelyonpatch_level_2_split_valid_y.h5.gz": "60a7035772fbdb7f34eb86d4420cf66a",
    "camelyonpatch_level_2_split_test_x.h5.gz": "d5b63470df7cfa627aeec8b9dc0c066e",
    "camelyonpatch_level_2_split_test_y.h5.gz": "2b85f58b927af9964a4c15b8f7e8f179",
}

_CRC = dict(
    title="CRCHistoPhenotypes (Sirinukunwattana et al. 2016)",
    folder="crchistophenotypes",
    source="https://warwick.ac.uk/fac/cross_fac/tia/data/crchistolabelednucleihe/",
    licence="research use only; cite Sirinukunwattana et al., IEEE TMI 2016",
    layout="imgN/imgN.bmp + imgN/imgN_{detection,epithelial,fibroblast,inflammatory,others}.mat",
    mpp=0.55,  # 20x scans, per the dataset paper
)

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        "pcam", "PatchCamelyon (Veeling et al. 2018)", "pcam",
        source="https://github.com/basveeling/pcam ; files on Zenodo doi:10.5281/zenodo.2546921",
        licence="CC0 1.0",
        layout="camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5[.gz], or <split>/<label>/*.jpg|png|tif",
        files=tuple(RemoteFile(f"https://zenodo.org/records/2546921/files/{name}?download=1", name, md5=md5)
                    for name, md5 in _PCAM_MD5.items()),
        download_note="about 7.5 GB. Third-party reports say Zenodo's valid/test files were replaced in 2019; a "
                      "checksum mismatch on those names may be that, not a broken download.",
        patch_px=96, mpp=0.972, full_items=327_680),  # Camelyon16 level 2: 4 x 0.243 um
    Dataset(
        "idc", "IDC breast histopathology patches (Janowczyk & Madabhushi 2016)", "idc",
        source="http://andrewjanowczyk.com/wp-static/IDC_regular_ps50_idx5.zip "
               "(also Kaggle paultimothymooney/breast-histopathology-images)",
        licence="no explicit licence from the authors (cite Cruz-Roa 2014, Janowczyk 2016); Kaggle copy CC0 1.0",
        layout="<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<0|1>.png [+ labels.csv with a split column]",
        files=(RemoteFile("http://andrewjanowczyk.com/wp-static/IDC_regular_ps50_idx5.zip",
                          "IDC_regular_ps50_idx5.zip", unpack=True),),
        download_note="about 1.6 GB; no checksum is published",
        patch_px=50, full_items=277_524),
    Dataset(
        "monuseg", "MoNuSeg 2018 (Kumar et al. 2017, 2019)", "monuseg",
        source="https://monuseg.grand-challenge.org/Data/ (Google Drive links after sign-in)",
        licence="CC BY-NC-SA 4.0",
        layout="<train|test>/images/<name>.tif + <train|test>/annotations/<name>.xml",
        obtain="no direct download (Google Drive links on the challenge page): download it by hand",
        # full_items: the 30 training + 14 test images the paper uses (the 2018 release: 37 + 14)
        mpp=0.25, full_items=44),  # 40x; each XML states its own MicronsPerPixel
    Dataset(
        "tnbc", "TNBC nuclei segmentation (Naylor et al. 2019)", "tnbc",
        source="https://zenodo.org/record/1175282 (TNBC_NucleiSegmentation.zip)",
        licence="CC BY 4.0 (as reported on Zenodo)",
        layout="Slide_XX/XX_N.png + GT_XX/XX_N.png",
        files=(RemoteFile("https://zenodo.org/records/1175282/files/TNBC_NucleiSegmentation.zip?download=1",
                          "TNBC_NucleiSegmentation.zip", unpack=True),),
        download_note="no checksum is published", full_items=50),
    Dataset(
        "crchistophenotypes", **_CRC,
        files=(RemoteFile("https://warwick.ac.uk/fac/cross_fac/tia/data/crchistolabelednucleihe/"
                          "crchistophenotypes_2016_04_28.zip", "crchistophenotypes_2016_04_28.zip", unpack=True),),
        download_note="research use only; no checksum is published", full_items=100),
    Dataset("til_windows", **{**_CRC, "title": "TIL windows cut from CRCHistoPhenotypes (55 um, derived labels)"},
            patch_px=100),
    Dataset(
        "til", "TIL patches (Saltz et al. 2018, u24_lymphocyte)", "til",
        source="https://github.com/SBU-BMI/u24_lymphocyte (data/training_data_cnn/); full maps: "
               "https://doi.org/10.7937/K9/TCIA.2018.Y75F9W1 (TCIA TIL-WSI-TCGA)",
        licence="BSD-3-Clause (repository); pixels from TCGA open access",
        layout="<name>_{train,val,test}_data/*.png + label.txt ('<file> <0|1> <slide> <x> <y>')",
        obtain="clone https://github.com/SBU-BMI/u24_lymphocyte",
        patch_px=300),
    Dataset(
        "wsi", "whole-slide images (OpenSlide test data, TCGA)", "wsi",
        source="https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/",
        licence="CMU-1 files: CC0 1.0; TCGA slides: NIH GDC open-access policy",
        layout="*.svs, *.tif, *.tiff, *.ndpi, *.mrxs readable by OpenSlide",
        files=(RemoteFile("https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/CMU-1-Small-Region.svs",
                          "CMU-1-Small-Region.svs",
                          sha256="ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"),),
        download_note="fetches CMU-1-Small-Region.svs; each slide records its own mpp"),
)}


def dataset(name: str) -> Dataset:
    """The record of ``name``; an unknown name is an error listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None


def folders() -> list[str]:
    """The dataset folders under the data root (derived sets share their source's folder)."""
    return [d.name for d in DATASETS.values() if not d.derived]


def how_to_get(name: str) -> str:
    """Where the data comes from, its licence, the expected layout and the command that fetches it."""
    record = DATASETS.get(name)
    if record is None:
        return f"Unknown dataset '{name}'; known: {sorted(DATASETS)}."
    fetch = f"run `histolean data fetch {record.folder}`" if DATASETS[record.folder].fetchable \
        else DATASETS[record.folder].obtain
    return (f"{record.title}: get it from {record.source} (licence: {record.licence}); expected layout "
            f"{record.layout}; {fetch}. Without it, benchmarks fall back to the procedural generator "
            f"(data_kind=synthetic).")
