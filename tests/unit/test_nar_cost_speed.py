"""Speed on a deployment backend beside eager float32 (core.backends.time_on_backends, used by nar_cost and
til_nar_resrep): structure only (timings vary)."""

from __future__ import annotations

import pytest

from histolean import arch, models
from histolean.core import backends
from histolean.experiments import nar_cost


@pytest.mark.parametrize("label", ["onnxruntime", "torch"])
def test_every_network_is_timed_on_the_backend_and_in_eager_fp32_in_one_run(label):
    net = models.build(arch.tiny(num_classes=2, input_size=32), seed=0).eval()
    out = backends.time_on_backends({"original": (net, 32), "ir k=1": (net, 24)}, label, batch_size=2, repeats=2)
    assert set(out) == {"original", "ir k=1"}
    for t in out.values():
        assert t["per_s_min"] <= t["per_s"] <= t["per_s_max"] and t["per_s_eager_fp32"] > 0
        assert t["speedup_min"] <= t["speedup"] <= t["speedup_max"]
        assert t["speedup_eager_fp32_min"] <= t["speedup_eager_fp32"] <= t["speedup_eager_fp32_max"]
        assert (t["batch_size"], t["repeats"]) == (2, 2)
    # paired against the original on the same backend: the original's own ratio is exactly 1
    assert out["original"]["speedup"] == out["original"]["speedup_eager_fp32"] == 1.0
    if label == "torch":  # eager is the backend: one timing, the same numbers in both columns
        assert out["ir k=1"]["speedup"] == out["ir k=1"]["speedup_eager_fp32"]


def test_speed_efficiency_is_speedup_over_flop_reduction():
    assert nar_cost.speed_efficiency(3.0, 4.0) == 0.75
    assert nar_cost.speed_efficiency(None, 4.0) is None and nar_cost.speed_efficiency(2.0, None) is None


def test_an_openvino_operator_profile_says_where_the_time_goes(tmp_path):
    net = models.build(arch.tiny(num_classes=2, input_size=32), seed=0).eval()
    ops = backends.operator_profile(net, "openvino:fp32", input_size=32, batch_size=2, repeats=3, export_dir=tmp_path)
    assert ops and any(o["operator"] == "Convolution" for o in ops)
    assert abs(sum(o["share"] for o in ops) - 1.0) < 1e-9 and all(o["ms_per_batch"] >= 0 for o in ops)
    assert [o["ms_per_batch"] for o in ops] == sorted((o["ms_per_batch"] for o in ops), reverse=True)
    with pytest.raises(ValueError, match="OpenVINO labels only"):
        backends.operator_profile(net, "onnxruntime", input_size=32, batch_size=2)
