"""``streaming.memory.memory_sweep``, the one sweep behind notebook 04 and benchmarks/streaming_memory.py,
with a stand-in for the measured step (the real one is tested in test_bench / the notebook tier)."""

from __future__ import annotations

import pytest

from histolean.methods.streaming import memory

MIB = 2 ** 20


class FakeStep:
    """Peaks: conventional 10 MiB + 1 MiB per 64^2 pixels; streamed 10 MiB + a little per image side."""

    def __init__(self, fail_conventional_at=None):
        self.calls = []
        self.fail_conventional_at = fail_conventional_at

    def __call__(self, size, tile, **kw):
        self.calls.append((size, tile, kw["input_on"], kw["skip_zero_gradient_tiles"], kw["timeout_s"]))
        if tile is None and size == self.fail_conventional_at:
            return {"status": "killed", "error": "over the cap", "input_on": kw["input_on"]}
        peak = 10 + (size / 64) ** 2 if tile is None else 10 + size / 1024
        return {"status": "ok", "input_on": kw["input_on"], "step_peak_mib": peak, "process_peak_mib": 300 + peak,
                "input_mib": memory.input_mib(size, kw["input_on"]), "time_s": 0.1,
                "skip_zero_gradient_tiles": kw["skip_zero_gradient_tiles"]}


def sweep(step, **kw):
    args = dict(channels=[4, 8, 16, 32, 64], sizes=[512, 256], tile=128, tiles=[128, 64], tiles_image=512,
                offdevice_sizes=[512], large_size=2048, memory_cap_bytes=4 * 2 ** 30, large_timeout_s=1800,
                measure_fn=step)
    return memory.memory_sweep(**{**args, **kw})


def test_the_sweeps_in_order_each_configuration_measured_once():
    step = FakeStep()
    seen = []
    results = sweep(step, on_result=seen.append)
    assert seen == results
    assert [(r["sweep"], r["method"], r["image_size"], r["tile_size"], r["input_on"]) for r in results] == [
        ("constant_tile", "streaming", 256, 128, "device"), ("constant_tile", "conventional", 256, None, "device"),
        ("constant_tile", "streaming", 512, 128, "device"), ("constant_tile", "conventional", 512, None, "device"),
        ("constant_input", "streaming", 512, 64, "device"), ("constant_input", "streaming", 512, 128, "device"),
        ("constant_tile", "streaming", 512, 128, "memmap"),
        ("large", "streaming", 2048, 128, "memmap"), ("large", "conventional", 2048, None, "device")]
    # (512, 128, device) is in both sweeps: measured once
    assert len(step.calls) == len(results) - 2 and len(set(step.calls)) == len(step.calls)
    large = step.calls[-1]
    assert large[3] is True and large[4] == 1800          # zero-gradient tiles skipped, its own time limit
    projected = results[-1]
    assert projected["status"] == "projected" and projected["input_mib"] == memory.input_mib(2048, "device")
    assert projected["projected_mib"] == pytest.approx((10 + 64) * 16)   # the 512-px peak x (2048 / 512)^2


def test_conventional_steps_projected_above_the_cap_are_skipped():
    step = FakeStep()
    # 256 px: 26 MiB; projected to 1024 px: 416 MiB > a 300 MiB cap
    results = sweep(step, sizes=[256, 1024, 2048], memory_cap_bytes=300 * MIB, tiles=[], offdevice_sizes=[],
                    large_size=0)
    conventional = [r for r in results if r["method"] == "conventional"]
    assert [r["status"] for r in conventional] == ["ok", "skipped", "skipped"]
    assert conventional[1]["error"] == "predicted peak 0.4 GiB > cap 0.3 GiB"
    assert (1024, None, "device", False, 900) not in step.calls


def test_a_failed_conventional_step_stops_the_larger_ones():
    results = sweep(FakeStep(fail_conventional_at=512), sizes=[256, 512, 1024], tiles=[], offdevice_sizes=[],
                    large_size=0)
    conventional = [r for r in results if r["method"] == "conventional"]
    assert [r["status"] for r in conventional] == ["ok", "killed", "skipped"]
    assert "did not finish" in conventional[2]["error"]
