"""Whole slides: mpp from the file or the argument, tissue masks, 50 um grids, prefetching, slide maps."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from histolean import data, wsi


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return data.synthetic_slide(tmp_path_factory.mktemp("slide") / "slide.tif", width=1024, height=768,
                                mpp=0.5, seed=5)


def _saturation(rgb: np.ndarray) -> float:
    rgb = rgb.astype(float)
    return float(((rgb.max(-1) - rgb.min(-1)) / np.maximum(rgb.max(-1), 1)).mean())


def test_real_svs_grid_is_50_um_on_tissue_only(real_data):
    slide = wsi.open_slide(real_data / "wsi" / "CMU-1-Small-Region.svs")
    assert slide.mpp == pytest.approx(0.499) and slide.mpp_source == "file"
    grid = wsi.patch_grid(slide, patch_um=50, size=64)
    assert grid.patch_px == round(50 / 0.499) == 100
    assert grid.effective_patch_um == pytest.approx(49.9)
    rows, cols = grid.grid_shape
    assert 0 < len(grid) < rows * cols  # glass cells are left out
    assert (grid.tissue_fraction >= 0.5).all()
    on = [_saturation(grid.read(i)) for i in range(0, len(grid), max(1, len(grid) // 12))]
    off_cells = {(r, c) for r in range(rows) for c in range(cols)} - {tuple(x) for x in grid.cells}
    sampled = sorted(off_cells)[:: max(1, len(off_cells) // 12)]
    off = [_saturation(slide.read_region((c * 100, r * 100), 0, (100, 100))) for r, c in sampled]
    assert np.median(on) > 2 * np.median(off)
    assert grid.read(0).shape == (64, 64, 3)


def test_real_svs_without_mpp_uses_the_override(real_data):
    slide = wsi.open_slide(real_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs", mpp=0.25)
    grid = wsi.patch_grid(slide, patch_um=50, size=50)
    assert slide.level_count == 2 and grid.patch_px == 200
    assert 0 < len(grid) < grid.grid_shape[0] * grid.grid_shape[1]
    # 200 level-0 px resized to 50 are read from level 1 (downsample 2), matching level 0 closely
    x, y = grid.coords[len(grid) // 2]
    from_pyramid = grid.read(len(grid) // 2).astype(float)
    from PIL import Image

    full = Image.fromarray(slide.read_region((int(x), int(y)), 0, (200, 200))).resize((50, 50), Image.Resampling.BOX)
    assert np.abs(from_pyramid - np.asarray(full, dtype=float)).mean() < 12


def test_tissue_mask_matches_the_generated_truth(synthetic):
    slide = wsi.open_slide(synthetic.path)
    mask = wsi.tissue_mask(slide)
    from skimage.transform import resize

    truth = resize(synthetic.tissue.astype(float), mask.mask.shape, order=0) > 0.5
    iou = (truth & mask.mask).sum() / (truth | mask.mask).sum()
    assert iou > 0.8, iou


def test_grid_prefetch_and_slide_map(synthetic):
    slide = wsi.open_slide(synthetic.path)
    grid = wsi.patch_grid(slide, patch_um=32, size=32)
    assert grid.patch_px == 64 and len(grid) > 10
    seen, threads = [], set()
    for images, index in wsi.iter_batches(grid, batch_size=7, prefetch=2):
        assert images.shape == (len(index), 32, 32, 3) and len(index) <= 7
        seen.extend(index.tolist())
        threads |= {t.name for t in threading.enumerate()}
    assert seen == list(range(len(grid)))
    assert any(name.startswith("wsi-prefetch-") for name in threads)

    # darker (nucleus-dense) patches should be where the generator put the lymphocyte-rich areas
    darkness = wsi.predict_slide(grid, lambda batch: (batch.mean(-1) < 150).mean((1, 2)), batch_size=16)
    heat = wsi.slide_map(grid, darkness)
    assert heat.shape == grid.grid_shape and np.isnan(heat).sum() == heat.size - len(grid)
    ds = synthetic.truth_downsample
    lymph = np.array([synthetic.lymphocyte_rich[(y + 32) // ds, (x + 32) // ds] for x, y in grid.coords])
    assert lymph.any() and (~lymph).any()
    assert darkness[lymph].mean() > darkness[~lymph].mean()
    rgb = wsi.slide_map_rgb(grid, darkness, vmax=float(darkness.max()))
    assert rgb.shape == (*grid.grid_shape, 3) and (rgb[np.isnan(heat)] == 255).all()


def test_errors_in_the_reader_thread_reach_the_caller(synthetic, monkeypatch):
    slide = wsi.open_slide(synthetic.path)
    grid = wsi.patch_grid(slide, patch_um=32)
    original = wsi.read_patches  # the reader thread's batch read

    def failing(grid, index):
        if 3 in index:
            raise RuntimeError("disk gone")
        return original(grid, index)

    monkeypatch.setattr(wsi, "read_patches", failing)
    with pytest.raises(RuntimeError, match="disk gone"):
        for _ in wsi.iter_batches(grid, batch_size=2):
            pass


def test_read_region_um(synthetic):
    slide = wsi.open_slide(synthetic.path)
    native = wsi.read_region_um(slide, 100, 50, 40)
    assert native.shape == (80, 80, 3)  # 40 um at 0.5 um/px
    small = wsi.read_region_um(slide, 0, 0, 400, 200, size=(100, 50))
    assert small.shape == (50, 100, 3)


def test_rgba_on_white_keeps_opaque_pixels_and_blends_transparent_ones():
    from histolean.data.wsi import _rgba_on_white

    rgba = np.random.default_rng(0).integers(0, 256, (4, 5, 4)).astype(np.uint8)
    rgba[..., 3] = 255
    opaque = _rgba_on_white(rgba)
    np.testing.assert_array_equal(opaque, rgba[..., :3])
    assert opaque.flags.c_contiguous and opaque.flags.writeable
    rgba[0, 0] = (100, 0, 50, 0)      # outside the scan: white
    rgba[0, 1] = (100, 0, 50, 128)    # half covered: halfway to white
    out = _rgba_on_white(rgba)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [177, 127, 152]   # 255 * (1 - 128/255) + c * 128/255
    np.testing.assert_array_equal(out[1:], rgba[1:, :, :3])


def test_resize_images_is_the_training_resize_within_one_grey_level(real_data):
    import torch
    import torch.nn.functional as F
    from PIL import Image

    with wsi.open_slide(real_data / "wsi" / "CMU-1-Small-Region.svs") as slide:
        strip = slide.read_region((0, 1200), 0, (800, 100))
    patches = strip.reshape(100, 8, 100, 3).transpose(1, 0, 2, 3)  # a strided view, as read_patches passes it
    out = data.resize_images(patches, 76)
    assert out.shape == (8, 76, 76, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, data.resize_images(np.ascontiguousarray(patches), 76))
    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float()  # the loader's float path
    train = F.interpolate(x, size=(76, 76), mode="bilinear", align_corners=False, antialias=True)
    train = train.round().clamp(0, 255).permute(0, 2, 3, 1).numpy()
    assert np.abs(out - train).max() <= 1
    pil = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(p)).resize((76, 76), Image.Resampling.BILINEAR))
                    for p in patches])
    assert np.abs(out.astype(int) - pil).max() <= 1
    assert data.resize_images(patches[:1], 160).shape == (1, 160, 160, 3)  # upsampling too
    assert data.resize_images(patches[:0], 76).shape == (0, 76, 76, 3)
    assert data.resize_images(patches, 100) is patches  # already that size: untouched
