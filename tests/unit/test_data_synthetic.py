"""The procedural H&E generator: deterministic, labelled honestly, learnable but not trivial."""

from __future__ import annotations

import numpy as np
import pytest

from histolean import data


def test_patches_are_deterministic_balanced_and_marked_synthetic():
    a = data.synthetic_patches(24, size=48, seed=7)
    b = data.synthetic_patches(24, size=48, seed=7)
    c = data.synthetic_patches(24, size=48, seed=8)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (24, 48, 48, 3) and a.images.dtype == np.uint8
    assert a.data_kind == "synthetic" and abs(a.class_counts()[0] - 12) <= 4  # 5% label noise


def test_patches_look_like_h_and_e():
    patches = data.synthetic_patches(8, size=96, seed=0).images.astype(float)
    r, g, b = patches[..., 0].mean(), patches[..., 1].mean(), patches[..., 2].mean()
    assert r > g and b > g  # pink / purple: eosin and hematoxylin both absorb green most
    assert patches.min() < 90 and patches.max() > 200  # dark nuclei on a light background


def test_labels_are_learnable_but_not_trivial():
    from sklearn.metrics import roc_auc_score

    patches = data.synthetic_patches(160, size=64, seed=1)
    grey = patches.images.mean(-1)
    dark_fraction = (grey < 120).mean((1, 2))  # a crude "how much nucleus" summary
    assert 0.65 < roc_auc_score(patches.labels, dark_fraction) < 0.95  # signal, but no give-away
    assert roc_auc_score(patches.labels, -grey.mean((1, 2))) < 0.7      # overall colour alone says little


def test_tiles_have_exact_instance_masks():
    from skimage.measure import label

    tile = data.synthetic_tile(size=128, seed=3)
    ids = np.unique(tile.instances)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, len(ids)))
    assert tile.n_instances >= 5 and tile.data_kind == "synthetic"
    # every instance is one 4-connected blob, separate from its neighbours
    assert label(tile.instances > 0, connectivity=1).max() == tile.n_instances
    grey = tile.image.mean(-1)
    assert grey[tile.instances > 0].mean() < grey[tile.instances == 0].mean() - 20
    again = data.synthetic_tile(size=128, seed=3)
    assert np.array_equal(again.image, tile.image) and np.array_equal(again.instances, tile.instances)


def test_slide_opens_with_openslide_with_its_mpp(tmp_path):
    import openslide

    made = data.synthetic_slide(tmp_path / "slide.tif", width=768, height=512, mpp=0.5, seed=2)
    with openslide.OpenSlide(str(made.path)) as slide:
        assert slide.level_count == 3
        assert slide.level_dimensions == ((768, 512), (384, 256), (192, 128))
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        region = np.asarray(slide.read_region((0, 0), 0, (768, 512)))[..., :3]
    again = data.synthetic_slide(tmp_path / "again.tif", width=768, height=512, mpp=0.5, seed=2)
    with openslide.OpenSlide(str(again.path)) as slide:
        assert np.array_equal(np.asarray(slide.read_region((0, 0), 0, (768, 512)))[..., :3], region)
    assert 0.1 < made.tissue.mean() < 0.95
