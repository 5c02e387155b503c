"""Where things are: the project checkout (``params/``, ``notebooks/``) and the data root."""

from __future__ import annotations

import os
from pathlib import Path


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding ``params/`` and ``notebooks/``: $HISTOLEAN_ROOT, else the
    nearest parent of ``start`` (default: cwd) that has both, else the source checkout."""
    if os.environ.get("HISTOLEAN_ROOT"):
        return Path(os.environ["HISTOLEAN_ROOT"]).resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params").is_dir() and (folder / "notebooks").is_dir():
            return folder
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "params").is_dir():
        return checkout
    raise FileNotFoundError(f"no params/ and notebooks/ folders in {here} or its parents; "
                            f"run from the histolean checkout or set HISTOLEAN_ROOT")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data directory: ``root`` if given, else ``$HISTOLEAN_DATA``, else the project's ``data/``
    (found from the working directory upwards, so notebooks running in ``notebooks/`` see it too),
    else ``./data``."""
    if root not in (None, ""):
        return Path(root).expanduser()
    env = os.environ.get("HISTOLEAN_DATA")
    if env:
        return Path(env).expanduser()
    try:
        return project_root() / "data"
    except FileNotFoundError:
        return Path("data")
