"""Notebook 04's glue (``experiments.streaming_sgd``): memory rows of one shape for the notebook and the
benchmark script, and the closing claims decided on constructed rows."""

from __future__ import annotations

import json
import math

import pytest

from histolean.experiments import streaming_sgd
from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE

CHANNELS = [4, 8, 16, 32, 64]


def memory(method, sweep, size, *, step=None, process=None, input_on="device", status="ok", projected=None,
           input_mib=0.0):
    return {"kind": "variant", "method": method, "status": status, "model": f"imagenette_cnn{tuple(CHANNELS)}",
            "setting": {"part": "memory", "sweep": sweep, "image_size": size, "tile_size": None if method ==
                        "conventional" else 128, "input_on": input_on},
            "metrics": {"step_peak_mib": step, "process_peak_mib": process, "input_mib": input_mib,
                        "input_share": input_mib / process if process else None, "projected_mib": projected},
            "projection_basis": "40 MiB measured at 512 px x (1024/512)^2" if projected else None}


def e2e(size, auc, ci):
    return {"kind": "variant", "method": "streaming", "data_kind": "real",
            "setting": {"part": "end_to_end", "image_size": size, "grid": 2, "n_train": 16, "epochs": 1},
            "metrics": {"auc": auc, "auc_ci": ci, "n_test": 16}}


def make_rows(*, loss_gap=1e-7, grad=3e-15, streamed_512=32.0, large_step=34.0, high_ci=(0.80, 0.95)) -> list[dict]:
    check = {"output_abs": 0.0, "weight_grad_abs": grad, "input_grad_abs": 1e-17, "loss_abs": 2e-16}
    return [
        {"kind": "variant", "method": "equivalence_training", "data_kind": "real", "input_size": 192,
         "setting": {"part": "equivalence", "epochs": 2, "tile": 32},
         "metrics": {"loss_gap": loss_gap, "weight_gap": 1e-6}},
        {"kind": "variant", "method": "equivalence_check", "setting": {"input": "as loaded (256 grey levels)",
                                                                       "image_size": 192, "tile": 32},
         "metrics": {**check, "input_grad_abs": 0.3}},
        {"kind": "variant", "method": "equivalence_check", "setting": {"input": "dithered by 1e-7", "image_size": 192,
                                                                       "tile": 32}, "metrics": check},
        memory("streaming", "constant_tile", 256, step=27.7, process=328.6, input_mib=0.75),
        memory("conventional", "constant_tile", 256, step=27.7, process=328.6, input_mib=0.75),
        memory("streaming", "constant_tile", 512, step=streamed_512, process=334.9, input_mib=3.0),
        memory("conventional", "constant_tile", 512, step=40.3, process=343.4, input_mib=3.0),
        memory("streaming", "constant_tile", 512, step=33.1, process=333.2, input_on="memmap"),
        memory("streaming", "large", 1024, step=large_step, process=334.9, input_on="memmap"),
        memory("conventional", "large", 1024, status="projected", projected=161.2, input_mib=12.0),
        e2e(96, 0.60, [0.50, 0.70]), e2e(192, 0.88, list(high_ci)),
    ]


def verdicts(rows) -> list[str]:
    return [c.verdict for c in streaming_sgd.paper_claims(rows)]


def test_an_equivalent_streamed_run_holds_everywhere():
    claims = streaming_sgd.paper_claims(make_rows())
    assert [c.verdict for c in claims] == [HOLDS] * 5
    assert claims[-1].interval == pytest.approx((0.80 - 0.70, 0.95 - 0.50))
    assert "3.0e-01" in claims[1].note   # the max-pool ties of the undithered images are said, not hidden


def test_diverging_training_or_gradients_fail():
    assert verdicts(make_rows(loss_gap=1e-3))[0] == FAILS
    assert verdicts(make_rows(grad=1e-6))[1] == FAILS


def test_a_streamed_step_that_grows_like_the_conventional_one_fails():
    assert verdicts(make_rows(streamed_512=39.0))[2] == FAILS    # +11.3 MiB vs +12.6 conventional


def test_a_large_step_above_the_projection_fails():
    assert verdicts(make_rows(large_step=200.0))[3] == FAILS


@pytest.mark.parametrize("ci, verdict", [((0.60, 0.95), NOT_RESOLVED), ((0.20, 0.40), FAILS),
                                         ((None, None), NOT_TESTABLE)])
def test_auc_against_resolution_needs_separated_intervals(ci, verdict):
    assert verdicts(make_rows(high_ci=ci))[4] == verdict


def test_missing_parts_are_not_testable():
    claims = streaming_sgd.paper_claims([r for r in make_rows() if r["setting"].get("part") != "memory"])
    assert [c.verdict for c in claims][2:4] == [NOT_TESTABLE, NOT_TESTABLE]


def test_memory_rows_have_one_shape_for_the_notebook_and_the_benchmark():
    ok = {"sweep": "constant_tile", "method": "streaming", "image_size": 512, "tile_size": 128, "status": "ok",
          "input_on": "memmap", "skip_zero_gradient_tiles": False, "step_peak_mib": 33.0, "process_peak_mib": 333.0,
          "input_mib": 0.0, "input_share": 0.0, "time_s": 2.0, "memory_method": "rss_high_water_mark"}
    row = streaming_sgd.memory_row(ok, CHANNELS, threads=1)
    assert row["setting"]["part"] == "memory" and row["setting"]["crop_size"] > 128
    assert row["metrics"]["step_peak_mib"] == 33.0 and row["metrics"]["projected_mib"] is None
    assert row["trunk_output_mib"] == pytest.approx(64 * 32 * 32 * 4 / 2 ** 20)   # output stride 16
    projected = {"sweep": "large", "method": "conventional", "image_size": 1024, "tile_size": None,
                 "status": "projected", "input_on": "device", "input_mib": 12.0, "projected_mib": 160.0, "basis": "b"}
    row = streaming_sgd.memory_row(projected, CHANNELS)
    assert row["setting"]["crop_size"] is None and row["projection_basis"] == "b"
    assert "projected 160 MiB" in streaming_sgd.describe_memory_result(projected)


def test_older_benchmark_files_are_read_with_the_step_peak(tmp_path):
    path = tmp_path / "streaming_memory.jsonl"
    rows = [{"method": "streaming", "setting": {"sweep": "constant_tile"}, "metrics": {"peak_mib": 12.5}},
            {"method": "calibration", "setting": {}, "metrics": {"peak_mib": 256}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    [row] = streaming_sgd.read_memory_results(path)
    assert row["metrics"]["step_peak_mib"] == 12.5 and row["setting"]["part"] == "memory"
    assert not math.isnan(row["metrics"]["step_peak_mib"])
