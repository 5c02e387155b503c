"""The Keras models of the PCam/IDC 12-CNN comparison (Bonnet 2024): building, weights, trunk and head.

* :func:`build` makes one of the 12 models (the names of ``histolean.core.arch.MODELS`` with a keras
  builder): B2 and B6 as in the paper's code (Sequential, two / six convolutions, one sigmoid output), or
  a ``keras.applications`` trunk with the paper's new head (global average pooling, dense 256 + ReLU,
  dense 1 + sigmoid). ``weights`` is ``None`` (full training), ``"imagenet"`` (transfer learning: only
  the head trains; the file must be in the local Keras cache, else :class:`WeightsUnavailable`) or the
  path of a weights file.
* :func:`with_new_head`: in-domain transfer (a trunk trained on one dataset, a new head on another).
* :func:`describe`: depth, parameters and GFLOPs of a built model, beside the paper's Table 1.

The minimum input, the paper's name and :class:`~histolean.core.arch.InputTooSmall` come from the one model
registry, ``histolean.core.arch``; this module keeps only what is Keras's own (the applications' constructor
and ImageNet weights file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histolean.core import arch, flops
from histolean.experiments.pcam_idc_zoo.backend import keras
from histolean.util import atomic

HEAD_PREFIX = "head_"   # layers after the trunk; in-domain transfer replaces exactly these
HEAD_UNITS = 256        # the paper's dense layer (nb_dense_layers in its code)
OWN_MODELS = ("b2", "b6")   # the paper's own small CNNs, built here layer by layer


@dataclass(frozen=True)
class KerasApplication:
    constructor: str      # keras.applications constructor
    imagenet_file: str    # the no-top ImageNet weights file name in the Keras cache


# keyed by the registry's names (histolean.core.arch.MODELS)
APPLICATIONS: dict[str, KerasApplication] = {
    "inception_v3": KerasApplication("InceptionV3", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "vgg19": KerasApplication("VGG19", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50": KerasApplication("ResNet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "mobilenet": KerasApplication("MobileNet", "mobilenet_1_0_224_tf_no_top.h5"),
    "densenet121": KerasApplication("DenseNet121", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "densenet169": KerasApplication("DenseNet169", "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "densenet201": KerasApplication("DenseNet201", "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "efficientnetv2_b0": KerasApplication("EfficientNetV2B0", "efficientnetv2-b0_notop.h5"),
    "efficientnetv2_b1": KerasApplication("EfficientNetV2B1", "efficientnetv2-b1_notop.h5"),
    "efficientnetv2_b2": KerasApplication("EfficientNetV2B2", "efficientnetv2-b2_notop.h5"),
}
InputTooSmall = arch.InputTooSmall   # the registry's, so that one except clause catches both frameworks'


class WeightsUnavailable(RuntimeError):
    """Pre-trained weights that cannot be had here (ImageNet file not in the Keras cache, offline)."""


class WeightsError(ValueError):
    """A weights file that is missing, unreadable or does not fit the model."""


def model_entry(name: str) -> arch.ModelEntry:
    """The registry entry of a zoo model (``.name``, ``.paper_name``, ``.min_input``); a clear error for a
    name without a Keras builder."""
    entry = arch.model_entry(name, "keras")
    if entry.name not in OWN_MODELS and entry.name not in APPLICATIONS:  # registry and zoo out of step: a bug
        raise LookupError(f"{entry.name} has a keras builder in histolean.core.arch but no zoo definition here")
    return entry


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
    key = model_entry(name).name
    if key not in APPLICATIONS:
        raise WeightsUnavailable(f"{name}: no ImageNet weights exist for the paper's own small CNN")
    path = keras_cache_dir() / APPLICATIONS[key].imagenet_file
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


def _application(key: str, input_size: int, weights: Path | None, freeze_trunk: bool) -> keras.Model:
    constructor = getattr(keras.applications, APPLICATIONS[key].constructor)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    kwargs = {"include_preprocessing": False} if key.startswith("efficientnet") else {}
    try:
        trunk = constructor(include_top=False, weights=None if weights is None else str(weights),
                            input_tensor=inputs, **kwargs)
    except Exception as err:  # keras raises many kinds for a bad file (OSError, ValueError, KeyError...)
        if weights is None:
            raise
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        raise WeightsError(f"{key}: cannot load weights file {weights} ({type(err).__name__}: {first_line}); "
                           "it is damaged or holds another model's weights") from None
    if freeze_trunk:
        for layer in trunk.layers:
            layer.trainable = False
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(trunk.output)
    x = keras.layers.Dense(HEAD_UNITS, activation="relu", name="head_dense")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="head_out")(x)
    return keras.Model(inputs, out, name=key)


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
    key = model_entry(name).name
    arch.check_input_size(key, input_size)
    path = resolve_weights(key, weights)
    freeze = path is not None if freeze_trunk is None else bool(freeze_trunk)
    keras.utils.set_random_seed(int(seed))
    if key in APPLICATIONS:
        model = _application(key, int(input_size), path, freeze)
    else:
        model = _b2(int(input_size)) if key == "b2" else _b6(int(input_size))
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
    if model_entry(name).name == "vgg19":
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
    if name in APPLICATIONS:
        channels = int(trunk(model).output.shape[-1])
        head = sum(int(np.prod(w.shape)) for layer in model.layers if layer.name.startswith(HEAD_PREFIX)
                   for w in layer.weights)
        out["params_imagenet_classifier"] = counts["total"] - head + imagenet_top_params(name, channels)
    return out


