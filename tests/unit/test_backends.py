"""Inference backends, the float32 check, the backend choice and the precision setting (tiny networks, fast)."""

import json

import numpy as np
import pytest
import torch

from histolean.core import arch, backends, models, precision, train

FAST_BACKENDS = [b for b in backends.available() if b != "torch"]
BF16_LIMIT = 0.03      # the check's own bound on class probabilities
FP32_LIMIT = 1e-4      # on logits: the same arithmetic in another order


@pytest.fixture(scope="module")
def net():
    return models.build(arch.tiny(input_size=32), seed=0).eval()


@pytest.fixture(scope="module")
def patches():
    return np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def no_bf16_cpu(monkeypatch):
    """A CPU without bf16 units, simulated at the one capability test."""
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)


@pytest.mark.parametrize("name", FAST_BACKENDS)
def test_each_backend_gives_the_float32_logits(net, patches, name, tmp_path):
    expected = backends.make_predictor(net, "torch")(patches)
    predict = backends.make_predictor(net, name, threads=1, export_dir=tmp_path)
    got = predict(patches[:5])    # a first batch of another size: fixed-batch backends must cope
    assert got.shape == (5, 2) and got.dtype == np.float32
    got = predict(patches)
    if predict.precision == "fp32":
        np.testing.assert_allclose(got, expected[: len(got)], atol=FP32_LIMIT)
    else:
        diff = np.abs(backends.class_probabilities(got) - backends.class_probabilities(expected)).max()
        assert diff <= BF16_LIMIT
    assert predict.label == backends.label(predict.backend, predict.precision)


@pytest.mark.slow
def test_torch_compile_gives_the_float32_logits(net, patches):
    expected = backends.make_predictor(net, "torch")(patches)
    got = backends.make_predictor(net, "torch_compile", batch_size=8)(patches[:20])   # 8 + 8 + 4 padded
    np.testing.assert_allclose(got, expected[:20], atol=FP32_LIMIT)


def test_float_batches_pass_unnormalised_and_uint8_are_normalised_like_training(net, patches):
    predict = backends.make_predictor(net, "torch")
    x = torch.stack([train.ArrayDataset(patches, np.zeros(len(patches)))[i][0] for i in range(len(patches))])
    np.testing.assert_allclose(predict(x.numpy()), predict(patches), atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(predict(x), net(x).numpy(), atol=1e-6)


def test_onnx_export_is_made_once_and_named_by_the_network(net, tmp_path):
    first = backends.make_predictor(net, "onnxruntime", export_dir=tmp_path).export_path
    stamp = first.stat().st_mtime_ns
    assert backends.make_predictor(net, "openvino:fp32", export_dir=tmp_path).export_path == first
    assert first.stat().st_mtime_ns == stamp
    other = models.build(arch.tiny(input_size=32), seed=1).eval()
    assert backends.make_predictor(other, "onnxruntime", export_dir=tmp_path).export_path != first


def test_positive_probability_from_two_logits_or_one():
    np.testing.assert_allclose(backends.positive_probability(np.array([[0.0, 0.0], [0.0, np.log(3.0)]])), [0.5, 0.75])
    np.testing.assert_allclose(backends.positive_probability(np.array([[0.0], [np.log(3.0)]])), [0.5, 0.75])


def test_names_and_precisions():
    assert backends.parse_label("openvino:bf16") == ("openvino", "bf16")
    assert backends.parse_label("openvino:f32") == ("openvino", "fp32")
    assert backends.label("torch_bf16") == "torch_bf16"
    with pytest.raises(ValueError, match="fp32 only"):
        backends.resolve_precision("onnxruntime", "bf16")
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.parse_label("tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.normalize("fp8")


def test_the_bf16_check_passes_on_a_tiny_network(net, patches):
    labels = np.arange(len(patches)) % 2
    check = backends.check_against_fp32(net, "torch_bf16", "bf16", patches, labels=labels)
    assert check["passed"] and check["precision"] == "bf16" and check["n"] == len(patches)
    assert check["max_prob_diff"] <= BF16_LIMIT and check["label_agreement"] >= 0.98
    assert abs(check["auc_diff"]) < 0.05 and "auc_fp32" in check
    json.dumps(check)   # recorded as is


def test_the_bf16_check_fails_on_a_predictor_that_disagrees(net, patches):
    eager = backends.make_predictor(net, "torch")

    def flipped(batch):   # the same network with its two classes swapped
        return eager(batch)[:, ::-1].copy()

    def nudged(batch):    # labels mostly kept, probabilities moved by more than the bound
        return eager(batch) + np.array([0.0, 0.3], dtype=np.float32)

    assert not backends.check_against_fp32(net, flipped, "bf16", patches)["passed"]
    check = backends.check_against_fp32(net, nudged, "bf16", patches)
    assert check["max_prob_diff"] > BF16_LIMIT and not check["passed"]


def _fake_timer(per_s):
    """compare_speed's result shape with fixed speeds, so the choice is deterministic."""
    calls_seen = []

    def timer(calls, *, reference, repeats, warmup, items_per_call):
        calls_seen.append(sorted(calls))
        return {name: {"per_s": per_s[name], "speedup": per_s[name] / per_s[reference]} for name in calls}

    timer.calls_seen = calls_seen
    return timer


def test_the_choice_is_the_fastest_backend_that_passes_its_check(net, patches, tmp_path):
    eager = backends.make_predictor(net, "torch")
    broken = lambda batch: eager(batch)[:, ::-1].copy()   # noqa: E731 - fastest, but wrong
    timer = _fake_timer({"torch": 10.0, "torch_channels_last": 30.0, "onnxruntime": 20.0, "openvino:bf16": 99.0})
    choice = backends.choose_backend(net, patches, ["torch", "torch_channels_last", "onnxruntime", "openvino:bf16"],
                                     predictors={"torch": eager, "torch_channels_last": eager, "onnxruntime": eager,
                                                 "openvino:bf16": broken}, timer=timer, key="t")
    assert choice["label"] == "torch_channels_last" and choice["backend"] == "torch_channels_last"
    assert choice["precision"] == "fp32" and choice["chosen_by"] == "measurement"
    assert "openvino:bf16" in choice["failed"] and not choice["checks"]["openvino:bf16"]["passed"]
    assert timer.calls_seen == [["onnxruntime", "torch", "torch_channels_last"]]   # a failed check is not timed
    # the same measurement with the bf16 backend correct picks it
    timer = _fake_timer({"torch": 10.0, "torch_channels_last": 30.0, "onnxruntime": 20.0, "openvino:bf16": 99.0})
    choice = backends.choose_backend(net, patches, ["torch", "torch_channels_last", "onnxruntime", "openvino:bf16"],
                                     predictors={"torch": eager, "torch_channels_last": eager, "onnxruntime": eager,
                                                 "openvino:bf16": eager}, timer=timer, key="t")
    assert choice["label"] == "openvino:bf16" and choice["precision"] == "bf16"
    assert choice["speedup"]["openvino:bf16"] == pytest.approx(9.9)
    deployed = backends.predictor_for(net, choice, export_dir=tmp_path)
    assert deployed.label == "openvino:bf16" and deployed.precision == "bf16"


def test_the_choice_is_cached_per_key_and_machine(net, patches, tmp_path, monkeypatch):
    eager = backends.make_predictor(net, "torch")
    fakes = {"torch": eager, "onnxruntime": eager}
    timer = _fake_timer({"torch": 10.0, "onnxruntime": 20.0})
    first = backends.choose_backend(net, patches, list(fakes), predictors=fakes, timer=timer, cache_dir=tmp_path,
                                    key="nar_cost")
    again = backends.choose_backend(net, patches, list(fakes), predictors=fakes, timer=timer, cache_dir=tmp_path,
                                    key="nar_cost")
    assert not first["from_cache"] and again["from_cache"] and again["label"] == first["label"] == "onnxruntime"
    assert len(timer.calls_seen) == 1 and (tmp_path / "backend-choice-nar_cost.json").is_file()
    backends.choose_backend(net, patches, list(fakes), predictors=fakes, timer=timer, cache_dir=tmp_path,
                            key="til_maps")
    assert len(timer.calls_seen) == 2          # another benchmark measures for itself
    monkeypatch.setattr(precision, "cpu_model", lambda: "another CPU")
    moved = backends.choose_backend(net, patches, list(fakes), predictors=fakes, timer=timer, cache_dir=tmp_path,
                                    key="nar_cost")
    assert not moved["from_cache"] and len(timer.calls_seen) == 3   # another machine measures again


def test_an_override_is_checked_not_timed(net, patches):
    timer = _fake_timer({})
    choice = backends.choose_backend(net, patches, override="torch_bf16", timer=timer)
    assert choice["chosen_by"] == "override" and choice["label"] == "torch_bf16"
    assert choice["checks"]["torch_bf16"]["passed"] and timer.calls_seen == []


def test_a_cpu_without_bf16_falls_back_to_float32(no_bf16_cpu):
    assert precision.resolve("auto", "cpu") == "fp32"
    assert backends.resolve_precision("openvino", "auto") == "fp32"
    assert "openvino:bf16" not in backends.available() and "torch_bf16" not in backends.available()
    assert precision.resolve("bf16", "cpu") == "bf16"   # asked for explicitly: honoured (emulated)
    # a notebook's list keeps only what this CPU runs, in its order; torch_compile only on request
    wanted = ["openvino:bf16", "torch", "torch_bf16", "torch_compile", "openvino:fp32"]
    assert backends.runnable(wanted) == ["torch"] + (["openvino:fp32"] if "openvino:fp32" in backends.available()
                                                     else [])
    assert "torch_compile" in backends.runnable(wanted, include_compile=True)


def test_auto_is_bf16_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert precision.resolve("auto", "cpu") == "bf16"
    assert backends.label("openvino") == "openvino:bf16"
    assert precision.resolve("fp32", "cpu") == "fp32"


def _toy_loader():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    y = (x[..., 0].mean((1, 2)) > 127).astype(np.int64)
    return train.make_loader(x, y, 16, shuffle=True), train.make_loader(x, y, 32)


def test_fit_trains_in_bf16_and_records_it():
    net = models.build(arch.tiny(input_size=16), seed=0)
    before = [p.detach().clone() for p in net.parameters()]
    train_loader, val_loader = _toy_loader()
    res = train.fit(net, train_loader, val_loader, epochs=1, precision="bf16", progress=False, device="cpu")
    assert res.precision == "bf16" and len(res.history) == 1 and np.isfinite(res.history[0]["train_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))   # it trained
    assert all(p.dtype == torch.float32 for p in net.parameters())                 # master weights stay fp32
    assert all(p.is_contiguous() for p in net.parameters())                        # handed back in default layout


def test_fit_auto_on_a_cpu_without_bf16_trains_in_float32(no_bf16_cpu):
    net = models.build(arch.tiny(input_size=16), seed=0)
    train_loader, _ = _toy_loader()
    res = train.fit(net, train_loader, None, epochs=1, precision="auto", progress=False, device="cpu")
    assert res.precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        train.fit(net, train_loader, None, epochs=1, precision="half", progress=False, device="cpu")


def test_fit_default_on_a_bf16_cpu_stays_float32_until_a_notebook_opts_in(monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    net = models.build(arch.tiny(input_size=16), seed=0)
    train_loader, _ = _toy_loader()
    assert train.fit(net, train_loader, None, epochs=1, progress=False, device="cpu").precision == "fp32"
    assert train.fit(net, train_loader, None, epochs=1, precision="auto", progress=False, device="cpu").precision == "bf16"


class _Scaled(torch.nn.Module):
    """A tiny network whose logits are ``scale`` times larger, as an untrained deep one's can be."""

    def __init__(self, inner, scale):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x):
        return self.inner(x) * self.scale


def test_onnx_export_tolerance_scales_with_the_logits(net, tmp_path):
    from histolean.core import export
    big = _Scaled(net, 1e4)
    assert export.to_onnx(big, 32, tmp_path / "big.onnx").exists()    # float32 noise at 1e4 passes
    with pytest.raises(ValueError, match="differs from torch"):      # a limit below float32 noise still rejects
        export.to_onnx(big, 32, tmp_path / "strict.onnx", atol=0.0, rtol=1e-12)
    assert not (tmp_path / "strict.onnx").exists()



def test_a_model_freed_on_another_thread_leaves_this_threads_signal_stack_mapped(net, tmp_path):
    """OpenVINO's CPU plugin installs a signal stack on the thread that loads it and unmaps it when it is
    unloaded; unloaded from another thread (a Dask worker dropping the last model), it leaves the loading
    thread's stack pointing at unmapped memory, and the next signal there (a SIGCHLD, once torch's
    DataLoader handles it) killed the process. One Core per process never unloads the plugin."""
    import ctypes
    import gc
    import threading

    from histolean.core import export

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    def mapped(address):
        with open("/proc/self/maps", encoding="ascii") as maps:
            spans = [[int(a, 16) for a in line.split()[0].split("-")] for line in maps]
        return any(lo <= address < hi for lo, hi in spans)

    models = [export.openvino_model(export.to_onnx(net, 32, tmp_path / "net.onnx"), threads=1)]
    dropper = threading.Thread(target=lambda: (models.clear(), gc.collect()))
    dropper.start()
    dropper.join()
    stack = StackT()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    assert stack.ss_flags & 2 or mapped(stack.ss_sp)   # SS_DISABLE, or a stack that still exists


def test_a_global_pool_network_is_exported_once_for_every_input_size(net, patches, tmp_path):
    from torch import nn

    from histolean.core import export

    assert export.takes_any_size(net, 32)
    big = backends.make_predictor(net, "onnxruntime", export_dir=tmp_path, input_size=32)
    small = backends.make_predictor(net, "openvino:fp32", export_dir=tmp_path, input_size=24, batch_size=4)
    assert small.export_path == big.export_path and len(list(tmp_path.glob("*.onnx"))) == 1
    for size, predict in ((32, big), (24, small)):   # each runtime at its own size gives torch's logits
        batch = patches[:4, :size, :size]
        expected = backends.make_predictor(net, "torch", input_size=size)(batch)
        np.testing.assert_allclose(predict(batch), expected, atol=FP32_LIMIT)
    # a head bound to one size (flatten + linear) is exported for that size only
    fixed = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Flatten(), nn.Linear(4 * 15 * 15, 2)).eval()
    assert not export.takes_any_size(fixed, 32)
    path = export.cached_onnx(fixed, 32, tmp_path)
    assert path != big.export_path and export.network_fingerprint(fixed, 32) in path.name


def test_auto_trains_in_float32_where_a_strided_conv_meets_a_1_pixel_map(monkeypatch):
    """oneDNN's bf16 backward turns NaN there (ResNet50V2 below 64 px): "auto" says so and keeps float32."""
    big, small = arch.resnet50v2(input_size=64), arch.resnet50v2(input_size=16)
    assert precision.bf16_cpu_hazard(models.build(big, seed=0), torch.zeros(1, 3, 64, 64)) is None
    net = models.build(small, seed=0)
    assert precision.bf16_cpu_hazard(net, torch.zeros(2, 3, 16, 16)).endswith("conv2")
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    x = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    loader = train.make_loader(x, np.arange(8) % 2, 8)
    with pytest.warns(UserWarning, match="training in float32, not bf16"):
        res = train.fit(net, loader, None, epochs=1, precision="auto", progress=False, device="cpu")
    assert res.precision == "fp32"
