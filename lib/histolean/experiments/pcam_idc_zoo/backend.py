"""The one place the zoo imports Keras: on the TensorFlow backend, as the paper, with its start-up chatter off.

Every zoo module that needs Keras takes it from here (``from ...pcam_idc_zoo.backend import keras``), so the
backend is chosen before Keras is first imported, whichever module comes first.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")  # retracing warnings for every new model: expected here, not actionable

if keras.backend.backend() != "tensorflow":
    raise ImportError(f"histolean.experiments.pcam_idc_zoo needs the TensorFlow backend of Keras (the paper's), but "
                      f"KERAS_BACKEND is {keras.backend.backend()!r}; unset KERAS_BACKEND or set it to 'tensorflow'")

__all__ = ["keras", "tf"]
