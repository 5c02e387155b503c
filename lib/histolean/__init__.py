"""histolean: cheaper CNNs for histopathology, a reproducible study and a small library.

The library is grouped by role (``core``, ``methods``, ``data``, ``experiments``, ``study``,
``util``). The public modules the README teaches are named here too, imported on demand
(``from histolean import arch, nar``), so that ``import histolean`` stays fast and never
pulls in TensorFlow.
"""

import importlib

__version__ = "0.1.0"

PUBLIC_MODULES = {
    "arch": "histolean.core.arch",
    "models": "histolean.core.models",
    "flops": "histolean.core.flops",
    "train": "histolean.core.train",
    "metrics": "histolean.core.metrics",
    "nar": "histolean.methods.nar",
    "resrep": "histolean.methods.resrep",
    "pruning": "histolean.methods.pruning",
    "streaming": "histolean.methods.streaming",
    "wsi": "histolean.data.wsi",
    "data": "histolean.data",
}
__all__ = sorted(PUBLIC_MODULES)  # noqa: PLE0605  (a list of the names above, built at import)


def __getattr__(name: str):
    if name in PUBLIC_MODULES:
        module = importlib.import_module(PUBLIC_MODULES[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'histolean' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *PUBLIC_MODULES])
