import math

import numpy as np
import pytest

from histolean import metrics


def test_auc_hand_computed():
    # Pairs (pos, neg): (0.8>0.1) (0.8>0.4) (0.35<0.4) (0.35>0.1) -> 3 of 4 pairs ordered right.
    y = [0, 0, 1, 1]
    p = [0.1, 0.4, 0.35, 0.8]
    assert metrics.auc(y, p) == pytest.approx(0.75)


def test_auc_ties_count_half():
    assert metrics.auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_auc_single_class_is_nan_not_half():
    assert math.isnan(metrics.auc([1, 1, 1], [0.2, 0.5, 0.9]))


def test_classification_metrics_hand_computed():
    y = [0, 0, 1, 1]
    p = [0.1, 0.6, 0.7, 0.4]
    out = metrics.classification_metrics(y, p)
    assert out["accuracy"] == pytest.approx(0.5)   # 0.1->0 ok, 0.6->1 wrong, 0.7->1 ok, 0.4->0 wrong
    expected_bce = -np.mean(np.log([0.9, 0.4, 0.7, 0.4]))
    assert out["loss"] == pytest.approx(expected_bce)
    assert out["n"] == 4 and out["positives"] == 2


def test_given_loss_is_kept():
    assert metrics.classification_metrics([0, 1], [0.2, 0.9], loss=1.25)["loss"] == 1.25


def test_bad_labels_and_lengths_raise_clear_errors():
    with pytest.raises(ValueError, match="0/1"):
        metrics.classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="3 labels but prob has 2"):
        metrics.auc([0, 1, 1], [0.1, 0.2])


def test_bootstrap_ci_brackets_the_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)
    def sample(n):
        y = rng.integers(0, 2, n)
        return y, np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
    y, p = sample(200)
    lo, hi = metrics.bootstrap_ci(y, p, n_boot=300)
    assert lo <= metrics.auc(y, p) <= hi
    y2, p2 = sample(2000)
    lo2, hi2 = metrics.bootstrap_ci(y2, p2, n_boot=300)
    assert (hi2 - lo2) < (hi - lo)


# --------------------------------------------------------------------------- segmentation

def _maps():
    """Two nuclei in the ground truth; the prediction covers the first exactly, half of the
    second, and adds one false nucleus. Areas: gt1=4, gt2=4, pred1=4, pred2=2, pred3=2."""
    gt = np.zeros((6, 6), int)
    gt[0:2, 0:2] = 1
    gt[3:5, 3:5] = 2
    pred = np.zeros((6, 6), int)
    pred[0:2, 0:2] = 7
    pred[3:5, 3:4] = 8
    pred[5, 0:2] = 9
    return gt, pred


def test_dice_hand_computed():
    gt, pred = _maps()
    # |gt|=8, |pred|=8, overlap 4+2=6 -> 12/16
    assert metrics.dice(gt, pred) == pytest.approx(0.75)
    assert metrics.dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_aji_hand_computed():
    gt, pred = _maps()
    # gt1<->pred7: I=4, U=4; gt2<->pred8: I=2, U=4; unused pred9 adds 2 -> 6 / 10
    assert metrics.aggregated_jaccard_index(gt, pred) == pytest.approx(0.6)
    assert metrics.aggregated_jaccard_index(gt, gt) == pytest.approx(1.0)
    assert metrics.aggregated_jaccard_index(gt, np.zeros_like(gt)) == 0.0


def test_pq_hand_computed():
    gt, pred = _maps()
    out = metrics.panoptic_quality(gt, pred)
    # IoU(gt1, 7) = 1 matched; IoU(gt2, 8) = 0.5 is not > 0.5 -> TP=1, FN=1, FP=2
    assert (out["tp"], out["fn"], out["fp"]) == (1, 1, 2)
    assert out["dq"] == pytest.approx(1 / (1 + 0.5 + 1.0))
    assert out["sq"] == pytest.approx(1.0)
    assert out["pq"] == pytest.approx(0.4)


def test_segmentation_metrics_ignore_label_values_and_check_shapes():
    gt, pred = _maps()
    relabelled = np.where(pred > 0, pred * 100 + 3, 0)
    assert metrics.aggregated_jaccard_index(gt, relabelled) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.panoptic_quality(gt, pred[:5])
    assert metrics.mse([0, 2], [1, 0]) == pytest.approx(2.5)


def test_rank_auc_matches_sklearn_and_paired_verdicts():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = y + rng.normal(0, 0.7, 300)
    noise = rng.normal(0, 1, 300)
    res = metrics.auc_with_ci(y, [good, np.round(good, 1)], n_boot=200)
    assert res["auc_runs"][0] == pytest.approx(roc_auc_score(y, good))
    assert res["auc_runs"][1] == pytest.approx(roc_auc_score(y, np.round(good, 1)))  # ties averaged
    assert res["auc_ci_lo"] < res["auc"] < res["auc_ci_hi"] and res["auc_sd"] is not None
    same = metrics.paired_auc_difference(y, good, good, n_boot=200)
    assert same["auc_diff"] == 0 and same["same_auc"] == "supported"
    worse = metrics.paired_auc_difference(y, noise, good, n_boot=200)
    assert worse["same_auc"] == "lower" and worse["auc_diff_ci_hi"] < 0
    assert metrics.paired_auc_difference(y, good, noise, n_boot=200)["same_auc"] == "higher"
    small = metrics.paired_auc_difference(y[:20], good[:20] + rng.normal(0, 0.5, 20), good[:20], n_boot=200)
    assert small["same_auc"] == "not resolved"


# --------------------------------------------------------------------------- clustered (image-level) bootstrap

def _clustered(n_images=12, per_image=20, seed=0):
    """Windows that share their image's label mix and score offset: alike within an image."""
    rng = np.random.default_rng(seed)
    y, score, groups = [], [], []
    for g in range(n_images):
        share, offset = rng.uniform(0.1, 0.9), rng.normal(0, 1.0)
        labels = (rng.random(per_image) < share).astype(int)
        y.append(labels)
        score.append(offset + 0.8 * labels + rng.normal(0, 0.3, per_image))
        groups.append(np.full(per_image, g))
    return np.concatenate(y), 1 / (1 + np.exp(-np.concatenate(score))), np.concatenate(groups)


def test_image_level_interval_is_wider_than_the_window_level_one_on_clustered_data():
    y, p, g = _clustered()
    windows = metrics.auc_with_ci(y, p, n_boot=400)
    images = metrics.auc_with_ci(y, p, n_boot=400, groups=g)
    assert images["auc"] == windows["auc"]
    assert (images["auc_ci_hi"] - images["auc_ci_lo"]) > 1.5 * (windows["auc_ci_hi"] - windows["auc_ci_lo"])
    assert (images["ci_unit"], images["n_groups"], images["n_items"]) == ("group", 12, 240)
    assert (windows["ci_unit"], windows["n_groups"]) == ("item", None)


def test_cluster_resamples_draw_whole_groups_and_pair_on_one_seed():
    g = np.array([0, 0, 0, 1, 2, 2])
    for idx in metrics.bootstrap_indices(6, 20, seed=3, groups=g):
        drawn = g[idx]
        for k in np.unique(drawn):  # every drawn group comes whole, possibly several times
            assert (drawn == k).sum() % (g == k).sum() == 0
    first = [i.tolist() for i in metrics.bootstrap_indices(6, 5, seed=3, groups=g)]
    assert first == [i.tolist() for i in metrics.bootstrap_indices(6, 5, seed=3, groups=g)]
    with pytest.raises(ValueError, match="5 ids for 6 items"):
        next(metrics.bootstrap_indices(6, 1, groups=g[:5]))


def test_paired_difference_over_images_can_leave_a_window_level_verdict_unresolved():
    y, p, g = _clustered(n_images=8, per_image=30, seed=1)
    rng = np.random.default_rng(2)
    image_noise = rng.normal(0, 0.8, 8)[g]  # the second network errs by image, not by window
    q = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + image_noise)))
    by_window = metrics.paired_auc_difference(y, q, p, n_boot=400)
    by_image = metrics.paired_auc_difference(y, q, p, n_boot=400, groups=g)
    assert by_image["auc_diff"] == by_window["auc_diff"]
    width = lambda d: d["auc_diff_ci_hi"] - d["auc_diff_ci_lo"]  # noqa: E731
    assert width(by_image) > width(by_window)
    assert by_image["n_groups"] == 8


def test_mean_with_ci_over_images_and_units_to_resolve():
    res = metrics.mean_with_ci([0.1, 0.2, 0.3, float("nan")], n_boot=300)
    assert res["mean"] == pytest.approx(0.2) and res["n"] == 3 and res["n_undefined"] == 1
    assert res["ci_lo"] < 0.2 < res["ci_hi"]
    # +-0.03 around -0.01 with 39 images: to exclude 0 needs ~9x the images, to sit inside +-0.02 ~4x
    assert metrics.units_to_resolve(-0.04, 0.02, 39) == 351
    assert metrics.units_to_resolve(-0.04, 0.02, 39, margin=0.02) == 39 * 9
    assert metrics.units_to_resolve(-0.04, 0.02, 39, margin=0.005) is None  # the point is outside the margin
    assert metrics.units_to_resolve(-0.03, 0.03, 39) is None  # centred on 0: no number of images decides
