"""Procedural H&E-like images for tests and for offline runs with no data.

Colours follow the Beer-Lambert stain model (Ruifrok & Johnston 2001): each pixel's
optical density is hematoxylin concentration x the hematoxylin OD vector plus eosin
concentration x the eosin vector; RGB = 255 exp(-OD). Eosin stroma is smooth noise
plus fibre streaks; nuclei are hematoxylin blobs of two kinds:

* lymphocyte-like: small (radius ~4% of a 96-px patch), round, dense and dark;
* tumour-like: large (~9%), irregular (random radial harmonics), pale with chromatin speckle.

Patch label 1 ("lymphocyte-rich", the TIL-positive analogue) draws many lymphocytes and few
tumour nuclei, label 0 the reverse; the Poisson counts overlap, the stain strength varies per
patch and 5% of labels are flipped, so the task is learnable but not trivial. Tiles carry
exact instance masks (nuclei never overlap; the image is rendered from the mask). Everything
is deterministic for a seed, and everything made here has ``data_kind="synthetic"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histolean.util import atomic
from .common import InstanceSample, PatchSet

HEMATOXYLIN = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
EOSIN = np.array([0.07, 0.99, 0.11]) / np.linalg.norm([0.07, 0.99, 0.11])
LABEL_NOISE = 0.05


@dataclass(frozen=True)
class NucleusKind:
    radius: float        # fraction of the reference 96-px patch side
    irregularity: float  # amplitude of the radial harmonics
    density: tuple[float, float]  # hematoxylin concentration range
    speckle: float       # chromatin texture amplitude


LYMPHOCYTE = NucleusKind(radius=0.04, irregularity=0.05, density=(1.3, 1.7), speckle=0.05)
TUMOUR = NucleusKind(radius=0.09, irregularity=0.25, density=(0.45, 0.75), speckle=0.35)
REFERENCE_SIDE = 96
# Physical scale of a patch drawn at size 96: a lymphocyte (radius 0.04 * 96 = 3.8 px) is ~7 um
# across at 0.9 um/px, close to PCam's ~0.97 um/px. Tiles report it; slides rescale to their own mpp.
GENERATOR_MPP = 0.9


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Unit-variance smooth noise with correlation length ~sigma px.

    Large sigmas are made at low resolution and zoomed up: a full-size Gaussian with a
    kernel hundreds of pixels wide would dominate the cost of a slide.
    """
    from scipy.ndimage import gaussian_filter, zoom

    step = max(1, int(sigma // 4))
    small_shape = tuple(max(2, -(-n // step)) for n in shape)
    field = gaussian_filter(rng.standard_normal(small_shape), sigma=sigma / step, mode="wrap")
    if step > 1:
        field = zoom(field, step, order=1)[: shape[0], : shape[1]]
    return field / (field.std() + 1e-8)


def _stroma(rng: np.random.Generator, h: int, w: int, gaps: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Eosin and background hematoxylin concentration maps of connective tissue."""
    from scipy.ndimage import gaussian_filter

    blobs = _smooth_noise(rng, (h, w), sigma=max(h, w) / 10)
    fibres = gaussian_filter(rng.standard_normal((h, w)), sigma=(0.8, 6.0) if rng.random() < 0.5 else (6.0, 0.8))
    fibres /= fibres.std() + 1e-8
    eosin = np.clip(0.45 + 0.12 * blobs + 0.08 * fibres, 0.05, 1.0)
    # Occasional pale gaps (fat, lumen) where eosin fades towards white.
    if gaps:
        eosin[_smooth_noise(rng, (h, w), sigma=max(h, w) / 6) > 1.3] *= 0.25
    return eosin, np.full((h, w), 0.04)


def _nucleus_footprint(rng: np.random.Generator, kind: NucleusKind, radius_px: float):
    """Boolean footprint (local box) of one nucleus, and its local hematoxylin concentration."""
    r_max = int(np.ceil(radius_px * (1 + 2 * kind.irregularity) * 1.3)) + 1
    yy, xx = np.mgrid[-r_max:r_max + 1, -r_max:r_max + 1].astype(np.float64)
    stretch = 1 + rng.uniform(0, 0.35 if kind is TUMOUR else 0.12)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) * stretch
    theta, dist = np.arctan2(v, u), np.hypot(u, v)
    edge = np.ones_like(theta)
    for k in (2, 3, 5):
        edge += kind.irregularity / k * rng.uniform(0.3, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    inside = dist <= radius_px * edge
    density = rng.uniform(*kind.density)
    conc = (density * (1 + kind.speckle * rng.standard_normal(inside.shape))
            * (1 - 0.25 * (dist / (radius_px + 1e-6)) ** 2))
    return inside, np.clip(conc, 0.05, 2.5)


def _place_nuclei(rng, h, w, kinds: list[NucleusKind], scale: float, hema: np.ndarray,
                  allowed: np.ndarray | None = None, max_tries: int = 30) -> int:
    """Paint nuclei into ``hema`` without overlaps (centres inside ``allowed``); returns how many fit."""
    occupied = np.zeros((h, w), dtype=bool)
    placed = 0
    for kind in kinds:
        radius = kind.radius * REFERENCE_SIDE * scale * rng.uniform(0.8, 1.2)
        inside, conc = _nucleus_footprint(rng, kind, radius)
        half = inside.shape[0] // 2
        for _ in range(max_tries):
            cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
            if allowed is not None and not allowed[cy, cx]:
                continue
            y0, x0 = cy - half, cx - half
            ys, xs = slice(max(y0, 0), min(y0 + inside.shape[0], h)), slice(max(x0, 0), min(x0 + inside.shape[1], w))
            local = inside[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            if not local.any() or (occupied[ys, xs] & local).any():
                continue
            local_conc = conc[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            hema[ys, xs][local] = local_conc[local]
            occupied[ys, xs] |= local
            placed += 1
            break
    return placed


def _render(hema: np.ndarray, eosin: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    od = strength * (hema[..., None] * HEMATOXYLIN + eosin[..., None] * EOSIN)
    rgb = 255.0 * np.exp(-od) + rng.normal(0, 3.0, od.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _patch_counts(rng: np.random.Generator, label: int, area_factor: float) -> tuple[int, int]:
    if label == 1:
        return rng.poisson(12 * area_factor), rng.poisson(2.0 * area_factor)
    return rng.poisson(4 * area_factor), rng.poisson(4.5 * area_factor)


def synthetic_patch(label: int, size: int = 96, seed: int = 0) -> np.ndarray:
    """One H&E-like RGB patch of class ``label`` (deterministic for ``seed``)."""
    rng = np.random.default_rng(seed)
    scale = size / REFERENCE_SIDE
    eosin, hema = _stroma(rng, size, size)
    n_lymph, n_tumour = _patch_counts(rng, label, scale ** 2)
    kinds = [TUMOUR] * n_tumour + [LYMPHOCYTE] * n_lymph
    _place_nuclei(rng, size, size, kinds, scale, hema)
    return _render(hema, eosin, rng, strength=rng.uniform(0.75, 1.25))


def synthetic_patches(n: int, size: int = 96, seed: int = 0, dataset: str = "synthetic") -> PatchSet:
    """``n`` class-balanced patches (label 1 = lymphocyte-rich) with 5% label noise; data_kind synthetic."""
    if n <= 0:
        raise ValueError(f"synthetic_patches: n must be positive, got {n}")
    rng = np.random.default_rng(seed)
    true_labels = rng.permutation(np.arange(n) % 2)
    patch_seeds = rng.integers(0, 2**63 - 1, size=n)
    images = np.stack([synthetic_patch(int(lab), size, int(s)) for lab, s in zip(true_labels, patch_seeds)])
    flip = rng.random(n) < LABEL_NOISE
    labels = np.where(flip, 1 - true_labels, true_labels).astype(np.int64)
    groups = np.asarray([f"synthetic-{seed}-{i // 8}" for i in range(n)])  # 8 patches per fake "patient"
    paths = [f"synthetic://{dataset}/seed{seed}/{i}" for i in range(n)]
    return PatchSet(images, labels, groups, paths, dataset, "synthetic", "all",
                    notes=[f"procedural H&E generator, seed {seed}, {LABEL_NOISE:.0%} label noise"])


def synthetic_tile(size: int = 256, seed: int = 0, lymphocyte_fraction: float | None = None,
                   nuclei_per_10k_px: float = 14.0) -> InstanceSample:
    """An H&E-like tile with an exact instance map (ids 1..n, no overlaps)."""
    rng = np.random.default_rng(seed)
    eosin, hema = _stroma(rng, size, size)
    frac = rng.uniform(0.2, 0.8) if lymphocyte_fraction is None else lymphocyte_fraction
    n = rng.poisson(nuclei_per_10k_px * size * size / 1e4)
    kinds = [LYMPHOCYTE if rng.random() < frac else TUMOUR for _ in range(n)]
    kinds.sort(key=lambda k: k is LYMPHOCYTE)  # big ones first: they are the hardest to fit
    instances = np.zeros((size, size), dtype=np.int32)
    occupied = np.zeros((size, size), dtype=bool)
    next_id = 1
    for kind in kinds:
        radius = kind.radius * REFERENCE_SIDE * rng.uniform(0.8, 1.2)
        inside, conc = _nucleus_footprint(rng, kind, radius)
        half = inside.shape[0] // 2
        for _ in range(30):
            cy, cx = int(rng.integers(0, size)), int(rng.integers(0, size))
            y0, x0 = cy - half, cx - half
            ys = slice(max(y0, 0), min(y0 + inside.shape[0], size))
            xs = slice(max(x0, 0), min(x0 + inside.shape[1], size))
            local = inside[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            # One free pixel of margin so touching nuclei stay separate instances.
            if local.sum() < 4 or (_dilate(occupied[ys, xs]) & local).any():
                continue
            local_conc = conc[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            hema[ys, xs][local] = local_conc[local]
            instances[ys, xs][local] = next_id
            occupied[ys, xs] |= local
            next_id += 1
            break
    image = _render(hema, eosin, rng, strength=rng.uniform(0.85, 1.15))
    return InstanceSample(image, instances, f"synthetic-tile-{seed}", f"synthetic://tiles/{seed}", "synthetic",
                          group=f"synthetic-{seed}", mpp=GENERATOR_MPP, data_kind="synthetic")


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def synthetic_tiles(n: int, size: int = 256, seed: int = 0) -> list[InstanceSample]:
    """``n`` tiles with exact instance masks (the MoNuSeg / TNBC stand-in)."""
    seeds = np.random.default_rng(seed).integers(0, 2**63 - 1, size=n)
    return [synthetic_tile(size, int(s)) for s in seeds]


@dataclass
class SyntheticSlide:
    path: Path
    mpp: float
    tissue: np.ndarray      # level-0 boolean tissue truth, downsampled by ``truth_downsample``
    lymphocyte_rich: np.ndarray  # same grid: where the lymphocyte-rich regions are
    truth_downsample: int


def synthetic_slide(path: str | os.PathLike, width: int = 1536, height: int = 1024, mpp: float = 0.5,
                    seed: int = 0, tile: int = 256, levels: int = 3) -> SyntheticSlide:
    """Write a small pyramidal tiled TIFF (deflate, resolution tags in cm) that OpenSlide opens.

    Tissue is a few smooth blobs on white glass; inside, lymphocyte-rich areas alternate with
    tumour-like areas. Pyramid levels are downsampled by 2 each and stored as reduced-resolution
    images in the main IFD chain, which OpenSlide's generic-TIFF reader lists as levels.
    """
    import tifffile
    from skimage.transform import downscale_local_mean

    if width % tile or height % tile:
        raise ValueError(f"synthetic_slide: width and height must be multiples of tile={tile}")
    rng = np.random.default_rng(seed)
    tissue = _smooth_noise(rng, (height, width), sigma=min(height, width) / 10) > -0.3
    tissue[:tile // 4], tissue[-tile // 4:], tissue[:, :tile // 4], tissue[:, -tile // 4:] = False, False, False, False
    lymph = _smooth_noise(rng, (height, width), sigma=min(height, width) / 12) > 0.3
    eosin, hema = _stroma(rng, height, width, gaps=False)
    eosin[~tissue], hema[~tissue] = 0.0, 0.0
    scale = GENERATOR_MPP / mpp  # nuclei keep their physical size at the slide's resolution
    area = tissue.sum() / (REFERENCE_SIDE * scale) ** 2
    n_lymph = rng.poisson(14 * area * (tissue & lymph).mean() / max(tissue.mean(), 1e-6))
    n_tumour = rng.poisson(5 * area)
    _place_nuclei(rng, height, width, [LYMPHOCYTE] * n_lymph, scale, hema, allowed=tissue & lymph)
    _place_nuclei(rng, height, width, [TUMOUR] * n_tumour, scale, hema, allowed=tissue & ~lymph)
    level0 = _render(hema, eosin, rng)
    level0[~tissue] = np.clip(level0[~tissue].astype(int) + 10, 0, 255).astype(np.uint8)  # bright glass
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp) as tif:
            image = level0
            for level in range(levels):
                factor = 2 ** level
                tif.write(image, tile=(tile, tile), photometric="rgb", compression="zlib",
                          subfiletype=0 if level == 0 else 1, resolutionunit="CENTIMETER",
                          resolution=(1e4 / (mpp * factor), 1e4 / (mpp * factor)),
                          description=f"histolean synthetic slide seed={seed} mpp={mpp}" if level == 0 else None)
                image = downscale_local_mean(image, (2, 2, 1)).round().astype(np.uint8)
    ds = 8
    return SyntheticSlide(path, mpp, tissue[::ds, ::ds].copy(), (tissue & lymph)[::ds, ::ds].copy(), ds)
