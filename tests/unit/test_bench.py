"""Peak memory and time measurement: calibrated against known allocations, and the
streaming claim itself (peak memory of a step bounded by the tile, not the image)."""

from __future__ import annotations

import os

import pytest

from histolean.core import measure

STEP = "histolean.methods.streaming:training_step"
SMALL_NET = {"channels": [4, 8, 16, 32, 64]}


@pytest.mark.slow  # seconds on an idle 2-core CPU, more under load
def test_fresh_process_measures_a_known_allocation():
    res = measure.measure_isolated("histolean.core.measure:calibration_step", {"megabytes": 128})
    assert res["status"] == "ok", res
    assert res["memory_method"] == "rss_high_water_mark"
    assert 128 <= res["peak_mib"] <= 128 + 24, res  # the tensor, plus a little interpreter slack


def test_in_process_measurement_and_timing():
    # In a process that already did work (here: other tests), freed memory can be reused and
    # hide part of a peak - why benchmarks use measure_isolated. It never invents memory, though.
    mem = measure.peak_memory(measure.calibration_step(64))
    assert 0 <= mem["peak_bytes"] <= (64 + 16) * measure.MIB
    times = measure.time_per_call(measure.calibration_step(8), repeats=3)
    assert len(times) == 3 and all(t > 0 for t in times)
    m = measure.measure(measure.calibration_step(8), repeats=3)
    assert len(m["times_s"]) == 2 and m["time_s"] > 0


@pytest.mark.slow  # seconds on an idle 2-core CPU, more under load
def test_failures_are_reported_not_raised():
    res = measure.measure_isolated("histolean.core.measure:no_such_factory")
    assert res["status"] == "failed" and "no_such_factory" in res["error"]
    res = measure.measure_isolated("histolean.core.measure:calibration_step", {"megabytes": 768, "hold_s": 2.0},
                                 memory_limit_bytes=600 * measure.MIB)
    assert res["status"] == "over_memory_limit", res
    with pytest.raises(ValueError, match="package.module:function"):
        measure.measure_isolated("histolean.core.measure.calibration_step")


@pytest.mark.slow  # seconds on an idle 2-core CPU, more under load
def test_streaming_step_memory_is_bounded_by_the_tile():
    """Quadrupling the image barely moves the streaming peak; the conventional peak is far above it."""
    # one warm-up step: the first step's one-time allocations (library initialisation, optimiser state) vary by
    # environment (about +20 MiB in a fresh clone's venv) and are not what the tile bounds
    stream_small = measure.measure_isolated(STEP, {"image_size": 512, "tile_size": 256, **SMALL_NET}, warmup=1)
    stream_big = measure.measure_isolated(STEP, {"image_size": 1024, "tile_size": 256, **SMALL_NET}, warmup=1)
    conventional = measure.measure_isolated(STEP, {"image_size": 1024, "tile_size": None, **SMALL_NET}, warmup=1)
    for r in (stream_small, stream_big, conventional):
        assert r["status"] == "ok", r
    assert stream_big["peak_mib"] < 0.5 * conventional["peak_mib"]
    assert stream_big["peak_mib"] - stream_small["peak_mib"] < 0.15 * conventional["peak_mib"]


def test_compare_speed_interleaves_and_reports_ratios():
    import time as _time
    from histolean.core import measure
    order = []
    calls = {"slow": lambda: (order.append("slow"), _time.sleep(0.02)),
             "fast": lambda: (order.append("fast"), _time.sleep(0.005))}
    res = measure.compare_speed(calls, repeats=5, warmup=1)
    assert len(order) == 12 and order[:2] == ["slow", "fast"] and order[2:4] == ["fast", "slow"]
    assert res["slow"]["speedup"] == 1.0
    assert 2.0 < res["fast"]["speedup"] < 6.0
    assert res["fast"]["min_s"] <= res["fast"]["median_s"] <= res["fast"]["max_s"]
    assert res["fast"]["repeats"] == 5


def test_compare_speed_runs_setup_untimed_before_each_call_of_its_name():
    import time as _time
    from histolean.core import measure
    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    res = measure.compare_speed(calls, repeats=3, warmup=1,
                                setup={"b": lambda: (order.append("setup b"), _time.sleep(0.05))})
    assert order.count("setup b") == 4 and all(order[i + 1] == "b" for i, x in enumerate(order) if x == "setup b")
    assert res["b"]["max_s"] < 0.02  # the sleep is not in b's time
    with pytest.raises(ValueError, match="not calls"):
        measure.compare_speed(calls, setup={"c": lambda: None})


def test_compare_speed_rejects_unknown_reference():
    import pytest
    from histolean.core import measure
    with pytest.raises(ValueError, match="reference 'x'"):
        measure.compare_speed({"a": lambda: None}, reference="x")


def test_throughput_times_specs_side_by_side_and_shares_ir_networks():
    from histolean import arch, nar

    tiny = arch.tiny(input_size=32)
    res = measure.throughput({"original": tiny, "ir1": nar.input_reduction(tiny, 1)}, batch_size=2, repeats=2)
    assert set(res) == {"original", "ir1"}
    assert res["original"]["speedup"] == 1.0 and res["ir1"]["input_size"] < 32
    assert all(r["per_s"] > 0 and r["batch_size"] == 2 and r["repeats"] == 2 for r in res.values())


def test_throughput_needs_the_input_size_of_a_module():
    from histolean import arch, models

    with pytest.raises(ValueError, match="'net'.*input_sizes"):
        measure.throughput({"net": models.build(arch.tiny())})
    with pytest.raises(ValueError, match="batch_size"):
        measure.throughput({"net": arch.tiny()}, batch_size=0)


def test_inference_speed_gives_throughput_and_latency_side_by_side():
    from histolean import arch, models

    a = models.build(arch.tiny(input_size=16))
    b = models.build(arch.tiny(input_size=8))
    out = measure.inference_speed({"a": a, "b": b}, reference="a", input_sizes={"a": 16, "b": 8}, batch_size=2,
                                  repeats=5, device="cpu")
    assert out["a"]["speedup"] == 1.0 and out["a"]["latency_speedup"] == 1.0
    assert out["b"]["speed_repeats"] == 5 and out["b"]["speed_batch"] == 2 and out["b"]["speed_device"] == "cpu"
    assert out["b"]["latency_ms_min"] <= out["b"]["latency_ms"] <= out["b"]["latency_ms_max"]
    assert out["b"]["speedup_min"] <= out["b"]["speedup"] <= out["b"]["speedup_max"]
    assert out["b"]["throughput_per_s"] == pytest.approx(2 / (out["b"]["batch_ms"] / 1e3))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and at least two CPUs to confine to one")
def test_cpu_budget_confines_every_thread_and_restores_them():
    import threading

    before = os.sched_getaffinity(0)
    seen, ready, done = {}, threading.Event(), threading.Event()

    def worker():  # started before the budget: confined too
        ready.set()
        done.wait(5)
        seen["old"] = os.sched_getaffinity(0)

    t = threading.Thread(target=worker)
    t.start()
    ready.wait(5)
    with measure.cpu_budget(1) as cores:
        assert len(cores) == 1 and os.sched_getaffinity(0) == set(cores)
        inner = threading.Thread(target=lambda: seen.setdefault("new", os.sched_getaffinity(0)))
        inner.start()
        inner.join()
        done.set()
        t.join()
    assert seen == {"old": set(cores), "new": set(cores)}
    assert os.sched_getaffinity(0) == before
    with measure.cpu_budget(None) as none, measure.cpu_budget(len(before)) as all_of_them:
        assert none is None and all_of_them is None and os.sched_getaffinity(0) == before
