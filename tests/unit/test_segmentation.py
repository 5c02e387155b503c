"""Two-branch nuclei model: architecture, targets, merge/post-processing, tiled inference, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histolean import metrics
from histolean.methods import segmentation


def touching_discs(size: int = 96, radius: int = 12) -> np.ndarray:
    """Three discs in a row whose borders touch, plus a separate one; exact instance map."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), dtype=np.int32)
    centres = [(30, 20), (30, 20 + 2 * radius - 1), (30, 20 + 4 * radius - 2), (72, 60)]
    for i, (cy, cx) in enumerate(centres, start=1):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
        labels[disc & (labels == 0)] = i
    return labels


def test_postprocess_recovers_touching_discs_from_their_exact_distance_map():
    gt = touching_discs()
    # the foreground is one connected blob for the three touching discs: only the distance map splits it
    from scipy import ndimage
    assert ndimage.label(gt > 0)[1] == 2
    pred = segmentation.postprocess((gt > 0).astype(np.float32), segmentation.distance_map(gt))
    assert pred.max() == 4
    assert metrics.aggregated_jaccard_index(gt, pred) > 0.95
    assert metrics.panoptic_quality(gt, pred)["pq"] > 0.95


def test_postprocess_removes_small_objects_and_fills_holes():
    gt = touching_discs()
    prob = (gt > 0).astype(np.float32)
    prob[2:6, 80:84] = 1                      # 16 px: below the 30 px minimum
    pred = segmentation.postprocess(prob, segmentation.distance_map(gt))
    assert pred.max() == 4 and pred[3, 81] == 0
    ring = np.zeros((40, 40), np.int32)
    ring[5:25, 5:25] = 3
    ring[12:15, 12:15] = 0                    # a hole inside one instance
    ring[30:33, 30:33] = 7                    # 9 px
    cleaned = segmentation.clean_instances(ring)
    assert cleaned[13, 13] == 1 and cleaned.max() == 1 and cleaned[31, 31] == 0


def test_distance_map_peaks_at_one_per_nucleus_and_is_zero_outside():
    gt = touching_discs()
    d = segmentation.distance_map(gt)
    for i in range(1, 5):
        assert d[gt == i].max() == pytest.approx(1.0)
    assert (d[gt == 0] == 0).all() and d.dtype == np.float32


def test_full_width_model_has_the_papers_parameter_count():
    with torch.device("meta"):
        net = segmentation.UNetResNet34(width=1.0)
    n = sum(p.numel() for p in net.parameters())
    assert 24.3e6 < n < 24.5e6           # paper: "around 24.4 million" per branch
    assert n == 24_436_369               # segmentation_models_pytorch Unet(resnet34, classes=1)


def test_branch_output_shape_and_size_check():
    net = segmentation.unet_resnet34(width=0.125, seed=0).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 64, 96)).shape == (1, 1, 64, 96)
        with pytest.raises(ValueError, match="multiples of 32"):
            net(torch.zeros(1, 3, 50, 64))


def test_tiled_inference_matches_one_pass_on_a_tile_sized_image_and_handles_odd_sizes():
    net = segmentation.unet_resnet34(width=0.125, seed=0).eval()
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    tiled = segmentation.predict_tiled({"semantic": net}, image, tile=64, overlap=16)["semantic"]
    with torch.no_grad():
        whole = net(segmentation.normalise(image)[None])[0, 0].numpy()
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    odd = np.random.default_rng(1).integers(0, 255, (70, 100, 3), dtype=np.uint8)
    out = segmentation.predict_tiled({"semantic": net}, odd, tile=64, overlap=16)["semantic"]
    assert out.shape == (70, 100) and np.isfinite(out).all()


def test_crops_have_matching_targets():
    from histolean.data import synthetic_tiles

    tiles = synthetic_tiles(2, size=96, seed=0)
    sem = segmentation.NucleiCrops(tiles, "semantic", crop=64, crops_per_image=2, seed=0)
    reg = segmentation.NucleiCrops(tiles, "regression", crop=64, crops_per_image=2, seed=0)
    x, y = sem[0]
    assert x.shape == (3, 64, 64) and y.shape == (1, 64, 64) and set(np.unique(y.numpy())) <= {0.0, 1.0}
    _, d = reg[0]
    assert 0 <= float(d.min()) and float(d.max()) <= 1.0


def test_label_map_that_is_not_an_integer_instance_map_is_a_clear_error():
    with pytest.raises(ValueError, match="integer instance map"):
        segmentation.check_instance_map(np.zeros((8, 8), dtype=bool), "mask.png")
    with pytest.raises(ValueError, match="integer instance map"):
        segmentation.check_instance_map(np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        segmentation.check_instance_map(np.zeros((8, 8, 3), dtype=np.int32))
    with pytest.raises(ValueError, match=">= 0"):
        segmentation.check_instance_map(-np.ones((8, 8), dtype=np.int32))


def test_image_and_mask_size_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"img7: image is 64x32 px but its label map is 64x64 px"):
        segmentation.check_pair(np.zeros((32, 64, 3), np.uint8), np.zeros((64, 64), np.int32), "img7")


def test_monuseg_ground_truth_scored_against_itself_is_perfect(real_data):
    from histolean import data

    [sample] = data.load_monuseg("test", root=real_data, limit=1)
    gt = segmentation.check_instance_map(sample.instances)
    assert metrics.aggregated_jaccard_index(gt, gt) == 1.0
    assert metrics.panoptic_quality(gt, gt)["pq"] == 1.0
    perfect = {"probability": (gt > 0).astype(np.float32), "distance": segmentation.distance_map(gt), "instances": gt}
    s = segmentation.score(gt, perfect)
    assert s["aji"] == s["pq"] == s["dice"] == 1.0 and s["mse"] == 0.0


def test_imagenet_weights_file_errors_name_the_file(tmp_path):
    net = segmentation.unet_resnet34(width=0.125)
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        segmentation.load_imagenet_encoder(segmentation.UNetResNet34(), tmp_path / "nothere.pth")
    torch.save({"a": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="width"):
        segmentation.load_imagenet_encoder(net, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="not a torchvision resnet34"):
        segmentation.load_imagenet_encoder(segmentation.UNetResNet34(width=1.0), tmp_path / "x.pth")
