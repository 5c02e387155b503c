"""The Keras models of the PCam/IDC 12-CNN comparison (Bonnet 2024) and its training protocol.

This is the only histolean module that imports TensorFlow (Keras 3 on the TensorFlow backend,
as the paper): ``import histolean`` never does; ``from histolean import keras_zoo`` does.

* :func:`build` makes one of the 12 models: B2 and B6 as in the paper's code (Sequential, two /
  six convolutions, one sigmoid output), or a ``keras.applications`` trunk with the paper's new
  head (global average pooling, dense 256 + ReLU, dense 1 + sigmoid). ``weights`` is ``None``
  (full training), ``"imagenet"`` (transfer learning: only the head trains; the file must be in
  the local Keras cache, else :class:`WeightsUnavailable`) or the path of a weights file.
* :func:`fit_and_test`: Adam, evaluation on validation after each epoch, the best epoch's weights
  (by validation accuracy, as the paper) evaluated on test; time per epoch.
* :func:`cached_run`: one directory per trained model (result + best weights), reused when the
  settings are unchanged, so an interrupted notebook resumes model by model.
* :func:`tune`: KerasTuner Hyperband over the Adam learning rate and the batch size.
* :func:`with_new_head`: in-domain transfer (a trunk trained on one dataset, a new head on another).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

import keras  # noqa: E402
import numpy as np  # noqa: E402

from histolean.util import atomic  # noqa: E402
from histolean.core import flops, metrics

import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")  # retracing warnings for every new model: expected here, not actionable

if keras.backend.backend() != "tensorflow":
    raise ImportError(f"histolean.experiments.pcam_idc_zoo needs the TensorFlow backend of Keras (the paper's), but KERAS_BACKEND is "
                      f"{keras.backend.backend()!r}; unset KERAS_BACKEND or set it to 'tensorflow'")

HEAD_PREFIX = "head_"   # layers after the trunk; in-domain transfer replaces exactly these
HEAD_UNITS = 256        # the paper's dense layer (nb_dense_layers in its code)


@dataclass(frozen=True)
class ZooModel:
    key: str              # our name
    paper: str            # the paper's abbreviation (Tables 1, 3, 4)
    application: str      # keras.applications constructor, "" for B2 / B6
    min_input: int        # smallest input side keras.applications accepts
    imagenet_file: str    # the no-top ImageNet weights file name in the Keras cache ("" for B2 / B6)


MODELS: dict[str, ZooModel] = {m.key: m for m in (
    ZooModel("b2", "B2", "", 4, ""),
    ZooModel("b6", "B6", "", 36, ""),   # six 'valid' 3x3 convs and three 2x2 pools need >= 36 px
    ZooModel("inception_v3", "IV3", "InceptionV3", 75, "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ZooModel("vgg19", "VGG19", "VGG19", 32, "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ZooModel("resnet50", "RN50", "ResNet50", 32, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ZooModel("mobilenet", "MN", "MobileNet", 32, "mobilenet_1_0_224_tf_no_top.h5"),
    ZooModel("densenet121", "DN121", "DenseNet121", 32, "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ZooModel("densenet169", "DN169", "DenseNet169", 32, "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ZooModel("densenet201", "DN201", "DenseNet201", 32, "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ZooModel("efficientnetv2_b0", "ENB0", "EfficientNetV2B0", 32, "efficientnetv2-b0_notop.h5"),
    ZooModel("efficientnetv2_b1", "ENB1", "EfficientNetV2B1", 32, "efficientnetv2-b1_notop.h5"),
    ZooModel("efficientnetv2_b2", "ENB2", "EfficientNetV2B2", 32, "efficientnetv2-b2_notop.h5"),
)}


class WeightsUnavailable(RuntimeError):
    """Pre-trained weights that cannot be had here (ImageNet file not in the Keras cache, offline)."""


class WeightsError(ValueError):
    """A weights file that is missing, unreadable or does not fit the model."""


class InputTooSmall(ValueError):
    """An input side below the model's minimum (the paper: 'not applicable' on IDC's 50 px)."""


def model_info(name: str) -> ZooModel:
    try:
        return MODELS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"keras_zoo: unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def check_input_size(name: str, input_size: int) -> None:
    """Raise :class:`InputTooSmall` when ``input_size`` is below ``name``'s minimum."""
    info = model_info(name)
    if int(input_size) < info.min_input:
        raise InputTooSmall(f"{name}: input {input_size}x{input_size} px is below its minimum of "
                            f"{info.min_input}x{info.min_input} px (not applicable at this size; upscale the "
                            "patches or choose another model)")


def configure_threads(intra_op: int | None = None, inter_op: int = 1) -> dict:
    """Set TensorFlow's thread pools (before the first op): ``intra_op`` threads per op (default:
    every core), ``inter_op`` ops at once (1: a small CPU has no cores to spare for parallel ops)."""
    import tensorflow as tf

    intra_op = int(intra_op or os.cpu_count() or 1)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op))
    except RuntimeError:  # the runtime already started: the pools are fixed for this process
        pass
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------

def keras_cache_dir() -> Path:
    """Where ``keras.utils.get_file`` keeps downloaded weights: ``$KERAS_HOME/models``, else Keras's home
    (~/.keras, or /tmp/.keras when home is not writable) ``/models``."""
    from keras.src.backend import config

    home = os.environ.get("KERAS_HOME") or config.keras_home()
    return Path(home).expanduser() / "models"


def imagenet_weights_path(name: str) -> Path:
    """The cached no-top ImageNet weights of ``name``; :class:`WeightsUnavailable` when not cached."""
    info = model_info(name)
    if not info.application:
        raise WeightsUnavailable(f"{name}: no ImageNet weights exist for the paper's own small CNN")
    path = keras_cache_dir() / info.imagenet_file
    if not path.is_file():
        raise WeightsUnavailable(f"{name}: ImageNet weights not in the local Keras cache ({path}) and this machine "
                                 "cannot download them; copy the file there to run transfer learning")
    return path


def resolve_weights(name: str, weights) -> Path | None:
    """``None`` | ``"imagenet"`` | a path -> the file to load (checked to exist), or None."""
    if weights is None:
        return None
    if isinstance(weights, str) and weights == "imagenet":
        return imagenet_weights_path(name)
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"{name}: weights file {path} does not exist")
    return path


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def _b2(input_size: int) -> keras.Model:
    """Two 5x5 'same' convs (32, 64), each ReLU + 2x2 max pool; flatten, dense 256 + ReLU, sigmoid."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((input_size, input_size, 3), name="image"),
        L.Conv2D(32, 5, padding="same", name="conv1"), L.Activation("relu", name="relu1"),
        L.MaxPooling2D(2, name="pool1"),
        L.Conv2D(64, 5, padding="same", name="conv2"), L.Activation("relu", name="relu2"),
        L.MaxPooling2D(2, name="pool2"),
        L.Flatten(name="head_flatten"), L.Dense(HEAD_UNITS, name="head_dense"),
        L.Activation("relu", name="head_relu"), L.Dense(1, activation="sigmoid", name="head_out"),
    ], name="b2")


def _b6(input_size: int) -> keras.Model:
    """Six 3x3 'valid' convs (32, 32, 64, 64, 128, 128), BN after all but the first, 2x2 max pool +
    dropout 0.3 after each pair; flatten, dense 256 + BN + ReLU, dropout 0.5, sigmoid."""
    L = keras.layers
    layers = [keras.Input((input_size, input_size, 3), name="image"),
              L.Conv2D(32, 3, activation="relu", name="conv1")]
    for i, width in enumerate((32, 64, 64, 128, 128), start=2):
        layers += [L.Conv2D(width, 3, use_bias=False, name=f"conv{i}"), L.BatchNormalization(name=f"bn{i}"),
                   L.Activation("relu", name=f"relu{i}")]
        if i % 2 == 0:
            layers += [L.MaxPooling2D(2, name=f"pool{i // 2}"), L.Dropout(0.3, name=f"drop{i // 2}")]
    layers += [L.Flatten(name="head_flatten"), L.Dense(HEAD_UNITS, use_bias=False, name="head_dense"),
               L.BatchNormalization(name="head_bn"), L.Activation("relu", name="head_relu"),
               L.Dropout(0.5, name="head_drop"), L.Dense(1, activation="sigmoid", name="head_out")]
    return keras.Sequential(layers, name="b6")


def _application(info: ZooModel, input_size: int, weights: Path | None, freeze_trunk: bool) -> keras.Model:
    constructor = getattr(keras.applications, info.application)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    kwargs = {"include_preprocessing": False} if info.key.startswith("efficientnet") else {}
    try:
        trunk = constructor(include_top=False, weights=None if weights is None else str(weights),
                            input_tensor=inputs, **kwargs)
    except Exception as err:  # keras raises many kinds for a bad file (OSError, ValueError, KeyError...)
        if weights is None:
            raise
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        raise WeightsError(f"{info.key}: cannot load weights file {weights} ({type(err).__name__}: {first_line}); "
                           "it is damaged or holds another model's weights") from None
    if freeze_trunk:
        for layer in trunk.layers:
            layer.trainable = False
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(trunk.output)
    x = keras.layers.Dense(HEAD_UNITS, activation="relu", name="head_dense")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="head_out")(x)
    return keras.Model(inputs, out, name=info.key)


def build(name: str, input_size: int, *, weights=None, freeze_trunk: bool | None = None, seed: int = 0,
          bn_momentum: float | None = None) -> keras.Model:
    """One of the 12 models at ``input_size`` px with one sigmoid output.

    ``weights``: None (full training), "imagenet" (cached ImageNet trunk) or a weights-file path
    (a no-top trunk for applications; a whole model for B2/B6). ``freeze_trunk`` defaults to True
    exactly when pre-trained weights are given (the paper's transfer learning: only the head trains).
    ``bn_momentum`` (None: Keras's 0.99, the paper's) sets every batch normalisation's moving-average
    momentum: a run of a few dozen steps needs a lower one (e.g. 0.9), or the moving statistics used
    at evaluation stay near their initial values and the network predicts one class.
    """
    info = model_info(name)
    check_input_size(info.key, input_size)
    path = resolve_weights(info.key, weights)
    freeze = path is not None if freeze_trunk is None else bool(freeze_trunk)
    keras.utils.set_random_seed(int(seed))
    if info.application:
        model = _application(info, int(input_size), path, freeze)
    else:
        model = _b2(int(input_size)) if info.key == "b2" else _b6(int(input_size))
        if path is not None:
            load_weights(model, path)
        if freeze:
            for layer in trunk_layers(model):
                layer.trainable = False
    if bn_momentum is not None:
        if not 0.0 <= float(bn_momentum) < 1.0:
            raise ValueError(f"build: bn_momentum must be in [0, 1), got {bn_momentum}")
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(bn_momentum)
    return model


def trunk_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers if not layer.name.startswith(HEAD_PREFIX)]


def trunk(model: keras.Model) -> keras.Model:
    """The model without its head (what a no-top weights file holds), sharing its layers."""
    head = [layer for layer in model.layers if layer.name.startswith(HEAD_PREFIX)]
    if not head:
        raise ValueError(f"{model.name}: no '{HEAD_PREFIX}*' layers, so no head to cut off")
    return keras.Model(model.inputs, head[0].input, name=f"{model.name}_trunk")


def load_weights(model: keras.Model, path) -> None:
    """``model.load_weights(path)`` with an error that names the file when it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{model.name}: weights file {path} does not exist")
    try:
        model.load_weights(str(path))
    except Exception as err:
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        raise WeightsError(f"{model.name}: cannot load weights file {path} ({type(err).__name__}: {first_line}); "
                           "it is damaged or holds another model's weights") from None


def save_weights(model: keras.Model, path) -> Path:
    """Atomic ``model.save_weights`` (Keras insists on a '.weights.h5' name, so the temporary file has one)."""
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"save_weights: {path} must end in '.weights.h5' (Keras's weights format)")
    with atomic.atomic_path(path) as tmp:
        staged = tmp.with_name(tmp.name[: -len(".h5")] + ".weights.h5")
        try:
            model.save_weights(str(staged))
            os.replace(staged, tmp)
        finally:
            if staged.exists():
                staged.unlink()
    return path


def with_new_head(source: keras.Model, name: str, input_size: int, *, seed: int = 0,
                  bn_momentum: float | None = None) -> keras.Model:
    """In-domain transfer: ``name`` at ``input_size`` with ``source``'s trunk weights (frozen) and a
    fresh head. Convolution weights do not depend on the input size, so a trunk trained on PCam's
    96 px patches runs on IDC's 50 px ones. Layers are matched by position (same architecture)."""
    target = build(name, input_size, seed=seed, freeze_trunk=True, bn_momentum=bn_momentum)
    src, dst = trunk_layers(source), trunk_layers(target)
    if [type(a).__name__ for a in src] != [type(b).__name__ for b in dst]:
        raise ValueError(f"with_new_head: source model {source.name!r} is not a {name} trunk")
    for a, b in zip(src, dst):
        b.set_weights(a.get_weights())
    return target


# ---------------------------------------------------------------------------------------------
# Architecture facts: depth, parameters, GFLOPs
# ---------------------------------------------------------------------------------------------

def imagenet_top_params(name: str, trunk_channels: int) -> int:
    """Parameters of the ImageNet classifier top that the paper's Table 1 counts and our head replaces:
    VGG19's flatten -> 4096 -> 4096 -> 1000 dense layers, else one 1000-way layer on pooled features."""
    if model_info(name).key == "vgg19":
        return (7 * 7 * 512 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000
    return (trunk_channels + 1) * 1000


def describe(model: keras.Model) -> dict:
    """Depth, parameters and cost of a built model.

    ``layers``: ``len(model.layers)`` (the input layer not counted), the measure the paper prints for
    B2/B6/VGG19/EfficientNetV2; ``weight_layers``: layers holding weights (conv, BN, dense), the
    'depth' of the keras.applications table that it prints for IV3/RN50/MN/DenseNet.
    """
    name = model.name
    counts = flops.keras_param_counts(model)
    out = {
        "layers": sum(not isinstance(layer, keras.layers.InputLayer) for layer in model.layers),
        "weight_layers": sum(bool(layer.weights) for layer in model.layers),
        "params": counts["total"],
        "params_trainable": counts["trainable"],
        "gflops": flops.keras_flop_count(model) / 1e9,
        "input_size": int(model.inputs[0].shape[1]),
    }
    if name in MODELS and MODELS[name].application:
        channels = int(trunk(model).output.shape[-1])
        head = sum(int(np.prod(w.shape)) for layer in model.layers if layer.name.startswith(HEAD_PREFIX)
                   for w in layer.weights)
        out["params_imagenet_classifier"] = counts["total"] - head + imagenet_top_params(name, channels)
    return out


# ---------------------------------------------------------------------------------------------
# Training protocol
# ---------------------------------------------------------------------------------------------

def to_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 in [0, 1], as the paper's loader (no ImageNet normalisation)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"keras_zoo: expected images of shape (N, H, W, 3), got {images.shape}")
    return images.astype(np.float32) / 255.0


def recalibrate_batchnorm(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> int:
    """Set every trainable batch normalisation's moving statistics to those of ``images`` under the
    current weights ("precise BN"); returns the number of layers reset.

    Early in training the weights move faster than the moving averages follow, so evaluation-mode
    outputs can collapse to one value while training-mode outputs still separate the classes (seen
    here with MobileNet after 32 steps). One training-mode pass with momentum 0 fixes that; frozen
    layers (transfer learning) keep their statistics.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        pick = np.random.default_rng(0).permutation(len(images))[:batch_size]  # both classes, not a sorted head
        model(to_inputs(np.asarray(images)[np.sort(pick)]), training=True)
    finally:
        for layer, m in zip(layers, momenta):
            layer.momentum = m
    return len(layers)


class _RecalibrateBeforeValidation(keras.callbacks.Callback):
    def __init__(self, images):
        super().__init__()
        self.images = images

    def on_test_begin(self, logs=None):
        recalibrate_batchnorm(self.model, self.images)


class _BestEpoch(keras.callbacks.Callback):
    """Validates after every epoch and keeps the weights of the epoch with the best validation accuracy
    (the paper's ModelCheckpoint, in memory); times every epoch's training and validation."""

    def __init__(self, valid, calibration=None, batch_size: int = 64):
        super().__init__()
        self.valid, self.calibration, self.batch_size = valid, calibration, batch_size
        self.best, self.best_epoch, self.best_weights = -np.inf, -1, None
        self.train_s: list[float] = []
        self.epoch_s: list[float] = []
        self.history: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.train_s.append(time.perf_counter() - self._t0)
        if self.calibration is not None:
            recalibrate_batchnorm(self.model, self.calibration)
        images, labels = self.valid
        val = metrics.classification_metrics(labels, predict(self.model, images, self.batch_size))
        self.epoch_s.append(time.perf_counter() - self._t0)
        self.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                             "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_auc": val["auc"]})
        if val["accuracy"] > self.best:  # ties keep the earlier epoch
            self.best, self.best_epoch, self.best_weights = val["accuracy"], epoch + 1, self.model.get_weights()


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.asarray(model.predict(to_inputs(images), batch_size=batch_size, verbose=0)).ravel()


def fit_and_test(model: keras.Model, train_set, valid_set, test_set, *, epochs: int, batch_size: int = 32,
                 lr: float = 1e-3, seed: int = 0, recalibrate_bn: bool = False) -> dict:
    """The paper's protocol: Adam, binary cross-entropy, ``epochs`` epochs, validation after each, the
    best epoch (validation accuracy) evaluated on test. Sets are ``(images uint8, labels)`` pairs.
    ``recalibrate_bn``: :func:`recalibrate_batchnorm` on (up to 256) training patches before each
    validation (short runs; the paper's 15 full epochs do not need it).

    Returns test ``metrics`` (loss, accuracy, auc, n), ``best_epoch``, per-epoch ``history``,
    ``train_s_per_epoch`` (training only), ``epoch_s`` (with validation), ``train_patches_per_s``.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"fit_and_test: epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = train_set, valid_set, test_set
    keras.utils.set_random_seed(int(seed))
    # jit_compile=False: XLA on a 2-core CPU made steps slower here and tracing no faster
    model.compile(optimizer=keras.optimizers.Adam(float(lr)), loss="binary_crossentropy", metrics=["accuracy"],
                  jit_compile=False)
    best = _BestEpoch((x_va, y_va), calibration=x_tr if recalibrate_bn else None)
    t0 = time.perf_counter()
    model.fit(to_inputs(x_tr), np.asarray(y_tr, dtype=np.float32), batch_size=int(batch_size), epochs=int(epochs),
              shuffle=True, verbose=0, callbacks=[best])
    fit_s = time.perf_counter() - t0
    if best.best_weights is not None:
        model.set_weights(best.best_weights)
    prob = predict(model, x_te)
    test = metrics.classification_metrics(y_te, prob)
    # the first epoch also traces the graph: the last epoch is the steady-state time per epoch
    steady = best.train_s[-1]
    return {"metrics": {"loss": test["loss"], "accuracy": test["accuracy"], "auc": test["auc"], "n_test": test["n"]},
            "best_epoch": best.best_epoch, "history": best.history, "train_s_per_epoch": best.train_s,
            "epoch_s": best.epoch_s, "time_per_epoch_s": steady, "train_patches_per_s": len(y_tr) / steady,
            "fit_s": fit_s}


def cached_run(directory, settings: dict, run):
    """Run ``run() -> (result dict, model)`` once per ``settings``; keep the result and the best weights
    in ``directory``; return ``(result, weights_path, reused)``.

    A re-run with the same settings (compared as JSON) reuses the stored result instead of training;
    different settings retrain. The weights are written before the result, both atomically, so a
    result on disk always has its weights and a killed run leaves nothing half-written.
    """
    directory = Path(directory)
    result_path, weights_path = directory / "result.json", directory / "best.weights.h5"
    wanted = json.loads(json.dumps(settings, sort_keys=True, default=str))
    if result_path.is_file() and weights_path.is_file():
        try:
            stored = json.loads(result_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            stored = {}
        if stored.get("settings") == wanted:
            return stored["result"], weights_path, True
    result, model = run()
    save_weights(model, weights_path)
    atomic.write_text(result_path, json.dumps({"settings": wanted, "result": result}, sort_keys=True, default=float))
    return result, weights_path, False


# ---------------------------------------------------------------------------------------------
# Hyperparameter tuning (KerasTuner Hyperband, as the paper)
# ---------------------------------------------------------------------------------------------

def tune(name: str, train_set, valid_set, *, directory, max_epochs: int = 2, factor: int = 3,
         hyperband_iterations: int = 1, lr_range: tuple[float, float] = (1e-5, 1e-2),
         batch_sizes=(32, 64, 128, 256), seed: int = 0, bn_momentum: float | None = None,
         recalibrate_bn: bool = False) -> dict:
    """Hyperband over the Adam learning rate (log-uniform in ``lr_range``) and the batch size, on two
    PatchSets (objective: validation accuracy, as the paper's tuner).

    The tuner's state lives in ``directory/<model>-<hash of settings and data>``: a re-run with the
    same settings continues it (finished trials are not repeated); other settings start a new one.
    Returns the best ``learning_rate`` and ``batch_size``, the trial count and the search time.
    """
    import hashlib

    import keras_tuner as kt

    input_size = int(train_set.images.shape[1])
    key = model_info(name).key
    check_input_size(key, input_size)
    batch_sizes = [int(b) for b in batch_sizes]
    if not batch_sizes or min(batch_sizes) < 1 or not 0 < lr_range[0] < lr_range[1]:
        raise ValueError(f"tune: batch_sizes must be positive integers and lr_range (low, high) with 0 < low < high; "
                         f"got {batch_sizes}, {lr_range}")
    settings = json.dumps([max_epochs, factor, hyperband_iterations, list(lr_range), batch_sizes, seed, bn_momentum,
                           recalibrate_bn,
                           data_fingerprint(train_set, valid_set)])
    project = f"{key}-{hashlib.sha256(settings.encode()).hexdigest()[:10]}"
    x_tr, y_tr = to_inputs(train_set.images), np.asarray(train_set.labels, dtype=np.float32)
    x_va, y_va = to_inputs(valid_set.images), np.asarray(valid_set.labels, dtype=np.float32)

    class ZooHyperModel(kt.HyperModel):
        def build(self, hp):
            model = build(name, input_size, seed=seed, bn_momentum=bn_momentum)
            lr = hp.Float("learning_rate", lr_range[0], lr_range[1], sampling="log")
            model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy", metrics=["accuracy"],
                          jit_compile=False)
            return model

        def fit(self, hp, model, *args, **kwargs):
            if recalibrate_bn:
                kwargs["callbacks"] = [*kwargs.get("callbacks", []), _RecalibrateBeforeValidation(train_set.images)]
            return model.fit(*args, batch_size=hp.Choice("batch_size", batch_sizes), **kwargs)

    class ZooHyperband(kt.Hyperband):
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            # keras-tuner 1.4 imports tensorboard on every trial under TensorFlow, even without a
            # TensorBoard callback; tensorboard is not a dependency here, and no callback needs it
            if any(type(c).__name__ == "TensorBoard" for c in callbacks):
                super()._configure_tensorboard_dir(callbacks, trial, execution)

    tuner = ZooHyperband(ZooHyperModel(), objective="val_accuracy", max_epochs=int(max_epochs), factor=int(factor),
                         hyperband_iterations=int(hyperband_iterations), seed=int(seed), directory=str(directory),
                         project_name=project, overwrite=False)
    t0 = time.perf_counter()
    tuner.search(x_tr, y_tr, validation_data=(x_va, y_va), verbose=0)
    trials = [t for t in tuner.oracle.get_best_trials(num_trials=10_000) if t.score is not None]
    if not trials:
        raise RuntimeError(f"tune({key}): no Hyperband trial finished (see the trial errors above); the tuner's "
                           f"state is in {Path(directory) / project}")
    best = trials[0].hyperparameters
    return {"learning_rate": float(best.get("learning_rate")), "batch_size": int(best.get("batch_size")),
            "trials": len(trials), "search_s": time.perf_counter() - t0, "project": project,
            "best_val_accuracy": float(trials[0].score)}


# ---------------------------------------------------------------------------------------------
# Comparison of the two training modes (the paper's Fig. 4 statistic)
# ---------------------------------------------------------------------------------------------

def welch_t_test(a, b) -> dict:
    """Welch two-sample t-test (unequal variances) of ``a`` vs ``b``: t, Welch-Satterthwaite df, p."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return {"t": float("nan"), "df": float("nan"), "p": float("nan"), "n_a": len(a), "n_b": len(b)}
    res = stats.ttest_ind(a, b, equal_var=False)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb > 0 else float("nan")
    return {"t": float(res.statistic), "df": float(df), "p": float(res.pvalue), "n_a": len(a), "n_b": len(b)}


# ---------------------------------------------------------------------------------------------
# One trained variant, resumable (what the notebook calls per model)
# ---------------------------------------------------------------------------------------------

def data_fingerprint(*patch_sets) -> str:
    """A short hash of the patches' paths and labels: a cached model is reused only on the same data."""
    import hashlib

    h = hashlib.sha256()
    for s in patch_sets:
        h.update("\n".join(map(str, s.paths)).encode())
        h.update(np.asarray(s.labels, dtype=np.int64).tobytes())
        h.update(str(np.asarray(s.images).shape).encode())
    return h.hexdigest()[:16]


def run_variant(run_dir, name: str, train_set, valid_set, test_set, *, epochs: int, batch_size: int, lr: float,
                seed: int = 0, weights=None, source_weights=None, source_input_size: int | None = None,
                bn_momentum: float | None = None, recalibrate_bn: bool = False) -> dict:
    """Train and test one model variant (resumable through :func:`cached_run`) and describe it.

    ``weights``: as :func:`build` (None: full training; "imagenet" or a path: transfer, head only).
    ``source_weights`` (+ ``source_input_size``): in-domain transfer from a model file trained on
    another dataset (:func:`with_new_head`). Sets are PatchSets. Returns the result dict plus
    ``reused`` (True when an earlier run's result was taken) and ``weights_file``.
    Raises :class:`InputTooSmall`, :class:`WeightsUnavailable`, :class:`WeightsError` before training.
    """
    input_size = int(train_set.images.shape[1])
    check_input_size(name, input_size)
    if weights is not None:
        resolve_weights(name, weights)  # fail (or skip) before any training
    settings = {"model": model_info(name).key, "input_size": input_size, "epochs": int(epochs),
                "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed), "bn_momentum": bn_momentum,
                "recalibrate_bn": bool(recalibrate_bn),
                "weights": None if weights is None else str(weights),
                "source_weights": None if source_weights is None else str(source_weights),
                "data": data_fingerprint(train_set, valid_set, test_set)}
    if source_weights is not None:  # a retrained source must invalidate the transfer
        settings["source_mtime"] = Path(source_weights).stat().st_mtime_ns

    def run():
        if source_weights is not None:
            source = build(name, int(source_input_size or input_size), seed=seed)
            load_weights(source, source_weights)
            model = with_new_head(source, name, input_size, seed=seed, bn_momentum=bn_momentum)
        else:
            model = build(name, input_size, weights=weights, seed=seed, bn_momentum=bn_momentum)
        result = fit_and_test(model, (train_set.images, train_set.labels), (valid_set.images, valid_set.labels),
                              (test_set.images, test_set.labels), epochs=epochs, batch_size=batch_size, lr=lr,
                              seed=seed, recalibrate_bn=recalibrate_bn)
        result["architecture"] = describe(model)
        return result, model

    result, weights_file, reused = cached_run(run_dir, settings, run)
    return {**result, "reused": reused, "weights_file": str(weights_file)}
