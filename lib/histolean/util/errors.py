"""The library's own exception types (a leaf: ``data`` and ``wsi`` both raise them)."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad or missing input data; the message names the file and what to do."""


def data_error(path: str | os.PathLike, problem: str, fix: str) -> DataError:
    """``<path>: <problem>. <fix>``: the file first, so the user sees at once which one is wrong."""
    return DataError(f"{path}: {problem}. {fix}")
