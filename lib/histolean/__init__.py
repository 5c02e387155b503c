"""histolean: cheaper CNNs for histopathology, a reproducible study and a small library.

Submodules are imported on demand (``from histolean import arch, nar``) so that
``import histolean`` stays fast and never pulls in TensorFlow.
"""

__version__ = "0.1.0"
