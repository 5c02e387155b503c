import numpy as np
import pytest
import torch
from torch import nn

from histolean import train


def _toy(n=96, seed=0):
    """Labels depend on the red channel: learnable by a linear model, not trivially by chance."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8)
    y = (x[..., 0].mean((1, 2)) > 127).astype(np.int64)
    return x, y


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(108, 2))


def test_loss_goes_down_and_val_auc_is_high():
    x, y = _toy()
    res = train.fit(_model(), train.make_loader(x, y, 16, shuffle=True), train.make_loader(x, y, 64),
                    epochs=6, lr=1e-2, progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.6 * losses[0]
    assert res.best_value > 0.95
    assert all(h["epoch_time_s"] > 0 for h in res.history) and res.time_per_epoch_s > 0


def test_best_checkpoint_is_restored(tmp_path):
    """After a good phase, a destructive lr makes later epochs worse; fit must hand back the best weights."""
    x, y = _toy()
    model = _model()
    val = train.make_loader(x, y, 64)

    def sabotage(m, step):  # from epoch 4 on, scramble the weights after each step
        if step >= 4 * 6:
            with torch.no_grad():
                for p in m.parameters():
                    p.mul_(-1.0)
    res = train.fit(model, train.make_loader(x, y, 16, shuffle=True), val, epochs=6, lr=1e-2,
                    monitor="val_loss", on_step_end=sabotage, checkpoint_path=tmp_path / "best.pt", progress=False)
    best = min(h["val_loss"] for h in res.history)
    assert res.best_value == pytest.approx(best)
    assert res.best_epoch < 6
    assert train.evaluate(model, val)["loss"] == pytest.approx(best, rel=1e-5)
    # the on-disk checkpoint is the same best model, loadable with weights_only=True
    fresh = _model()
    ckpt = train.load_checkpoint(fresh, tmp_path / "best.pt")
    assert ckpt["epoch"] == res.best_epoch
    assert train.evaluate(fresh, val)["loss"] == pytest.approx(best, rel=1e-5)


def test_early_stopping_stops():
    x, y = _toy()
    frozen = nn.Sequential(nn.Flatten(), nn.Linear(108, 2))
    res = train.fit(frozen, train.make_loader(x, y, 32), train.make_loader(x, y, 64), epochs=20,
                    lr=0.0, monitor="val_loss", patience=2, progress=False)
    assert res.stopped_early and len(res.history) == 3


def test_seeding_is_deterministic():
    x, y = _toy()
    runs = []
    for _ in range(2):
        m = _model()
        train.fit(m, train.make_loader(x, y, 16, shuffle=True, augment=True, seed=3), None, epochs=2,
                  lr=1e-2, seed=3, progress=False)
        runs.append(torch.cat([p.flatten() for p in m.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_schedules_and_after_backward_hook():
    x, y = _toy()
    calls = []
    res = train.fit(_model(), train.make_loader(x, y, 32), None, epochs=4, optimizer="sgd", lr=0.1,
                    schedule="step", step_size=2, gamma=0.5, progress=False,
                    after_backward=lambda m, s: calls.append(m[1].weight.grad is not None))
    assert [h["lr"] for h in res.history] == pytest.approx([0.1, 0.1, 0.05, 0.05])
    assert calls and all(calls)
    res = train.fit(_model(), train.make_loader(x, y, 32), None, epochs=4, lr=0.1, schedule="cosine", progress=False)
    assert res.history[-1]["lr"] < res.history[0]["lr"]


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        train.make_loader(np.zeros((2, 4, 4, 3), np.float32), [0, 1])
    with pytest.raises(ValueError, match="optimizer"):
        train.fit(_model(), train.make_loader(*_toy()), epochs=1, optimizer="lbfgs", progress=False)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        train.load_checkpoint(_model(), bad)


def test_make_loader_normalises_and_resizes():
    x = np.full((2, 8, 8, 3), 255, np.uint8)
    xb, yb = next(iter(train.make_loader(x, [0, 1], batch_size=2, size=4)))
    assert xb.shape == (2, 3, 4, 4) and torch.allclose(xb, torch.ones_like(xb))
    assert yb.dtype == torch.int64


@pytest.mark.parametrize("num_workers", [0, 2])
def test_two_fits_with_one_seed_on_one_loader_give_identical_weights(num_workers):
    """The loader shuffles and augments; the first fit advances its generator and augmentation RNG."""
    x, y = _toy(64)
    loader = train.make_loader(x, y, 16, shuffle=True, augment=True, seed=5, num_workers=num_workers)

    def weights(seed):
        model = _model()
        train.fit(model, loader, epochs=2, lr=1e-2, seed=seed, progress=False, device="cpu")
        return [p.detach().clone() for p in model.parameters()]

    first, second, other = weights(3), weights(3), weights(4)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_loader_workers_augment_with_their_own_seeds():
    x = np.arange(8 * 6 * 6 * 3, dtype=np.int64).reshape(8, 6, 6, 3).astype(np.uint8)
    y = np.zeros(8, dtype=np.int64)
    loader = train.make_loader(x, y, 4, augment=True, num_workers=2)
    train.reseed_loader(loader, 0)
    batches = [b[0] for b in loader]
    dataset = train.ArrayDataset(x, y, augment=True)
    orientations = []
    for batch, start in zip(batches, (0, 4)):  # which of the 8 flips/rotations each worker chose
        orientations.append([next(k for k in range(8) if torch.equal(
            item, dataset_view(dataset, start + i, k))) for i, item in enumerate(batch)])
    assert orientations[0] != orientations[1], "both workers drew the same augmentations"
    train.reseed_loader(loader, 0)
    assert all(torch.equal(a, b[0]) for a, b in zip(batches, loader)), "one seed, one pass"


def dataset_view(dataset, i, k):
    """Item ``i`` of ``dataset`` (no augmentation) under orientation ``k``: rot90 by k % 4, then a flip if k >= 4."""
    img = np.rot90(dataset.images[i], k % 4)
    if k >= 4:
        img = img[:, ::-1]
    chw = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
    return (chw / 255.0 - train.NORM_MEAN) / train.NORM_STD


def test_recalibrate_batchnorm_sets_exact_averages_and_keeps_momentum():
    net = nn.Sequential(nn.BatchNorm2d(3))
    net[0].running_mean.fill_(5.0)  # stale statistics
    x = torch.rand(12, 3, 4, 4) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    loader = [(x[i:i + 4], torch.zeros(4)) for i in range(0, 12, 4)]
    train.recalibrate_batchnorm(net, loader)
    assert torch.allclose(net[0].running_mean, x.mean((0, 2, 3)), atol=1e-6)  # equal batches: the exact mean
    assert net[0].momentum == 0.1 and not net.training
