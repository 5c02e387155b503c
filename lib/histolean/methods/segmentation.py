"""Nuclei instance segmentation with two U-Nets (Mahbod et al. 2022, Sections 2.2 and 2.4).

Two encoder-decoder networks of the same architecture, trained separately:

* the **semantic** branch predicts the nuclei foreground (sigmoid, Dice loss);
* the **regression** branch predicts the nuclei distance map (linear output, MSE loss).

Both are U-Nets with a ResNet-34 encoder (``histolean.core.arch.resnet34`` built by
``histolean.core.models``) and the decoder of segmentation_models_pytorch's ``Unet`` (five
upsample-concatenate-conv-conv blocks of 256, 128, 64, 32, 16 channels and a 3x3 head):
24.4 M parameters each, as the paper says. :func:`postprocess` merges the two outputs
(Gaussian-smoothed distance map, local maxima as markers, marker-controlled watershed inside
the predicted foreground, objects under 30 px removed, holes filled); :func:`predict_tiled`
runs both networks on a whole image by overlapping tiles.

Distance-map targets (:func:`distance_map`) are each nucleus's Euclidean distance to its
background, scaled to a peak of 1 per nucleus, so large and small nuclei weigh alike.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from histolean.core import arch, models

BRANCHES = ("semantic", "regression")
ENCODER = "resnet34"  # the encoder's name in the model registry (histolean.core.arch.MODELS)
DECODER_CHANNELS = (256, 128, 64, 32, 16)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_OBJECT_PX = 30
DOWNSAMPLING = 32  # the encoder's total stride: inputs must be multiples of it


# --------------------------------------------------------------------------- input checks

def check_instance_map(labels, name: str = "label map") -> np.ndarray:
    """An instance map is a 2-D array of non-negative integers (0 background, 1..n nuclei)."""
    labels = np.asarray(labels)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer instance map (0 = background, 1..n = nuclei), got dtype "
                         f"{labels.dtype}; a binary mask needs instances first, e.g. "
                         "histolean.data.instances_from_mask(mask)")
    if labels.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D instance map (H, W), got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name}: instance ids must be >= 0, found {labels.min()}")
    return labels


def check_pair(image, labels, name: str = "sample") -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image and its instance map of the same height and width."""
    image = np.asarray(image)
    labels = check_instance_map(labels, f"{name}: label map")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected an RGB image (H, W, 3), got shape {image.shape}")
    if image.shape[:2] != labels.shape:
        raise ValueError(f"{name}: image is {image.shape[1]}x{image.shape[0]} px but its label map is "
                         f"{labels.shape[1]}x{labels.shape[0]} px; they must be the same size")
    return image, labels


# --------------------------------------------------------------------------- model

class DecoderBlock(nn.Module):
    """segmentation_models_pytorch's Unet block: 2x nearest upsampling, concat skip, 2 x (conv3x3-BN-ReLU)."""

    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.conv1 = models.ConvBNReLU(cin + skip, cout, 3, padding=1)
        self.conv2 = models.ConvBNReLU(cout, cout, 3, padding=1)

    def forward(self, x, skip=None):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], 1)
        return self.conv2(self.conv1(x))


class UNetResNet34(nn.Module):
    """U-Net with a ResNet-34 encoder; ``width`` scales every channel count (1.0: the paper's net).

    Skips are taken after the stem's ReLU (1/2), and after stages 1-3 (1/4, 1/8, 1/16); the
    deepest stage (1/32) feeds the decoder. The output has ``out_channels`` logits (semantic)
    or values (regression) at the input resolution.
    """

    def __init__(self, out_channels: int = 1, in_channels: int = 3, width: float = 1.0,
                 decoder_channels: tuple[int, ...] = DECODER_CHANNELS):
        super().__init__()
        spec = arch.spec(ENCODER, num_classes=1)
        if width != 1.0:
            spec = arch.scale(spec, width=width, scale_stem=True, variant=f"width {width:g}")
        spec = replace(spec, in_channels=in_channels)
        self.width = float(width)
        self.encoder_spec = spec
        encoder = models.build(spec)
        self.stem, self.stages = encoder.stem, encoder.stages
        stem_c = spec.stem.widths[0]
        stage_c = [s.out_channels for s in spec.stages]
        dec = tuple(arch.scale_count(c, width) for c in decoder_channels)
        skips = (stage_c[2], stage_c[1], stage_c[0], stem_c, 0)
        ins = (stage_c[3], *dec[:-1])
        self.decoder = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, dec))
        self.head = nn.Conv2d(dec[-1], out_channels, 3, padding=1)
        for m in [*self.decoder.modules(), self.head]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        if x.shape[-1] % DOWNSAMPLING or x.shape[-2] % DOWNSAMPLING:
            raise ValueError(f"UNetResNet34: input height and width must be multiples of {DOWNSAMPLING}, "
                             f"got {tuple(x.shape[-2:])}; pad the image or use predict_tiled")
        s = self.stem
        f1 = s.relu(s.bn(s.conv(x)))
        f2 = self.stages[0](s.pool(f1))
        f3 = self.stages[1](f2)
        f4 = self.stages[2](f3)
        y = self.stages[3](f4)
        for block, skip in zip(self.decoder, (f4, f3, f2, f1, None)):
            y = block(y, skip)
        return self.head(y)


def unet_resnet34(width: float = 1.0, seed: int | None = None, encoder_weights: str | os.PathLike | None = None,
                  out_channels: int = 1) -> UNetResNet34:
    """One branch: the U-Net, seeded; ImageNet encoder weights when ``encoder_weights`` names a local file
    (a torchvision ``resnet34`` state dict), random (He) initialisation otherwise."""
    if seed is not None:
        torch.manual_seed(seed)
    net = UNetResNet34(out_channels=out_channels, width=width)
    if encoder_weights:
        load_imagenet_encoder(net, encoder_weights)
    return net


def load_imagenet_encoder(net: UNetResNet34, path: str | os.PathLike) -> UNetResNet34:
    """Copy a torchvision-layout ResNet-34 state dict (``conv1``, ``bn1``, ``layerN.i.*``) into the encoder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights {path} do not exist (a torchvision resnet34 state dict, "
                                "e.g. resnet34-b627a593.pth); leave encoder_weights empty for random initialisation")
    if net.width != 1.0:
        raise ValueError(f"ImageNet weights fit only the full-width encoder, this one has width {net.width:g}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"encoder weights {path} cannot be read ({type(err).__name__}: {err})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    renamed = OrderedDict()
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        key = key.replace("conv1.", "stem.conv.", 1) if key.startswith("conv1.") else key
        key = key.replace("bn1.", "stem.bn.", 1) if key.startswith("bn1.") else key
        if key.startswith("layer"):
            stage, rest = key[len("layer"):].split(".", 1)
            rest = rest.replace("downsample.0.", "downsample.conv.").replace("downsample.1.", "downsample.bn.")
            key = f"stages.{int(stage) - 1}.{rest}"
        renamed[key] = value
    own = {k for k in net.state_dict() if k.startswith(("stem.", "stages."))}
    missing = sorted(own - set(renamed))
    if missing:
        raise ValueError(f"encoder weights {path}: not a torchvision resnet34 state dict "
                         f"({len(missing)} encoder tensors missing, e.g. {missing[:3]})")
    net.load_state_dict(renamed, strict=False)
    return net


# --------------------------------------------------------------------------- targets

def distance_map(labels) -> np.ndarray:
    """float32 map: each nucleus's Euclidean distance to the background (or to another nucleus),
    divided by its own maximum, so every nucleus peaks at 1; 0 on the background."""
    labels = check_instance_map(labels)
    out = np.zeros(labels.shape, dtype=np.float32)
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        # one pixel of margin so a nucleus touching its box edge still has background around it
        padded = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        inside = labels[padded] == i
        dist = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        peak = dist.max()
        if peak > 0:
            out[padded][inside] = (dist[inside] / peak).astype(np.float32)
    return out


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss of sigmoid(logits) against a 0/1 target, over the whole batch."""
    prob = torch.sigmoid(logits.float())
    target = target.float()
    inter = (prob * target).sum()
    return 1 - (2 * inter + eps) / (prob.sum() + target.sum() + eps)


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target.float())


LOSSES = {"semantic": dice_loss, "regression": mse_loss}


# --------------------------------------------------------------------------- data

def normalise(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W), ImageNet mean/std (the encoder's convention)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def augmentations(crop: int, augment: bool = True):
    """The paper's augmentations (albumentations): horizontal flip, random scale and shift,
    Gaussian blur, perspective; then a random ``crop`` x ``crop`` window."""
    import albumentations as A
    import cv2

    steps = [A.PadIfNeeded(crop, crop, border_mode=cv2.BORDER_REFLECT_101)]
    if augment:
        steps += [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.8, 1.2), translate_percent=(-0.05, 0.05), p=0.5, border_mode=cv2.BORDER_REFLECT_101),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
            A.Perspective(scale=(0.02, 0.05), p=0.2),
        ]
    steps.append(A.RandomCrop(crop, crop))
    return A.Compose(steps)


class NucleiCrops(torch.utils.data.Dataset):
    """Random augmented crops of (image, instance map) pairs -> (x, target) for one branch.

    The target is the foreground (semantic) or the distance map (regression), computed from the
    augmented instance map, so scaling and perspective never distort the distance values.
    ``crops_per_image`` crops of every image make one epoch.
    """

    def __init__(self, samples, branch: str, crop: int = 256, crops_per_image: int = 4, augment: bool = True,
                 seed: int = 0):
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
        if crop % DOWNSAMPLING:
            raise ValueError(f"crop must be a multiple of {DOWNSAMPLING} px, got {crop}")
        if not samples:
            raise ValueError("NucleiCrops: no training images")
        self.pairs = [check_pair(s.image, s.instances, s.name) for s in samples]
        self.branch, self.crops_per_image = branch, int(crops_per_image)
        self.transform = augmentations(crop, augment)
        self.seed = seed
        self.calls = 0

    def __len__(self) -> int:
        return len(self.pairs) * self.crops_per_image

    def __getitem__(self, i: int):
        image, labels = self.pairs[i % len(self.pairs)]
        # albumentations draws from its own generator: reseed per call for a reproducible run
        self.transform.set_random_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        # float32 labels survive nearest-neighbour warps exactly (ids < 2**24)
        out = self.transform(image=np.asarray(image), mask=np.asarray(labels, dtype=np.float32))
        inst = out["mask"].astype(np.int32)
        if self.branch == "semantic":
            target = (inst > 0).astype(np.float32)
        else:
            target = distance_map(inst)
        return normalise(out["image"]), torch.from_numpy(target)[None]


def crop_loader(samples, branch: str, crop: int = 256, crops_per_image: int = 4, batch_size: int = 2,
                augment: bool = True, seed: int = 0) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(NucleiCrops(samples, branch, crop, crops_per_image, augment, seed),
                                       batch_size=batch_size, shuffle=True, generator=gen, drop_last=True)


def train_branch(net: nn.Module, samples, branch: str, *, epochs: int, crop: int = 256, crops_per_image: int = 4,
                 batch_size: int = 2, lr: float = 1e-3, seed: int = 0, device=None, progress: bool = False):
    """Train one branch as the paper: Adam, cosine annealing, batch 2, Dice (semantic) or MSE (regression).
    Returns ``histolean.core.train.fit``'s result (history, time per epoch)."""
    from histolean.core import train

    loader = crop_loader(samples, branch, crop, crops_per_image, batch_size, augment=True, seed=seed)
    return train.fit(net, loader, epochs=epochs, optimizer="adam", lr=lr, schedule="cosine",
                     loss_fn=LOSSES[branch], device=device, progress=progress, seed=seed, desc=branch)


# --------------------------------------------------------------------------- inference

def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


@torch.no_grad()
def predict_tiled(nets: dict[str, nn.Module], image: np.ndarray, tile: int = 256, overlap: int = 32,
                  batch_size: int = 4, device=None) -> dict[str, np.ndarray]:
    """Run each net on a whole RGB image by overlapping ``tile`` x ``tile`` windows.

    The image is reflect-padded to at least one tile; overlapping outputs are blended with a
    weight that falls towards the tile edges (where the network sees least context). Returns
    ``{name: (H, W) float32}``: raw outputs (logits for the semantic branch).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"predict_tiled: expected an RGB image (H, W, 3), got shape {image.shape}")
    if tile % DOWNSAMPLING or not 0 <= overlap < tile:
        raise ValueError(f"predict_tiled: tile must be a multiple of {DOWNSAMPLING} and 0 <= overlap < tile, "
                         f"got tile={tile}, overlap={overlap}")
    h, w = image.shape[:2]
    ph, pw = max(h, tile), max(w, tile)
    padded = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="reflect") if (ph, pw) != (h, w) else image
    x = normalise(padded)
    ys, xs = _tile_starts(ph, tile, tile - overlap), _tile_starts(pw, tile, tile - overlap)
    windows = [(y, x0) for y in ys for x0 in xs]
    ramp = torch.minimum(torch.arange(tile) + 1.0, torch.arange(tile, 0, -1.0)).clamp(max=max(overlap, 1))
    weight = (ramp[:, None] * ramp[None, :]) / max(overlap, 1) ** 2
    out = {}
    for name, net in nets.items():
        dev = torch.device(device) if device is not None else next(net.parameters()).device
        net.eval().to(dev)
        acc = torch.zeros(ph, pw)
        norm = torch.zeros(ph, pw)
        for i in range(0, len(windows), batch_size):
            chunk = windows[i:i + batch_size]
            batch = torch.stack([x[:, y:y + tile, x0:x0 + tile] for y, x0 in chunk]).to(dev)
            pred = net(batch)[:, 0].float().cpu()
            for (y, x0), p in zip(chunk, pred):
                acc[y:y + tile, x0:x0 + tile] += p * weight
                norm[y:y + tile, x0:x0 + tile] += weight
        out[name] = (acc / norm)[:h, :w].numpy().astype(np.float32)
    return out


# --------------------------------------------------------------------------- merge and post-processing

@dataclass(frozen=True)
class PostProcess:
    """Section 2.4's merge: ``threshold`` on the foreground probability; the Gaussian's sigma is
    ``sigma_factor`` x the mean equivalent radius of the predicted nuclei; local maxima at least
    ``min_distance_factor`` x that radius apart and above ``peak_min`` become markers."""

    threshold: float = 0.5
    sigma_factor: float = 0.25
    min_distance_factor: float = 0.5
    peak_min: float = 0.2
    min_object_px: int = MIN_OBJECT_PX


def mean_nucleus_radius(foreground: np.ndarray, min_px: int = MIN_OBJECT_PX) -> float:
    """Mean equivalent radius sqrt(area / pi) of the foreground's connected components (>= min_px)."""
    components, n = ndimage.label(foreground)
    if n == 0:
        return 0.0
    areas = np.bincount(components.ravel())[1:]
    areas = areas[areas >= min_px] if (areas >= min_px).any() else areas
    return float(np.sqrt(areas.mean() / np.pi))


def postprocess(foreground_prob: np.ndarray, distance: np.ndarray, params: PostProcess = PostProcess()) -> np.ndarray:
    """Instance map (int32, 1..n) from the semantic branch's probability and the regression branch's map."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    prob, dist = np.asarray(foreground_prob, dtype=np.float32), np.asarray(distance, dtype=np.float32)
    if prob.shape != dist.shape or prob.ndim != 2:
        raise ValueError(f"postprocess: foreground {prob.shape} and distance map {dist.shape} "
                         "must be the same 2-D shape")
    foreground = prob > params.threshold
    radius = mean_nucleus_radius(foreground, params.min_object_px)
    if radius == 0:
        return np.zeros(prob.shape, dtype=np.int32)
    smooth = ndimage.gaussian_filter(dist, sigma=max(params.sigma_factor * radius, 0.5))
    components, n = ndimage.label(foreground)
    peaks = peak_local_max(smooth, min_distance=max(1, int(round(params.min_distance_factor * radius))),
                           threshold_abs=params.peak_min, labels=components, exclude_border=False)
    marker_mask = np.zeros(prob.shape, dtype=bool)
    marker_mask[tuple(peaks.T)] = True
    # a foreground component without any peak still is a nucleus: seed it at its highest point
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[np.unique(components[marker_mask])] = True
    for i in np.flatnonzero(~seeded[1:]) + 1:
        inside = np.flatnonzero(components.ravel() == i)
        marker_mask.ravel()[inside[np.argmax(smooth.ravel()[inside])]] = True
    markers, _ = ndimage.label(marker_mask)
    labels = watershed(-smooth, markers, mask=foreground)
    return clean_instances(labels, params.min_object_px)


def clean_instances(labels: np.ndarray, min_object_px: int = MIN_OBJECT_PX) -> np.ndarray:
    """Drop instances under ``min_object_px`` pixels, fill each instance's holes, relabel 1..n."""
    from skimage.segmentation import relabel_sequential

    labels = np.asarray(labels).astype(np.int32, copy=True)
    areas = np.bincount(labels.ravel())
    small = np.flatnonzero(areas < min_object_px)
    labels[np.isin(labels, small[small > 0])] = 0
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        region = labels[box]
        filled = ndimage.binary_fill_holes(region == i)
        region[filled & (region == 0)] = i
    return relabel_sequential(labels)[0].astype(np.int32)


def segment(nets: dict[str, nn.Module], image: np.ndarray, params: PostProcess = PostProcess(), tile: int = 256,
            overlap: int = 32, device=None) -> dict[str, np.ndarray]:
    """Both branches on a whole image and the merge: ``{"probability", "distance", "instances"}``."""
    raw = predict_tiled(nets, image, tile=tile, overlap=overlap, device=device)
    prob = 1 / (1 + np.exp(-raw["semantic"]))
    return {"probability": prob, "distance": raw["regression"],
            "instances": postprocess(prob, raw["regression"], params)}


# --------------------------------------------------------------------------- evaluation

def score(gt_instances: np.ndarray, result: dict[str, np.ndarray], params: PostProcess = PostProcess()) -> dict:
    """Dice (semantic branch), MSE (regression branch vs the distance-map target), AJI and PQ (merged)."""
    from histolean.core import metrics

    gt = check_instance_map(gt_instances, "ground truth")
    if gt.shape != result["instances"].shape:
        raise ValueError(f"ground truth is {gt.shape}, prediction {result['instances'].shape}: sizes differ")
    pq = metrics.panoptic_quality(gt, result["instances"])
    return {"dice": metrics.dice(gt > 0, result["probability"] > params.threshold),
            "mse": metrics.mse(distance_map(gt), result["distance"]),
            "aji": metrics.aggregated_jaccard_index(gt, result["instances"]),
            "pq": pq["pq"], "dq": pq["dq"], "sq": pq["sq"],
            "n_true": int(len(np.unique(gt)) - 1), "n_pred": int(result["instances"].max())}


def evaluate(nets: dict[str, nn.Module], samples, params: PostProcess = PostProcess(), tile: int = 256,
             overlap: int = 32, keep: tuple[str, ...] = (), device=None) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Per-image scores of ``samples`` (InstanceSample-like: image, instances, name, dataset) and the
    predicted instance maps of the images named in ``keep`` (for figures)."""
    rows, kept = [], {}
    for s in samples:
        image, gt = check_pair(s.image, s.instances, s.name)
        result = segment(nets, image, params, tile, overlap, device)
        rows.append({"image": s.name, "dataset": s.dataset, **score(gt, result, params)})
        if s.name in keep:
            kept[s.name] = result["instances"]
    return rows, kept
