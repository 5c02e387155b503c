"""TNBC nuclei (Naylor et al.): ``Slide_XX/XX_N.png`` images + ``GT_XX/XX_N.png`` binary masks.

Images may be RGBA (alpha dropped) or RGB. The masks are binary, not instance
labelled: **instances are the 4-connected components of the mask** (pixels
touching only diagonally are separate nuclei), via ``skimage.measure.label(
connectivity=1)``. Touching nuclei therefore merge; the authors count ~4,022
nuclei over the 50 images, 4-connectivity gives 4,056. ``group`` is the slide
(patient) number: split by it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import InstanceSample, data_error, dataset_dir, read_gray, read_rgb


def list_tnbc(root=None) -> list[tuple[Path, Path]]:
    """(image, mask) path pairs; an image without a mask, or a mask without an image (the mask folder does
    not match the image folder), is an error naming the file."""
    folder = dataset_dir("tnbc", root)
    pairs = []
    for gt_dir in sorted(folder.glob("GT_*")):
        slide_dir = folder / ("Slide_" + gt_dir.name[len("GT_"):])
        for mask in sorted(gt_dir.glob("*.png")):
            if not (slide_dir / mask.name).is_file():
                raise data_error(mask, f"mask has no image {slide_dir / mask.name}: the mask folder does not match "
                                 "the image folder", "Restore the image or remove the mask")
    for slide_dir in sorted(folder.glob("Slide_*")):
        for image in sorted(slide_dir.glob("*.png")):
            mask = folder / ("GT_" + slide_dir.name[len("Slide_"):]) / image.name
            if not mask.is_file():
                raise data_error(mask, f"mask for {image} is missing", "Restore GT_XX/ next to Slide_XX/")
            pairs.append((image, mask))
    if not pairs:
        raise data_error(folder, "holds no Slide_XX/*.png images (empty folder)", "Run `histolean data fetch tnbc`")
    return pairs


def instances_from_mask(mask: np.ndarray) -> np.ndarray:
    """Binary mask -> int32 instance map of its 4-connected components."""
    from skimage.measure import label

    return label(mask > 0, connectivity=1).astype(np.int32)


def load_tnbc(root=None, limit: int | None = None, seed: int = 0, slides=None) -> list[InstanceSample]:
    """All TNBC crops (or those of ``slides``, e.g. ["01", "02"]) with instance maps."""
    pairs = list_tnbc(root)
    if slides is not None:
        wanted = {str(s).zfill(2) for s in slides}
        pairs = [p for p in pairs if p[0].parent.name[len("Slide_"):] in wanted]
    if limit is not None and limit < len(pairs):
        pick = np.sort(np.random.default_rng(seed).choice(len(pairs), size=limit, replace=False))
        pairs = [pairs[i] for i in pick]
    samples = []
    for image_path, mask_path in pairs:
        image, mask = read_rgb(image_path), read_gray(mask_path)
        if image.shape[:2] != mask.shape:
            raise data_error(mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                             f"{image.shape[1]}x{image.shape[0]}", "The pair does not belong together")
        samples.append(InstanceSample(image, instances_from_mask(mask), image_path.stem, str(image_path), "tnbc",
                                      group=image_path.parent.name[len("Slide_"):]))
    return samples
