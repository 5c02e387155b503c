"""Iterative magnitude pruning: exact sparsity per round, CR checks, accounting, storage, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from histolean import pruning


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(5, 2, 1))   # last layer: 10 weights


def halve(n: int) -> int:
    """What one round keeps of n weights: torch prunes round(0.5 * n) of them."""
    return n - round(0.5 * n)


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_layerwise_sparsity_is_exactly_half_per_layer_per_round(rounds):
    net = tiny_net()
    for _ in range(rounds):
        pruning.prune_round(net, "layer-wise")
    for row in pruning.sparsity(net)["layers"]:
        expected = row["weights"]
        for _ in range(rounds):
            expected = halve(expected)
        assert row["kept"] == expected, row


def test_networkwide_sparsity_is_exactly_half_overall_and_global_ranking():
    net = tiny_net()
    total = pruning.sparsity(net)["weights"]
    kept = total
    for _ in range(1, 4):
        pruning.prune_round(net, "network-wide")
        kept = halve(kept)
        s = pruning.sparsity(net)
        assert s["kept"] == kept and s["weights"] == total
        # one global threshold: every kept weight is at least as large as every pruned one
        weights = torch.cat([m.weight_orig.detach().abs().flatten() for _, m in pruning.prunable_layers(net)])
        masks = torch.cat([m.weight_mask.flatten() for _, m in pruning.prunable_layers(net)]).bool()
        assert weights[masks].min() >= weights[~masks].max()
        # and the effective weights are zero exactly where the mask says
        effective = torch.cat([m.weight.detach().flatten() for _, m in pruning.prunable_layers(net)])
        assert int((effective != 0).sum()) == s["kept"]


def test_compression_ratio_must_be_a_power_of_two():
    for bad in (3, 6, 0, -4, 2.0, "8", True):
        with pytest.raises(ValueError, match="power of two"):
            pruning.rounds_for(bad)
    assert [pruning.rounds_for(c) for c in (1, 2, 4, 512)] == [0, 1, 2, 9]


def test_layerwise_cr_that_empties_a_layer_is_a_clear_error():
    net = tiny_net()   # smallest layer: 10 weights -> layer-wise reaches CR 8 at most
    assert pruning.max_layerwise_cr(net) == 8
    pruning.check_compression_ratio(net, "layer-wise", 8)
    with pytest.raises(ValueError, match=r"cannot reach CR 16.*4 \(10 weights\).*largest layer-wise CR .* is 8"):
        pruning.check_compression_ratio(net, "layer-wise", 16)
    pruning.check_compression_ratio(net, "network-wide", 512)
    with pytest.raises(ValueError, match="scheme"):
        pruning.check_compression_ratio(net, "global", 2)


def test_theoretical_speedup_layerwise_equals_cr_and_networkwide_weighs_flops():
    net = tiny_net()
    lw, nw = pruning.clone(net), pruning.clone(net)
    for _ in range(2):
        pruning.prune_round(lw, "layer-wise")
        pruning.prune_round(nw, "network-wide")
    # uniform density 1/4 in every layer (up to rounding) -> FLOPs / 4
    assert pruning.theoretical_speedup(lw, 16) == pytest.approx(4.0, rel=0.02)
    f = pruning.sparse_flops(nw, 16)
    density = {r["layer"]: r["density"] for r in pruning.sparsity(nw)["layers"]}
    from histolean import flops
    expected = sum(c.flops * density[c.name] for c in flops.layer_costs(nw, 16))
    assert f["sparse_flops"] == pytest.approx(expected)
    # fully convolutional: the ratio does not depend on the input size
    assert pruning.theoretical_speedup(nw, 16) == pytest.approx(pruning.theoretical_speedup(nw, 32))


def test_sparse_storage_round_trips_and_shrinks(tmp_path):
    net = nn.Sequential(nn.Conv2d(16, 64, 3), nn.Conv2d(64, 64, 3))
    for _ in range(3):
        pruning.prune_round(net, "network-wide")
    size = pruning.save_sparse(tmp_path / "m.pt", net)
    assert size < pruning.dense_bytes(net) / 2
    twin = pruning.load_sparse(tmp_path / "m.pt", nn.Sequential(nn.Conv2d(16, 64, 3), nn.Conv2d(64, 64, 3)))
    x = torch.randn(1, 16, 9, 9)
    assert torch.equal(twin(x), net(x))
    with pytest.raises(ValueError, match="not a histolean sparse model"):
        torch.save({"x": 1}, tmp_path / "other.pt")
        pruning.load_sparse(tmp_path / "other.pt", twin)


def test_iterative_prune_saves_each_round_and_resumes(tmp_path):
    calls = []

    def retrain(name, model, cr):
        calls.append(cr)
        with torch.no_grad():   # a stand-in for training: move every weight a little
            for _, m in pruning.prunable_layers(model):
                m.weight_orig.add_(0.01)

    def evaluate(models, cr):
        return {"cr_seen": cr, "kept": pruning.sparsity(models["model"])["kept"]}

    net = tiny_net()
    first = pruning.iterative_prune(net, "layer-wise", 4, retrain=retrain, evaluate=evaluate, state_dir=tmp_path,
                                    input_size=8)
    assert [r["cr"] for r in first] == [2, 4] and calls == [2, 4]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["layer-wise_cr2.pt", "layer-wise_cr4.pt"]
    # a killed run: the CR-4 round never finished; a new process starts from the trained model again
    (tmp_path / "layer-wise_cr4.pt").unlink()
    calls.clear()
    again = pruning.iterative_prune(tiny_net(), "layer-wise", 4, retrain=retrain, evaluate=evaluate,
                                    state_dir=tmp_path, input_size=8)
    assert calls == [4], "round 1 must be loaded, not redone"
    assert again[0]["resumed"] and not again[1]["resumed"]
    assert again[1]["evaluation"] == first[1]["evaluation"]
    assert again[1]["sparsity"]["model"]["kept"] == first[1]["sparsity"]["model"]["kept"]


def test_a_round_saved_for_other_settings_is_recomputed(tmp_path):
    calls = []

    def retrain(name, model, cr):
        calls.append(cr)

    pruning.iterative_prune(tiny_net(), "layer-wise", 2, retrain=retrain, state_dir=tmp_path, run_key="epochs=1",
                            input_size=8)
    again = pruning.iterative_prune(tiny_net(), "layer-wise", 2, retrain=retrain, state_dir=tmp_path,
                                    run_key="epochs=2", input_size=8)
    assert calls == [2, 2] and not again[0]["resumed"]
    same = pruning.iterative_prune(tiny_net(), "layer-wise", 2, retrain=retrain, state_dir=tmp_path,
                                   run_key="epochs=2", input_size=8)
    assert calls == [2, 2] and same[0]["resumed"]


def test_damaged_round_file_is_moved_aside_with_a_warning_and_recomputed(tmp_path):
    from histolean.util.cache import CorruptRecordWarning

    (tmp_path / "network-wide_cr2.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(CorruptRecordWarning, match="network-wide_cr2.pt"):
        [result] = pruning.iterative_prune(tiny_net(), "network-wide", 2, state_dir=tmp_path, input_size=8)
    assert not result["resumed"] and result["sparsity"]["model"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert (tmp_path / "network-wide_cr2.pt.corrupt").read_bytes() == b"not a checkpoint"
    # the recomputed round replaced it and is found again
    [again] = pruning.iterative_prune(tiny_net(), "network-wide", 2, state_dir=tmp_path, input_size=8)
    assert again["resumed"]


def test_round_record_loads_into_fresh_models_for_its_key_only(tmp_path):
    net = tiny_net()
    pruning.prune_round(net, "network-wide")
    pruning.save_round(tmp_path / "r.pt", {"model": net}, {"score": np.arange(3)}, key="k1")
    twin = tiny_net(seed=1)
    assert pruning.load_round(tmp_path / "r.pt", {"model": twin}, key="k2") is None
    result = pruning.load_round(tmp_path / "r.pt", {"model": twin}, key="k1")
    assert np.array_equal(result["score"], np.arange(3))
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(twin(x), net(x))
    with pytest.raises(ValueError, match="holds models"):
        pruning.load_round(tmp_path / "r.pt", {"semantic": tiny_net()}, key="k1")


def test_layerwise_keep_dense_leaves_the_named_layer_whole_and_lifts_the_cr_limit():
    net = tiny_net()                       # "4": the 10-weight last layer limits layer-wise to CR 8
    assert pruning.max_layerwise_cr(net, keep_dense=("4",)) == 128   # next smallest: 3 * 8 * 9 = 216 weights
    pruning.check_compression_ratio(net, "layer-wise", 16, keep_dense=("4",))
    for _ in range(4):
        pruning.prune_round(net, "layer-wise", keep_dense=("4",))
    kept = {r["layer"]: r["kept"] for r in pruning.sparsity(net)["layers"]}
    expected = 216                         # the first layer, 3 * 8 * 9 weights, halved four times
    for _ in range(4):
        expected = halve(expected)
    assert kept["4"] == 10 and kept["0"] == expected
    with pytest.raises(ValueError, match=r"keep_dense names \['head'\]"):
        pruning.max_layerwise_cr(net, keep_dense=("head",))
    nw = tiny_net()                        # network-wide ranks every layer whatever keep_dense says
    pruning.prune_round(nw, "network-wide", keep_dense=("4",))
    assert pruning.sparsity(nw)["kept"] == halve(pruning.sparsity(nw)["weights"])


def test_dense_control_retrains_the_same_rounds_without_pruning(tmp_path):
    calls = []
    rounds = pruning.iterative_prune(tiny_net(), pruning.CONTROL, 4, state_dir=tmp_path, input_size=8,
                                     retrain=lambda name, net, cr: calls.append(cr))
    assert calls == [2, 4] and [r["cr"] for r in rounds] == [2, 4]
    assert all(r["sparsity"]["model"]["sparsity"] == 0 and r["speedup"]["model"] == 1.0 for r in rounds)
    assert (tmp_path / f"{pruning.CONTROL}_cr4.pt").is_file()


def test_a_round_with_a_layer_kept_dense_resumes_into_fresh_models(tmp_path):
    first = pruning.iterative_prune(tiny_net(), "layer-wise", 4, state_dir=tmp_path, input_size=8, keep_dense=("4",))
    fresh = tiny_net(seed=1)
    again = pruning.iterative_prune(fresh, "layer-wise", 4, state_dir=tmp_path, input_size=8, keep_dense=("4",))
    assert [r["resumed"] for r in again] == [True, True]
    assert again[-1]["sparsity"]["model"]["kept"] == first[-1]["sparsity"]["model"]["kept"]
    assert not hasattr(fresh[4], "weight_mask") and hasattr(fresh[0], "weight_mask")
